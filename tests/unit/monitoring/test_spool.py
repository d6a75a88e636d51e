"""The payload log's local spool: record format round trip, torn tails, the size cap, segments and the lock."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from fraud_detection.monitoring.spool import (
    HEADER,
    MAGIC,
    Record,
    Spool,
    SpoolBusyError,
    decode_records,
    encode_record,
    read_segment,
    segment_id,
)


def test_records_round_trip_through_a_segment(tmp_path: Path):
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    payloads = [b"", b"a", bytes(range(256)) * 40]
    for i, payload in enumerate(payloads):
        assert spool.append(payload, rows=i + 1)
    spool.sync()
    assert spool.closed_segments() == []  # the open segment is not closed
    path = spool.rotate()
    assert path is not None and spool.closed_segments() == [path]
    read = read_segment(path)
    assert not read.torn
    assert read.records == [Record(i + 1, p) for i, p in enumerate(payloads)]
    assert spool.size_bytes == path.stat().st_size == sum(HEADER.size + len(p) for p in payloads)
    assert len(segment_id(path)) == 32
    spool.remove(path)
    assert spool.closed_segments() == [] and spool.size_bytes == 0
    spool.close()


def test_the_record_header_is_magic_rows_length_and_crc32():
    record = encode_record(b"payload", rows=7)
    assert HEADER.unpack_from(record) == (MAGIC, 7, 7, zlib.crc32(b"payload"))
    assert record[HEADER.size :] == b"payload"


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size, HEADER.size + 3])
def test_a_torn_last_record_is_dropped_and_reported(cut: int):
    good = encode_record(b"first", rows=2)
    torn = encode_record(b"second-record", rows=5)[:cut]
    read = decode_records(good + torn)
    assert read.records == [Record(2, b"first")]
    assert read.torn and read.torn_bytes == cut
    assert read.torn_rows == (5 if cut >= HEADER.size else 0)  # rows are known once the header is whole


def test_a_corrupt_record_ends_the_segment_there():
    second = bytearray(encode_record(b"second", rows=3))
    second[-1] ^= 0xFF  # checksum mismatch
    data = encode_record(b"first", rows=1) + bytes(second) + encode_record(b"third", rows=1)
    read = decode_records(data)
    assert [r.payload for r in read.records] == [b"first"]
    assert read.torn_rows == 3 and read.torn_bytes == len(data) - len(encode_record(b"first", rows=1))
    assert decode_records(b"garbage" * 5).records == []
    assert decode_records(b"").records == [] and not decode_records(b"").torn


def test_appends_beyond_the_cap_are_refused(tmp_path: Path):
    record = len(encode_record(b"x" * 100, rows=1))
    spool = Spool(tmp_path, max_bytes=2 * record + 10)
    assert spool.append(b"x" * 100, 1)
    assert spool.append(b"x" * 100, 1)
    assert not spool.append(b"x" * 100, 1)  # over the cap: nothing written
    spool.rotate()
    assert spool.size_bytes == 2 * record
    (segment,) = spool.closed_segments()
    assert len(read_segment(segment).records) == 2
    spool.remove(segment)
    assert spool.append(b"x" * 100, 1)  # room again once a segment is uploaded and removed
    spool.close()


def test_reopening_finds_earlier_segments_closed_and_counts_their_size(tmp_path: Path):
    first = Spool(tmp_path, max_bytes=1 << 20)
    first.append(b"kept", 1)
    first.sync()
    first.close()
    (tmp_path / "leftover.tmp").write_bytes(b"half-written replacement")
    second = Spool(tmp_path, max_bytes=1 << 20)
    (segment,) = second.closed_segments()
    assert read_segment(segment).records == [Record(1, b"kept")]
    assert second.size_bytes == segment.stat().st_size
    assert not (tmp_path / "leftover.tmp").exists()
    second.append(b"new", 1)
    assert second.closed_segments() == [segment]  # the new open segment is not offered for upload
    second.close()


def test_replace_keeps_only_the_given_records_under_a_new_id(tmp_path: Path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    for payload in (b"a", b"b", b"c"):
        spool.append(payload, 1)
    old = spool.rotate()
    assert old is not None
    new = spool.replace(old, [Record(1, b"c")])
    assert new is not None and not old.exists() and segment_id(new) != segment_id(old)
    assert spool.closed_segments() == [new]
    assert read_segment(new).records == [Record(1, b"c")]
    assert spool.size_bytes == new.stat().st_size
    assert spool.replace(new, []) is None and spool.closed_segments() == []
    spool.close()


def test_one_owner_at_a_time(tmp_path: Path):
    owner = Spool(tmp_path, max_bytes=1000)
    with pytest.raises(SpoolBusyError):
        Spool(tmp_path, max_bytes=1000)
    owner.close()
    Spool(tmp_path, max_bytes=1000).close()  # released on close (and by the kernel when a process dies)
