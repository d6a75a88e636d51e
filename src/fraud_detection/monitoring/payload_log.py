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
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from fraud_detection.data import schema
from fraud_detection.model.bundle import SCORE_COLUMN
from fraud_detection.store.base import ArtifactStore

LOG = logging.getLogger(__name__)

PAYLOAD_PREFIX = "payload-logs"
DECISION_COLUMN = "decision"
TRANSACTION_KEY = "transaction_key"
#: Columns of every payload-log file, in order (raw identifier columns follow when enabled).
BASE_COLUMNS: tuple[str, ...] = (
    "request_id",
    "row",
    "scored_at",
    "model_name",
    "model_version",
    *schema.FEATURES,
    SCORE_COLUMN,
    DECISION_COLUMN,
    "imputed",
    TRANSACTION_KEY,
    "customer_key",
    "terminal_key",
    "event_time",
)
#: Columns of a raw-transaction row (empty for rows scored from features): what retraining from production reads.
EVENT_TIME_COLUMN = "event_time"
CUSTOMER_KEY = "customer_key"
TERMINAL_KEY = "terminal_key"
RAW_IDENTIFIERS: tuple[str, ...] = (schema.TRANSACTION_ID, schema.CUSTOMER_ID, schema.TERMINAL_ID)


def hash_identifier(value: str, key: bytes | None = None) -> str:
    """The pseudonymous key under which an identifier is logged (labels join on it).

    With a key (``FRAUD_IDENTIFIER_KEY``, from a Secret) it is HMAC-SHA256, which nobody without the key can
    reverse, even for sequential ids; without one it falls back to a plain sha256 (a laptop default, logged as a
    warning by the payload logger).

    Args:
        value: Raw identifier, e.g. a transaction id.
        key: The HMAC key; None for a plain digest.

    Returns:
        Hex digest.
    """
    data = str(value).encode("utf-8")
    if key:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class PayloadLogConfig:
    """Buffering and privacy settings.

    Attributes:
        flush_rows: Write a file once this many rows are buffered.
        flush_seconds: Write at least this often when rows are buffered.
        max_buffer_rows: Rows held in memory at most; further rows are dropped (and counted).
        log_identifiers: Also write raw ``transaction_id``, ``customer_id`` and ``terminal_id``.
        identifier_key: HMAC key of the logged identifier hashes (never printed).
        write_retries: Extra attempts of a failed write before its rows are dropped.
        retry_backoff_seconds: Wait before the first retry (doubles each time).
    """

    flush_rows: int = 5_000
    flush_seconds: float = 60.0
    max_buffer_rows: int = 100_000
    log_identifiers: bool = False
    identifier_key: bytes | None = field(default=None, repr=False)
    write_retries: int = 2
    retry_backoff_seconds: float = 0.5

    def __post_init__(self) -> None:
        """Reject settings that would never flush or never buffer."""
        if self.flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {self.flush_rows}")
        if self.flush_seconds <= 0:
            raise ValueError(f"flush_seconds must be > 0, got {self.flush_seconds}")
        if self.max_buffer_rows < self.flush_rows:
            raise ValueError(f"max_buffer_rows ({self.max_buffer_rows}) must be >= flush_rows ({self.flush_rows})")


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
        self.rows_written = 0
        self.rows_dropped = 0
        self.files_written = 0
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
        """Start the background writer thread (idempotent).

        Returns:
            self.
        """
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="payload-log-writer", daemon=True)
                self._thread.start()
        return self

    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything buffered so far and wait for it (for shutdown and tests).

        Args:
            timeout: Seconds to wait.

        Returns:
            True when the flush finished in time.
        """
        if self._thread is None:
            self._write(self._take())
            return True
        with self._lock:
            self._flush_requested += 1
            target = self._flush_requested
            self._wake.notify()
            return self._wake.wait_for(lambda: self._flushed >= target, timeout=timeout)

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
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                LOG.warning("payload log: writer still busy after %.0f s at shutdown", timeout)
        else:
            self._write(self._take())

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

    def _write(self, entries: list[_Entry]) -> None:
        n = sum(len(e.scores) for e in entries)
        if n == 0:
            return
        try:
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
        data[EVENT_TIME_COLUMN] = pd.to_datetime(np.asarray(seconds, dtype=np.float64), unit="s", utc=True)
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


def _utc(value: datetime | date) -> datetime:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def read_payload_log(
    store: ArtifactStore, model_name: str, start: datetime | date, end: datetime | date
) -> pd.DataFrame:
    """Payload-log rows of a model scored in ``[start, end)`` (the drift job's input).

    Args:
        store: The artifact store.
        model_name: Served model name.
        start: Window start (naive values are UTC; a date means its midnight).
        end: Window end, exclusive.

    Returns:
        The rows sorted by ``scored_at``, with at least :data:`BASE_COLUMNS` (empty when nothing was logged).
    """
    lo, hi = _utc(start), _utc(end)
    prefix = f"{PAYLOAD_PREFIX}/{model_name}/"
    frames = []
    first_day, last_day = lo.date(), (hi - timedelta(microseconds=1)).date()
    for key in store.list(prefix):
        part = key[len(prefix) :].split("/", 1)[0]
        if not part.startswith("date=") or not key.endswith(".parquet"):
            continue
        try:
            day = date.fromisoformat(part[len("date=") :])
        except ValueError:
            continue
        if first_day <= day <= last_day:
            frames.append(pd.read_parquet(io.BytesIO(store.read_bytes(key))))
    if not frames:
        return _empty_frame()
    frame = pd.concat(frames, ignore_index=True)
    scored_at = pd.to_datetime(frame["scored_at"], utc=True)
    frame["scored_at"] = scored_at
    frame = frame[(scored_at >= lo) & (scored_at < hi)]
    return frame.sort_values(["scored_at", "request_id", "row"], kind="stable").reset_index(drop=True)


def _empty_frame() -> pd.DataFrame:
    data: dict[str, pd.Series] = {}
    for name in BASE_COLUMNS:
        if name in schema.FEATURES or name == SCORE_COLUMN:
            dtype = "float64"
        elif name == "row":
            dtype = "int32"
        elif name == DECISION_COLUMN:
            dtype = "bool"
        elif name in ("scored_at", EVENT_TIME_COLUMN):
            dtype = "datetime64[ns, UTC]"
        else:
            dtype = "object"
        data[name] = pd.Series([], dtype=dtype)
    return pd.DataFrame(data)
