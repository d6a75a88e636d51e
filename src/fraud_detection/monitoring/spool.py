"""A local, append-only, size-capped spool of records: what the payload log keeps on disk until the store has it.

A spool is a directory of segment files ``<time_ns>-<uuid>.seg``. The writer appends records to one open segment
and syncs it (``fsync``); :meth:`Spool.rotate` closes it, and closed segments are read back whole, uploaded, then
removed. Every segment found when a spool is opened belongs to an earlier process and counts as closed.

Record format (little endian)::

    magic  b"FDS1"   4 bytes
    rows   uint32    rows in the payload (what a torn record counts as dropped)
    length uint32    payload bytes
    crc32  uint32    zlib.crc32 of the payload
    payload          ``length`` bytes (the payload log writes an Arrow IPC stream)

A segment is read up to its first incomplete or damaged record (a process killed mid-write leaves a torn tail);
that tail is dropped and reported (:class:`SegmentRead`). The spool's total size is capped: an append that would
exceed ``max_bytes`` is refused and the caller drops (and counts) its rows. One process owns a spool directory at a
time (an exclusive ``flock`` on ``.lock``, released by the kernel even on SIGKILL).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa

LOG = logging.getLogger(__name__)

MAGIC = b"FDS1"
HEADER = struct.Struct("<4sIII")
SEGMENT_SUFFIX = ".seg"
LOCK_FILE = ".lock"


class SpoolBusyError(RuntimeError):
    """Another process holds the spool directory."""


def encode_record(payload: bytes, rows: int) -> bytes:
    """One record: header plus payload.

    Args:
        payload: The bytes to keep.
        rows: Rows the payload holds.

    Returns:
        The record's bytes.
    """
    return HEADER.pack(MAGIC, rows, len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True)
class Record:
    """One record read back.

    Attributes:
        rows: Rows of the payload.
        payload: Its bytes.
    """

    rows: int
    payload: bytes


@dataclass(frozen=True)
class SegmentRead:
    """The records of a segment, and what its torn tail held.

    Attributes:
        records: Complete, checksummed records in order.
        torn_bytes: Bytes after the last good record (0 when the segment ends cleanly).
        torn_rows: Rows of the first damaged record when its header is readable (0 otherwise).
    """

    records: list[Record]
    torn_bytes: int = 0
    torn_rows: int = 0

    @property
    def torn(self) -> bool:
        """Whether the segment has a torn (dropped) tail."""
        return self.torn_bytes > 0


def decode_records(data: bytes) -> SegmentRead:
    """Parse a segment's bytes up to the first incomplete or damaged record.

    Args:
        data: The segment's content.

    Returns:
        The records and the torn tail.
    """
    records: list[Record] = []
    offset = 0
    size = len(data)
    while offset < size:
        if size - offset < HEADER.size:
            return SegmentRead(records, size - offset, 0)
        magic, rows, length, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        if magic != MAGIC:
            return SegmentRead(records, size - offset, 0)
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            return SegmentRead(records, size - offset, rows)
        records.append(Record(rows, payload))
        offset = start + length
    return SegmentRead(records)


def read_segment(path: Path) -> SegmentRead:
    """Read a segment file (see :func:`decode_records`).

    Args:
        path: The segment.

    Returns:
        Its records and torn tail.
    """
    return decode_records(path.read_bytes())


def segment_id(path: Path) -> str:
    """The uuid part of a segment's name (unique per segment; the payload log names its objects after it).

    Args:
        path: A segment path.

    Returns:
        The 32-hex-digit id.
    """
    return path.stem.rsplit("-", 1)[-1]


class Spool:
    """An append-only spool directory, thread-safe, with a size cap.

    Args:
        directory: The spool directory (created).
        max_bytes: Cap of the sum of all segment sizes.

    Raises:
        SpoolBusyError: Another live process holds the directory.
        OSError: The directory cannot be created or locked.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            raise SpoolBusyError(f"spool {self.directory} is held by another process") from exc
        self._mutex = threading.Lock()
        for stale in self.directory.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        self._size = sum(p.stat().st_size for p in self._segments())
        self._open: BinaryIO | None = None
        self._open_path: Path | None = None
        self._open_size = 0
        self._dirty = False
        self._closed = False

    # -- writer side ----------------------------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        """Bytes held by all segments (open and closed)."""
        with self._mutex:
            return self._size

    @property
    def open_bytes(self) -> int:
        """Bytes of the open segment."""
        with self._mutex:
            return self._open_size

    def append(self, payload: bytes, rows: int) -> bool:
        """Append one record to the open segment (not yet synced: call :meth:`sync`).

        Args:
            payload: The record's payload.
            rows: Rows it holds.

        Returns:
            False when the record would exceed the cap or cannot be written (nothing is kept then).
        """
        record = encode_record(payload, rows)
        with self._mutex:
            if self._closed or self._size + len(record) > self.max_bytes:
                return False
            if self._open is None:
                name = f"{time.time_ns():020d}-{uuid.uuid4().hex}{SEGMENT_SUFFIX}"
                self._open_path = self.directory / name
                self._open = open(self._open_path, "ab")  # noqa: SIM115 - closed by rotate/close
                self._open_size = 0
                _sync_dir(self.directory)
            try:
                self._open.write(record)
            except OSError:
                LOG.exception("spool: cannot append to %s", self._open_path)
                self._truncate_open()
                return False
            self._open_size += len(record)
            self._size += len(record)
            self._dirty = True
            return True

    def sync(self) -> None:
        """Write the open segment through to disk (``flush`` plus ``fsync``)."""
        with self._mutex:
            if self._open is None or not self._dirty:
                return
            try:
                self._open.flush()
                os.fsync(self._open.fileno())
            except OSError:
                LOG.exception("spool: cannot sync %s", self._open_path)
                self._truncate_open()
            self._dirty = False

    def rotate(self) -> Path | None:
        """Sync and close the open segment: it becomes a closed segment.

        Returns:
            The closed segment, or None when no segment was open.
        """
        self.sync()
        with self._mutex:
            if self._open is None:
                return None
            self._open.close()
            path, self._open, self._open_path, self._open_size = self._open_path, None, None, 0
            return path

    def _truncate_open(self) -> None:
        """After a failed write: cut the open segment back to its last whole record (caller holds the mutex)."""
        if self._open is None:
            return
        with contextlib.suppress(OSError):
            self._open.flush()
        try:
            os.truncate(self._open.fileno(), self._open_size)
            self._open.seek(self._open_size)
        except OSError:
            LOG.exception("spool: cannot truncate %s; closing it", self._open_path)
            with contextlib.suppress(OSError):
                self._open.close()
            self._open, self._open_path, self._open_size = None, None, 0

    # -- reader side ----------------------------------------------------------------------------------------
    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}"))

    def closed_segments(self) -> list[Path]:
        """Closed segments, oldest first.

        Returns:
            Their paths.
        """
        with self._mutex:
            current = self._open_path
            return [p for p in self._segments() if p != current]

    def remove(self, path: Path) -> None:
        """Delete a closed segment (its records are safe elsewhere).

        Args:
            path: The segment.
        """
        with self._mutex:
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                return
            self._size = max(0, self._size - size)
        _sync_dir(self.directory)

    def replace(self, path: Path, records: Iterable[Record]) -> Path | None:
        """Replace a closed segment by one holding only ``records`` (what is still to upload), atomically.

        Args:
            path: The segment.
            records: Its records to keep.

        Returns:
            The new segment, or None when nothing is kept.
        """
        data = b"".join(encode_record(r.payload, r.rows) for r in records)
        if not data:
            self.remove(path)
            return None
        new = path.with_name(f"{path.stem.rsplit('-', 1)[0]}-{uuid.uuid4().hex}{SEGMENT_SUFFIX}")
        tmp = new.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with self._mutex:
            os.replace(tmp, new)
            self._size += len(data)
        _sync_dir(self.directory)
        self.remove(path)
        return new

    def close(self) -> None:
        """Sync and close the open segment and release the directory."""
        self.rotate()
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            os.close(self._lock_fd)


