"""Payload log: every scored row, buffered in memory and written as Parquet partitions to the artifact store.

Layout (docs/METRICS.md)::

    payload-logs/<model_name>/date=YYYY-MM-DD/<uuid>.parquet

One row per scored row: ``request_id``, ``row`` (position in the request), ``scored_at`` (UTC), ``model_name``,
``model_version``, every feature, ``fraud_score``, ``decision`` (True = flagged as fraud; not the label, which is
``is_fraud`` in the labels files), ``imputed`` (comma-separated features the server filled in) and
``transaction_key`` (sha256 of the request's ``transaction_id``, to join delayed labels, see
:func:`hash_identifier`). Raw identifiers (``transaction_id``, ``customer_id``, ``terminal_id``) are written only
when ``log_identifiers`` is set.

The logger never blocks or fails a request: :meth:`PayloadLogger.log` appends to a bounded in-memory buffer and
returns at once; a background thread writes a file when ``flush_rows`` rows are buffered or ``flush_seconds`` have
passed. When the buffer is full (the store is slow or down) new rows are dropped and counted; a write that still
fails after its retries drops its rows and counts them too.

With a spool (``PayloadLogConfig.spool_dir``, see :mod:`fraud_detection.monitoring.spool`) nothing waits in memory
for the store: the writer thread appends what :meth:`PayloadLogger.log` buffered to the spool and syncs it every
``spool_sync_seconds`` (0.1 s), so a SIGKILL loses at most that window plus one sync. Every ``flush_rows`` rows or
``flush_seconds`` it closes the spool segment, and an uploader thread writes each closed segment to the store as
``date=<day>/<segment id>.parquet`` (rewriting the same key when retried, so a re-upload after a crash does not
duplicate rows) and only then deletes it. A store that is down keeps segments on disk (retried every
``flush_seconds``) instead of dropping rows; the spool's size cap drops (and counts) rows beyond it. Segments found at
startup (an earlier process was killed) are uploaded first; a torn last record is dropped and counted.

:func:`read_payload_log` skips objects that are empty, not Parquet or lack the payload-log columns, with a warning
naming each; it reports their keys to ``on_skip`` and in the frame's ``attrs["skipped_keys"]``.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fraud_detection.data import schema
from fraud_detection.model.bundle import SCORE_COLUMN
from fraud_detection.monitoring.payload_columns import (
    CUSTOMER_KEY,
    DECISION_COLUMN,
    EVENT_TIME_COLUMN,
    PAYLOAD_PREFIX,
    RAW_IDENTIFIERS,
    TERMINAL_KEY,
    TRANSACTION_KEY,
    hash_identifier,
)
from fraud_detection.monitoring.spool import (
    Record,
    Spool,
    SpoolBusyError,
    decode_frame,
    encode_frame,
    read_segment,
    segment_id,
)
from fraud_detection.store.base import ArtifactStore

LOG = logging.getLogger(__name__)
#: Largest epoch seconds a datetime64[ns] holds with room to spare (year 2262 is its limit).
_MAX_EPOCH_SECONDS = 9.0e9


@dataclass(frozen=True)
class PayloadLogConfig:
    """Buffering and privacy settings.

    Attributes:
        flush_rows: Write a file once this many rows are buffered.
        flush_seconds: Write at least this often when rows are buffered.
        max_buffer_rows: Rows held in memory at most; further rows are dropped (and counted).
        log_identifiers: Also write raw ``transaction_id``, ``customer_id`` and ``terminal_id``.
        identifier_key: HMAC key of the logged identifier hashes (never printed).
        write_retries: Extra attempts of a failed write before its rows are dropped (without a spool) or left in
            the spool for a later attempt.
        retry_backoff_seconds: Wait before the first retry (doubles each time).
        spool_dir: Local spool directory (None: rows wait in memory only, and a SIGKILL loses them).
        spool_max_bytes: Cap of the spool's size; rows beyond it are dropped and counted.
        spool_sync_seconds: How often the writer appends buffered rows to the spool and fsyncs it.
    """

    flush_rows: int = 5_000
    flush_seconds: float = 60.0
    max_buffer_rows: int = 100_000
    log_identifiers: bool = False
    identifier_key: bytes | None = field(default=None, repr=False)
    write_retries: int = 2
    retry_backoff_seconds: float = 0.5
    spool_dir: Path | None = None
    spool_max_bytes: int = 256 * 2**20
    spool_sync_seconds: float = 0.1

    def __post_init__(self) -> None:
        """Reject settings that would never flush or never buffer."""
        if self.flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {self.flush_rows}")
        if self.flush_seconds <= 0:
            raise ValueError(f"flush_seconds must be > 0, got {self.flush_seconds}")
        if self.max_buffer_rows < self.flush_rows:
            raise ValueError(f"max_buffer_rows ({self.max_buffer_rows}) must be >= flush_rows ({self.flush_rows})")
        if self.spool_max_bytes < 1:
            raise ValueError(f"spool_max_bytes must be >= 1, got {self.spool_max_bytes}")
        if self.spool_sync_seconds <= 0:
            raise ValueError(f"spool_sync_seconds must be > 0, got {self.spool_sync_seconds}")


@dataclass(frozen=True)
class _Entry:
    features: np.ndarray
    scores: np.ndarray
    decisions: np.ndarray
    request_id: str
    scored_at: float
    identifiers: Mapping[str, Sequence[str | None]] | None
    imputed: Sequence[Sequence[str]] | None
    event_times: Sequence[int] | None = None


class PayloadLogger:
    """Buffered, non-blocking payload logger writing Parquet to an artifact store.

    Args:
        store: Destination store.
        model_name: Served model name (the partition prefix).
        model_version: Loaded bundle version (a column).
        config: Buffering and privacy settings.
        on_drop: Called with the number of rows dropped (e.g. a Prometheus counter's ``inc``).
        clock: Wall clock in epoch seconds (tests pass a fake).
    """

    def __init__(
        self,
        store: ArtifactStore,
        model_name: str,
        model_version: str,
        config: PayloadLogConfig | None = None,
        *,
        on_drop: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.model_name = model_name
        self.model_version = model_version
        self.config = config or PayloadLogConfig()
        self._on_drop = on_drop
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._entries: list[_Entry] = []
        self._buffered = 0  # rows in _entries plus rows being written
        self._pending = 0  # rows in _entries
        self._last_flush = time.monotonic()
        self._flush_requested = 0
        self._flushed = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self._uploader: threading.Thread | None = None
        self.rows_written = 0
        self.rows_dropped = 0
        self.files_written = 0
        # Spool mode: the writer appends to the spool; the uploader empties it into the store.
        self.rows_spooled = 0
        self.torn_records = 0
        self._open_rows = 0  # rows in the open spool segment
        self._open_since = 0.0
        self._rotations = 0  # segments closed by the writer
        self._rotated_request = 0  # the last flush request the writer has closed a segment for
        self._writer_done = False
        self._spool_full = False
        self.spool: Spool | None = None
        if self.config.spool_dir is not None:
            try:
                self.spool = Spool(Path(self.config.spool_dir), self.config.spool_max_bytes)
            except (SpoolBusyError, OSError) as exc:
                LOG.warning("payload log: no spool (%s): rows wait in memory only and a SIGKILL loses them", exc)
        if not self.config.identifier_key:
            LOG.warning(
                "payload log: identifier hashes are plain sha256, which anyone can reverse for sequential ids: set "
                "FRAUD_IDENTIFIER_KEY (from a Secret) to key them"
            )

    # -- request path ---------------------------------------------------------------------------------------
    def log(
        self,
        features: np.ndarray,
        scores: np.ndarray,
        decisions: np.ndarray,
        *,
        request_id: str,
        identifiers: Mapping[str, Sequence[str | None]] | None = None,
        imputed: Sequence[Sequence[str]] | None = None,
        event_times: Sequence[int] | None = None,
    ) -> bool:
        """Buffer the rows of one scored request; never blocks on I/O and never raises.

        The arrays are kept by reference: do not modify them afterwards.

        Args:
            features: Scored matrix (N, F) in schema order.
            scores: Scores (N,).
            decisions: Decisions (N,).
            request_id: The request's id.
            identifiers: Optional identifier columns (see the module docstring for what is written).
            imputed: Per row, the features the server filled in.
            event_times: Per row, the raw transaction's event time (epoch seconds), for raw-transaction requests.

        Returns:
            True when buffered, False when dropped (buffer full or logger closed).
        """
        n = len(scores)
        try:
            entry = _Entry(
                features, scores, decisions, str(request_id), self._clock(), identifiers, imputed, event_times
            )
            with self._lock:
                if self._stop or self._buffered + n > self.config.max_buffer_rows:
                    accepted = False
                else:
                    self._entries.append(entry)
                    self._buffered += n
                    self._pending += n
                    accepted = True
                    if self._pending >= self.config.flush_rows:
                        self._wake.notify()
        except Exception:  # the payload log must never fail a request
            LOG.exception("payload log: cannot buffer %d row(s)", n)
            accepted = False
        if not accepted:
            self._dropped(n)
        return accepted

    def _dropped(self, n: int) -> None:
        if n <= 0:
            return
        self.rows_dropped += n
        if self._on_drop is not None:
            try:
                self._on_drop(n)
            except Exception:
                LOG.exception("payload log: drop callback failed")

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> PayloadLogger:
        """Start the background writer thread, and with a spool its uploader (idempotent).

        With a spool the uploader first uploads what an earlier process left in it.

        Returns:
            self.
        """
        with self._lock:
            if self._thread is None:
                target = self._run if self.spool is None else self._run_spooled
                self._thread = threading.Thread(target=target, name="payload-log-writer", daemon=True)
                self._thread.start()
                if self.spool is not None:
                    self._uploader = threading.Thread(
                        target=self._run_uploader, name="payload-log-uploader", daemon=True
                    )
                    self._uploader.start()
        return self

    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything buffered so far and wait for it (for shutdown and tests).

        Args:
            timeout: Seconds to wait.

        Returns:
            True when the flush finished in time.
        """
        if self._thread is None:
            self._write_now()
            return True
        with self._lock:
            self._flush_requested += 1
            target = self._flush_requested
            self._wake.notify_all()
            return self._wake.wait_for(lambda: self._flushed >= target, timeout=timeout)

    def _write_now(self) -> None:
        """Flush without the threads: write the buffer (through the spool when there is one)."""
        if self.spool is None:
            self._write(self._take())
            return
        self._spool_entries(self._take())
        self.spool.rotate()
        self._open_rows = 0
        self._upload_pass()

    def close(self, timeout: float = 30.0) -> None:
        """Flush and stop the writer thread; later rows are dropped.

        Args:
            timeout: Seconds to wait for the final write.
        """
        with self._lock:
            if self._stop:
                return
            self._stop = True
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            for thread in (self._thread, self._uploader):
                if thread is not None:
                    thread.join(max(0.0, deadline - time.monotonic()))
                    if thread.is_alive():
                        LOG.warning("payload log: %s still busy after %.0f s at shutdown", thread.name, timeout)
        else:
            self._write_now()
        if self.spool is not None:
            self.spool.close()

    # -- writer thread --------------------------------------------------------------------------------------
    def _take(self) -> list[_Entry]:
        with self._lock:
            entries, self._entries = self._entries, []
            self._pending = 0
            self._last_flush = time.monotonic()
        return entries

    def _run(self) -> None:
        while True:
            with self._lock:
                self._wake.wait_for(
                    lambda: (
                        self._stop
                        or self._flush_requested > self._flushed
                        or self._pending >= self.config.flush_rows
                        or (self._pending > 0 and time.monotonic() - self._last_flush >= self.config.flush_seconds)
                    ),
                    timeout=min(1.0, self.config.flush_seconds),
                )
                stop = self._stop
                requested = self._flush_requested
                due = (
                    stop
                    or requested > self._flushed
                    or self._pending >= self.config.flush_rows
                    or (self._pending > 0 and time.monotonic() - self._last_flush >= self.config.flush_seconds)
                )
            if due:
                self._write(self._take())
                with self._lock:
                    self._flushed = max(self._flushed, requested)
                    self._wake.notify_all()
            if stop:
                return

    def _run_spooled(self) -> None:
        """Writer with a spool: every ``spool_sync_seconds`` append the buffer and fsync; close segments when due."""
        config = self.config
        next_sync = time.monotonic()
        while True:
            with self._lock:
                self._wake.wait_for(
                    lambda: self._stop or self._flush_requested > self._rotated_request,
                    timeout=max(0.0, next_sync - time.monotonic()),
                )
                stop = self._stop
                requested = self._flush_requested
            next_sync = time.monotonic() + config.spool_sync_seconds
            self._spool_entries(self._take())
            rotate = (
                stop
                or requested > self._rotated_request
                or self._open_rows >= config.flush_rows
                or (self._open_rows > 0 and time.monotonic() - self._open_since >= config.flush_seconds)
            )
            if rotate:
                assert self.spool is not None
                self.spool.rotate()
                self._open_rows = 0
                with self._lock:
                    self._rotated_request = max(self._rotated_request, requested)
                    self._rotations += 1
                    self._writer_done = stop
                    self._wake.notify_all()
            if stop:
                return

    def _spool_entries(self, entries: list[_Entry]) -> None:
        """Append rows to the spool and sync it; rows over the spool's cap are dropped and counted."""
        n = sum(len(e.scores) for e in entries)
        if n == 0 or self.spool is None:
            return
        try:
            payload = encode_frame(self._frame(entries))
        except Exception:
            LOG.exception("payload log: cannot build a frame of %d row(s); dropping them", n)
            self._release(n)
            self._dropped(n)
            return
        if self.spool.append(payload, n):
            self.spool.sync()
            if self._open_rows == 0:
                self._open_since = time.monotonic()
            self._open_rows += n
            self.rows_spooled += n
            self._spool_full = False
        else:
            if not self._spool_full:
                LOG.warning(
                    "payload log: spool %s is full (%d of %d bytes) or not writable; dropping rows until it drains",
                    self.spool.directory,
                    self.spool.size_bytes,
                    self.spool.max_bytes,
                )
            self._spool_full = True
            self._dropped(n)
        self._release(n)

    def _run_uploader(self) -> None:
        """Upload closed spool segments.

        At once (what an earlier process left), after each rotation, and every ``flush_seconds`` while the store
        fails.
        """
        retry_at: float | None = time.monotonic()
        seen = 0

        def due(seen: int, retry_at: float | None) -> bool:
            return (
                self._rotations > seen or self._writer_done or (retry_at is not None and time.monotonic() >= retry_at)
            )

        while True:
            with self._lock:
                timeout = None if retry_at is None else max(0.0, retry_at - time.monotonic())
                self._wake.wait_for(functools.partial(due, seen, retry_at), timeout=timeout)
                generation, requested, done = self._rotations, self._rotated_request, self._writer_done
            ok = self._upload_pass()
            seen = generation
            retry_at = None if ok else time.monotonic() + self.config.flush_seconds
            with self._lock:
                self._flushed = max(self._flushed, requested)
                self._wake.notify_all()
            if done:
                return

    def _upload_pass(self) -> bool:
        """Upload every closed segment, oldest first; stop at the first that fails.

        Returns:
            True when the spool holds no closed segment any more.
        """
        if self.spool is None:
            return True
        for path in self.spool.closed_segments():
            try:
                if not self._upload_segment(path):
                    return False
            except Exception:
                LOG.exception("payload log: cannot upload spool segment %s; keeping it", path)
                return False
        return True

    def _upload_segment(self, path: Path) -> bool:
        """Write one closed segment to the store and remove it; keep what failed in the spool.

        Returns:
            Whether everything in it reached the store.
        """
        assert self.spool is not None
        try:
            read = read_segment(path)
        except FileNotFoundError:
            return True
        dirty = read.torn
        if read.torn:
            self.torn_records += 1
            LOG.warning(
                "payload log: spool segment %s ends in a torn record (%d byte(s), %d row(s)); dropping it",
                path.name,
                read.torn_bytes,
                read.torn_rows,
            )
            self._dropped(read.torn_rows)
        frames = []
        for record in read.records:
            try:
                frames.append(decode_frame(record.payload))
            except Exception:
                LOG.exception(
                    "payload log: unreadable record in spool segment %s; dropping %d row(s)", path, record.rows
                )
                self._dropped(record.rows)
                dirty = True
        frames = [f for f in frames if len(f)]
        if not frames:
            self.spool.remove(path)
            return True
        frame = pd.concat(frames, ignore_index=True)
        scored_at = pd.to_datetime(frame["scored_at"], utc=True)
        sid = segment_id(path)
        failed = []
        parts = list(frame.groupby(scored_at.dt.date, sort=True))
        for day, part in parts:
            # Named after the segment: a retry (or a re-upload after a crash) rewrites the same object.
            key = f"{PAYLOAD_PREFIX}/{self.model_name}/date={day:%Y-%m-%d}/{sid}.parquet"
            if self._write_part(key, part):
                self.rows_written += len(part)
                self.files_written += 1
            else:
                failed.append(part)
        if not failed:
            self.spool.remove(path)
            return True
        if dirty or len(failed) < len(parts):
            rest = pd.concat(failed, ignore_index=True)
            self.spool.replace(path, [Record(len(rest), encode_frame(rest))])
        LOG.warning("payload log: %d row(s) stay in the spool until the store takes them", sum(map(len, failed)))
        return False

    def _write(self, entries: list[_Entry]) -> None:
        n = sum(len(e.scores) for e in entries)
        if n == 0:
            return
        try:
            # Whatever floating-point error state this thread inherited: a NaN event time is NaT, never an error.
            with np.errstate(all="ignore"):
                frame = self._frame(entries)
            parts = [(d, part) for d, part in frame.groupby(frame["scored_at"].dt.date, sort=True)]
        except Exception:
            LOG.exception("payload log: cannot build a frame of %d row(s); dropping them", n)
            self._release(n)
            self._dropped(n)
            return
        for day, part in parts:
            key = f"{PAYLOAD_PREFIX}/{self.model_name}/date={day:%Y-%m-%d}/{uuid.uuid4().hex}.parquet"
            if self._write_part(key, part):
                self.rows_written += len(part)
                self.files_written += 1
            else:
                self._dropped(len(part))
        self._release(n)

    def _release(self, n: int) -> None:
        with self._lock:
            self._buffered -= n

    def _write_part(self, key: str, part: pd.DataFrame) -> bool:
        buf = io.BytesIO()
        part.to_parquet(buf, index=False)
        data = buf.getvalue()
        wait = self.config.retry_backoff_seconds
        for attempt in range(self.config.write_retries + 1):
            try:
                self.store.write_bytes(key, data)
                LOG.debug("payload log: wrote %d row(s) to %s", len(part), key)
                return True
            except Exception as exc:
                last = attempt == self.config.write_retries
                LOG.warning(
                    "payload log: writing %s failed (attempt %d/%d): %s%s",
                    key,
                    attempt + 1,
                    self.config.write_retries + 1,
                    exc,
                    "; dropping its rows" if last else "",
                )
                if last:
                    break
                with self._lock:
                    if self._wake.wait_for(lambda: self._stop, timeout=wait):
                        wait = 0.0
                wait *= 2
        return False

    def _frame(self, entries: list[_Entry]) -> pd.DataFrame:
        counts = [len(e.scores) for e in entries]
        features = np.concatenate(
            [np.asarray(e.features, dtype=np.float64).reshape(c, -1) for e, c in zip(entries, counts, strict=True)]
        )
        data: dict[str, object] = {
            "request_id": np.repeat([e.request_id for e in entries], counts),
            "row": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]),
            "scored_at": pd.to_datetime(np.repeat([e.scored_at for e in entries], counts), unit="s", utc=True),
            "model_name": self.model_name,
            "model_version": self.model_version,
        }
        for i, name in enumerate(schema.FEATURES):
            data[name] = features[:, i]
        data[SCORE_COLUMN] = np.concatenate([np.asarray(e.scores, dtype=np.float64) for e in entries])
        data[DECISION_COLUMN] = np.concatenate([np.asarray(e.decisions, dtype=bool) for e in entries])
        data["imputed"] = [
            ",".join(e.imputed[i]) if e.imputed is not None and i < len(e.imputed) else ""
            for e, c in zip(entries, counts, strict=True)
            for i in range(c)
        ]
        ids = {name: self._column(entries, counts, name) for name in RAW_IDENTIFIERS}
        key = self.config.identifier_key
        data[TRANSACTION_KEY] = [None if v is None else hash_identifier(v, key) for v in ids[schema.TRANSACTION_ID]]
        data[CUSTOMER_KEY] = [None if v is None else hash_identifier(v, key) for v in ids[schema.CUSTOMER_ID]]
        data[TERMINAL_KEY] = [None if v is None else hash_identifier(v, key) for v in ids[schema.TERMINAL_ID]]
        seconds = [
            float(t) if e.event_times is not None and len(e.event_times) == c else np.nan
            for e, c in zip(entries, counts, strict=True)
            for t in (e.event_times if e.event_times is not None and len(e.event_times) == c else [np.nan] * c)
        ]
        data[EVENT_TIME_COLUMN] = _event_times(np.asarray(seconds, dtype=np.float64))
        if self.config.log_identifiers:
            for name in RAW_IDENTIFIERS:
                data[name] = ids[name]
        return pd.DataFrame(data)

    @staticmethod
    def _column(entries: list[_Entry], counts: list[int], name: str) -> list[str | None]:
        out: list[str | None] = []
        for e, c in zip(entries, counts, strict=True):
            values = e.identifiers.get(name) if e.identifiers else None
            out.extend(list(values) if values is not None and len(values) == c else [None] * c)
        return out


def _event_times(seconds: np.ndarray) -> pd.DatetimeIndex:
    """Epoch seconds (NaN: unknown) as UTC times, exact for whole seconds; NaN or out-of-range values become NaT."""
    known = np.isfinite(seconds) & (np.abs(seconds) < _MAX_EPOCH_SECONDS)
    ns = np.full(seconds.shape, np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    whole = np.floor(seconds[known])
    ns[known] = whole.astype(np.int64) * 1_000_000_000 + np.round((seconds[known] - whole) * 1e9).astype(np.int64)
    return pd.DatetimeIndex(ns.view("datetime64[ns]"), tz="UTC")
