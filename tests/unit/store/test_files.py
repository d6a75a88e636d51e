"""Atomic local writes: a temporary file beside the destination, renamed onto it only when the block succeeds."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fraud_detection.store.files import atomic_file, write_json


def test_destination_keeps_old_content_until_the_block_succeeds(tmp_path: Path):
    path = tmp_path / "state.json"
    path.write_text("old")
    with atomic_file(path) as tmp:
        tmp.write_text("new, half written")
        assert path.read_text() == "old"
    assert path.read_text() == "new, half written"


def test_failure_keeps_old_content_and_removes_the_temporary_file(tmp_path: Path):
    path = tmp_path / "state.json"
    path.write_text("old")
    seen: list[Path] = []

    def write_then_fail() -> None:
        with atomic_file(path) as tmp:
            tmp.write_text("partial")
            seen.append(tmp)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert path.read_text() == "old"
    assert not seen[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_failure_before_anything_is_written_creates_no_destination(tmp_path: Path):
    path = tmp_path / "never.txt"

    def fail() -> None:
        with atomic_file(path):
            raise ValueError("nothing written")

    with pytest.raises(ValueError, match="nothing written"):
        fail()
    assert list(tmp_path.iterdir()) == []


def test_temporary_file_keeps_the_suffix_sits_beside_the_destination_and_is_hidden(tmp_path: Path):
    path = tmp_path / "part.parquet"
    with atomic_file(path) as tmp:
        assert tmp.suffix == ".parquet"
        assert tmp.parent == path.parent  # same directory: the rename is atomic
        assert tmp.name.startswith(".")  # hidden: LocalStore.list() does not show it
        assert tmp != path
        tmp.write_bytes(b"x")
    assert path.read_bytes() == b"x"


def test_concurrent_writers_use_distinct_temporary_files(tmp_path: Path):
    path = tmp_path / "a.txt"
    with atomic_file(path) as first, atomic_file(path) as second:
        assert first != second
        first.write_text("first")
        second.write_text("second")
    assert path.read_text() == "first"  # the outer block finishes last


def test_missing_parent_directories_are_created(tmp_path: Path):
    path = tmp_path / "a" / "b" / "c.txt"
    with atomic_file(str(path)) as tmp:
        tmp.write_text("deep")
    assert path.read_text() == "deep"


def test_a_reader_sees_either_the_old_or_the_complete_new_content(tmp_path: Path):
    path = tmp_path / "blob.bin"
    size = 256 * 1024
    path.write_bytes(b"a" * size)
    stop = threading.Event()
    torn: list[bytes] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            data = path.read_bytes()
            reads += 1
            if len(data) != size or len(set(data)) != 1:
                torn.append(data[:16])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            with atomic_file(path) as tmp, open(tmp, "wb") as fh:
                fill = b"b" if i % 2 else b"c"
                for _ in range(4):  # several writes: a non-atomic writer would expose a prefix
                    fh.write(fill * (size // 4))
    finally:
        stop.set()
        thread.join()
    assert reads > 0
    assert torn == []


def test_write_json_round_trips_and_returns_the_path(tmp_path: Path):
    path = tmp_path / "sub" / "doc.json"
    payload = {"version": "v1", "n": 3, "nested": {"ok": True}, "items": [1, 2]}
    assert write_json(path, payload) == path
    assert json.loads(path.read_text()) == payload
    assert path.read_text().startswith('{\n  "version"')  # indented for people reading the store


def test_write_json_stores_non_json_values_as_strings(tmp_path: Path):
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    path = write_json(tmp_path / "doc.json", {"at": when, "where": Path("/x/y")})
    assert json.loads(path.read_text()) == {"at": str(when), "where": "/x/y"}


def test_write_json_that_fails_to_serialise_keeps_the_old_file(tmp_path: Path):
    path = tmp_path / "doc.json"
    write_json(path, {"v": 1})
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match=r"[Cc]ircular"):
        write_json(path, circular)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_a_failed_write_names_the_destination_not_the_temporary_file(tmp_path: Path):
    path = tmp_path / "out.bin"
    (path / "occupied").mkdir(parents=True)  # the rename onto it fails
    with pytest.raises(IsADirectoryError) as failure, atomic_file(path) as tmp:
        tmp.write_bytes(b"x")
    assert failure.value.__cause__.filename == str(tmp)  # type: ignore[union-attr]
    assert failure.value.filename == str(path) and str(tmp) not in str(failure.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"] and (path / "occupied").is_dir()


def test_an_error_not_about_the_file_is_raised_as_it_is(tmp_path: Path):
    with pytest.raises(ConnectionResetError, match="source went away") as failure, atomic_file(tmp_path / "o.bin"):
        raise ConnectionResetError(104, "source went away")
    assert failure.value.filename is None