def _sync_dir(directory: Path) -> None:
    """Sync (``fsync``) a directory so a created, renamed or removed entry survives a crash."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def spool_dir_for(value: str | None, model_name: str, store_uri: str, root: str = ".fraud/spool") -> Path | None:
    """The spool directory of a server: the configured one, none, or the local default.

    The default, ``<root>/<model>/<12 hex digits of the store URI's sha256>``, keeps the spools of different stores
    apart, so rows are only ever uploaded to the store they were logged for.

    Args:
        value: ``--payload_log_spool_dir``: a directory, ``off``/``none`` (no spool), or None/empty (the default).
        model_name: Served model name.
        store_uri: The payload log's store.
        root: Parent of default spools.

    Returns:
        The directory, or None for no spool.
    """
    if value and value.strip().lower() in ("off", "none", "false", "0"):
        return None
    if value:
        return Path(value)
    if "://" not in store_uri:
        store_uri = str(Path(store_uri).resolve())
    return Path(root) / model_name / hashlib.sha256(store_uri.encode()).hexdigest()[:12]


def encode_frame(frame: pd.DataFrame) -> bytes:
    """A frame as an Arrow IPC stream (a spool record's payload)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_frame(payload: bytes) -> pd.DataFrame:
    """The frame of a spool record."""
    with pa.ipc.open_stream(payload) as reader:
        return reader.read_all().to_pandas()
