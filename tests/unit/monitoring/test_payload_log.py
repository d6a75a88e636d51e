"""Payload log: partitions, privacy, flushing by size and time, and never blocking or failing a request."""

from __future__ import annotations

import io
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from fraud_detection.data import schema
from fraud_detection.monitoring.payload_columns import BASE_COLUMNS, SKIPPED_ATTR, hash_identifier
from fraud_detection.monitoring.payload_log import PayloadLogConfig, PayloadLogger
from fraud_detection.monitoring.payload_reader import read_payload_log
from fraud_detection.monitoring.spool import encode_record, read_segment, segment_id, spool_dir_for
from fraud_detection.store.base import StoreError
from fraud_detection.store.local import LocalStore

F = len(schema.FEATURES)
DAY = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, size=(n, F))
    scores = rng.uniform(0, 1, size=n)
    return X, scores, scores >= 0.5


def _wait(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached before the deadline")


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now


def test_rows_land_in_date_partitions_with_every_column(tmp_path: Path):
    store = LocalStore(tmp_path)
    logger = PayloadLogger(store, "fraud-detector", "v1", clock=Clock(DAY))
    X, scores, decisions = _rows(3)
    assert logger.log(X, scores, decisions, request_id="r-1", imputed=[["is_night"], [], []])
    logger.close()
    keys = store.list("payload-logs/")
    assert len(keys) == 1
    assert keys[0].startswith("payload-logs/fraud-detector/date=2026-03-01/") and keys[0].endswith(".parquet")
    frame = read_payload_log(store, "fraud-detector", DAY - timedelta(hours=1), DAY + timedelta(hours=1))
    assert list(frame.columns) == list(BASE_COLUMNS)
    assert len(frame) == 3
    assert (frame["model_version"] == "v1").all() and (frame["request_id"] == "r-1").all()
    assert frame["row"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(frame[list(schema.FEATURES)].to_numpy(), X)
    np.testing.assert_allclose(frame["fraud_score"], scores)
    assert frame["decision"].tolist() == decisions.tolist()
    assert frame["imputed"].tolist() == ["is_night", "", ""]
    assert frame["scored_at"].iloc[0] == DAY


def test_raw_identifiers_are_written_only_when_configured(tmp_path: Path):
    ids = {"transaction_id": ["t-1", "t-2"], "customer_id": ["4111111111111111", "5500000000000004"]}
    X, scores, decisions = _rows(2)
    private = PayloadLogger(LocalStore(tmp_path / "a"), "m", "v1", clock=Clock(DAY))
    private.log(X, scores, decisions, request_id="r", identifiers=ids)
    private.close()
    frame = read_payload_log(LocalStore(tmp_path / "a"), "m", DAY.date(), DAY.date() + timedelta(days=1))
    assert "customer_id" not in frame.columns and "transaction_id" not in frame.columns
    assert frame["transaction_key"].tolist() == [hash_identifier("t-1"), hash_identifier("t-2")]
    private_bytes = b"".join(p.read_bytes() for p in (tmp_path / "a").rglob("*.parquet"))
    assert b"4111111111111111" not in private_bytes and b"t-1" not in private_bytes

    public = PayloadLogger(
        LocalStore(tmp_path / "b"), "m", "v1", PayloadLogConfig(log_identifiers=True), clock=Clock(DAY)
    )
    public.log(X, scores, decisions, request_id="r", identifiers=ids)
    public.close()
    frame = read_payload_log(LocalStore(tmp_path / "b"), "m", DAY.date(), DAY.date() + timedelta(days=1))
    assert frame["customer_id"].tolist() == ids["customer_id"]
    assert frame["transaction_id"].tolist() == ids["transaction_id"]
    assert frame["terminal_id"].isna().all()
    public_bytes = b"".join(p.read_bytes() for p in (tmp_path / "b").rglob("*.parquet"))
    assert b"4111111111111111" in public_bytes  # the byte check above can see an identifier when one is written


def test_flushes_by_size_in_the_background(tmp_path: Path):
    store = LocalStore(tmp_path)
    logger = PayloadLogger(store, "m", "v1", PayloadLogConfig(flush_rows=10, flush_seconds=3600)).start()
    logger.log(*_rows(4), request_id="a")
    time.sleep(0.2)
    assert store.list("payload-logs/") == []
    logger.log(*_rows(6), request_id="b")
    _wait(lambda: logger.rows_written == 10)
    assert len(store.list("payload-logs/")) == 1
    logger.close()


def test_flushes_by_time_in_the_background(tmp_path: Path):
    store = LocalStore(tmp_path)
    logger = PayloadLogger(store, "m", "v1", PayloadLogConfig(flush_rows=1000, flush_seconds=0.2)).start()
    logger.log(*_rows(2), request_id="a")
    _wait(lambda: logger.rows_written == 2, timeout=5)
    logger.close()


class SlowStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = threading.Event()
        self.writes = 0

    def write_bytes(self, key: str, data: bytes) -> None:
        self.release.wait(30)
        self.writes += 1
        super().write_bytes(key, data)


def test_a_slow_store_never_blocks_logging_and_overflow_is_dropped_and_counted(tmp_path: Path):
    store = SlowStore(tmp_path)
    dropped: list[int] = []
    config = PayloadLogConfig(flush_rows=5, flush_seconds=3600, max_buffer_rows=20)
    logger = PayloadLogger(store, "m", "v1", config, on_drop=dropped.append).start()
    start = time.perf_counter()
    accepted = [logger.log(*_rows(5), request_id=str(i)) for i in range(10)]
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5  # 10 calls while the store hangs
    assert accepted[:4] == [True] * 4 and not all(accepted)
    assert sum(dropped) == 5 * accepted.count(False) == logger.rows_dropped
    store.release.set()
    assert logger.flush(timeout=10)
    logger.close()
    assert logger.rows_written == 5 * accepted.count(True)


class BrokenStore(LocalStore):
    def write_bytes(self, key: str, data: bytes) -> None:
        raise StoreError(f"cannot write {key}: connection refused")


def test_a_failing_store_drops_and_counts_rows_after_retries_and_never_raises(tmp_path: Path):
    dropped: list[int] = []
    config = PayloadLogConfig(flush_rows=3, write_retries=2, retry_backoff_seconds=0.01)
    logger = PayloadLogger(BrokenStore(tmp_path), "m", "v1", config, on_drop=dropped.append).start()
    assert logger.log(*_rows(3), request_id="a")
    _wait(lambda: sum(dropped) == 3)
    assert logger.rows_written == 0
    logger.close()
    assert not logger.log(*_rows(2), request_id="late")  # closed: dropped, counted, no exception
    assert sum(dropped) == 5


def test_reader_filters_the_window_across_partitions(tmp_path: Path):
    store = LocalStore(tmp_path)
    clock = Clock(datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC))
    logger = PayloadLogger(store, "m", "v1", clock=clock)
    logger.log(*_rows(2), request_id="before-midnight")
    clock.now += 2
    logger.log(*_rows(3), request_id="after-midnight")
    clock.now += 3 * 86400
    logger.log(*_rows(1), request_id="later")
    logger.close()
    days = sorted({k.split("/")[2] for k in store.list("payload-logs/m/")})
    assert days == ["date=2026-03-01", "date=2026-03-02", "date=2026-03-05"]
    window = read_payload_log(store, "m", datetime(2026, 3, 1, 23, 0), datetime(2026, 3, 2, 1, 0))
    assert window["request_id"].tolist() == ["before-midnight"] * 2 + ["after-midnight"] * 3
    only_second = read_payload_log(store, "m", datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    assert set(only_second["request_id"]) == {"after-midnight"}
    empty = read_payload_log(store, "other-model", datetime(2026, 3, 1), datetime(2026, 3, 9))
    assert empty.empty and list(empty.columns) == list(BASE_COLUMNS)
    assert str(empty["scored_at"].dtype) == "datetime64[ns, UTC]"


def test_config_is_validated():
    with pytest.raises(ValueError, match="flush_rows"):
        PayloadLogConfig(flush_rows=0)
    with pytest.raises(ValueError, match="max_buffer_rows"):
        PayloadLogConfig(flush_rows=10, max_buffer_rows=5)


# -- the local spool ----------------------------------------------------------------------------------------------
def _spooled(tmp_path: Path, **kwargs) -> PayloadLogConfig:
    return PayloadLogConfig(spool_dir=tmp_path / "spool", **{"flush_rows": 1000, "flush_seconds": 3600, **kwargs})


def _segment_rows(spool_dir: Path) -> int:
    return sum(r.rows for p in spool_dir.glob("*.seg") for r in read_segment(p).records)


def test_logged_rows_reach_the_spool_on_disk_within_the_sync_interval(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    logger = PayloadLogger(store, "m", "v1", _spooled(tmp_path)).start()
    start = time.perf_counter()
    assert logger.log(*_rows(3), request_id="a")
    assert time.perf_counter() - start < 0.05  # the request path only appends in memory
    _wait(lambda: _segment_rows(tmp_path / "spool") == 3, timeout=0.5)  # synced by the writer, not by log()
    assert store.list("payload-logs/") == []  # nothing due for the store yet
    assert logger.flush(timeout=10)
    assert read_payload_log(store, "m", datetime(2000, 1, 1), datetime(2100, 1, 1))["request_id"].tolist() == ["a"] * 3
    assert list((tmp_path / "spool").glob("*.seg")) == []  # rows leave the spool once the store has them
    logger.close()


_CRASH = """
import os, signal, sys, time
from pathlib import Path
import numpy as np
from fraud_detection.data import schema
from fraud_detection.monitoring.payload_log import PayloadLogConfig, PayloadLogger
from fraud_detection.store.local import LocalStore

root = Path(sys.argv[1])
config = PayloadLogConfig(flush_rows=1000, flush_seconds=3600, spool_dir=root / "spool")
logger = PayloadLogger(LocalStore(root / "store"), "m", "v1", config).start()
X = np.full((4, len(schema.FEATURES)), 0.5)
logger.log(X, np.full(4, 0.9), np.ones(4, dtype=bool), request_id="before-kill")
while logger.rows_spooled < 4:
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_next_start_uploads_what_a_killed_process_left_and_drops_a_torn_tail(tmp_path: Path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _CRASH, str(tmp_path)], capture_output=True, timeout=120, check=False)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    store = LocalStore(tmp_path / "store")
    assert store.list("payload-logs/") == []  # SIGKILL: no flush happened
    (segment,) = (tmp_path / "spool").glob("*.seg")
    with open(segment, "ab") as fh:  # a record torn mid-write
        fh.write(encode_record(b"x" * 64, rows=6)[:30])
    dropped: list[int] = []
    logger = PayloadLogger(store, "m", "v2", _spooled(tmp_path), on_drop=dropped.append).start()
    _wait(lambda: logger.rows_written == 4)
    frame = read_payload_log(store, "m", datetime(2000, 1, 1), datetime(2100, 1, 1))
    assert frame["request_id"].tolist() == ["before-kill"] * 4
    assert (frame["model_version"] == "v1").all()  # the rows keep the version that scored them
    assert logger.torn_records == 1 and sum(dropped) == 6 == logger.rows_dropped
    assert store.list("payload-logs/m/")[0].endswith(f"/{segment_id(segment)}.parquet")
    _wait(lambda: not segment.exists())
    logger.close()


class FlakyStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.down = True

    def write_bytes(self, key: str, data: bytes) -> None:
        if self.down:
            raise StoreError(f"cannot write {key}: connection refused")
        super().write_bytes(key, data)


def test_with_a_spool_a_store_outage_keeps_rows_on_disk_instead_of_dropping_them(tmp_path: Path):
    store = FlakyStore(tmp_path / "store")
    dropped: list[int] = []
    config = _spooled(tmp_path, flush_rows=5, flush_seconds=0.3, write_retries=0)
    logger = PayloadLogger(store, "m", "v1", config, on_drop=dropped.append).start()
    for i in range(4):
        assert logger.log(*_rows(5, seed=i), request_id=f"r{i}")
    _wait(lambda: _segment_rows(tmp_path / "spool") == 20)
    time.sleep(0.5)
    assert logger.rows_written == 0 and dropped == [] and _segment_rows(tmp_path / "spool") == 20
    store.down = False  # retried every flush_seconds
    _wait(lambda: logger.rows_written == 20)
    assert len(read_payload_log(store, "m", datetime(2000, 1, 1), datetime(2100, 1, 1))) == 20
    assert dropped == []
    logger.close()


def test_rows_beyond_the_spool_cap_are_dropped_and_counted(tmp_path: Path):
    store = FlakyStore(tmp_path / "store")
    dropped: list[int] = []
    config = _spooled(tmp_path, spool_max_bytes=20_000, write_retries=0)
    logger = PayloadLogger(store, "m", "v1", config, on_drop=dropped.append).start()
    for i in range(12):
        assert logger.log(*_rows(5, seed=i), request_id=f"r{i}")  # accepted in memory...
        _wait(lambda i=i: logger.rows_spooled + logger.rows_dropped == 5 * (i + 1))  # one spool record each
    assert 0 < logger.rows_spooled < 60 and sum(dropped) == logger.rows_dropped == 60 - logger.rows_spooled
    assert sum(p.stat().st_size for p in (tmp_path / "spool").glob("*.seg")) <= 20_000  # ...but the disk is capped
    store.down = False
    logger.close()
    assert logger.rows_written == logger.rows_spooled


def test_a_hanging_store_neither_blocks_logging_nor_the_spool_sync(tmp_path: Path):
    store = SlowStore(tmp_path / "store")
    logger = PayloadLogger(store, "m", "v1", _spooled(tmp_path, flush_rows=5)).start()
    start = time.perf_counter()
    for i in range(10):
        assert logger.log(*_rows(5, seed=i), request_id=str(i))
    assert time.perf_counter() - start < 0.5
    _wait(lambda: _segment_rows(tmp_path / "spool") == 50, timeout=2)  # the uploader hangs, the writer syncs
    store.release.set()
    logger.close()
    assert logger.rows_written == 50 and list((tmp_path / "spool").glob("*.seg")) == []


def test_spool_dir_defaults_apart_per_model_and_store():
    a = spool_dir_for(None, "m", "s3://bucket/a")
    assert a is not None and a.parts[:3] == (".fraud", "spool", "m")
    assert a != spool_dir_for("", "m", "s3://bucket/b")
    assert spool_dir_for("/var/spool/fraud", "m", "s3://bucket/a") == Path("/var/spool/fraud")
    assert spool_dir_for("off", "m", "s3://bucket/a") is None


# -- reading past damaged objects ------------------------------------------------------------------------------------
def test_reader_skips_empty_non_parquet_and_foreign_objects_and_names_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    import pandas as pd

    store = LocalStore(tmp_path)
    logger = PayloadLogger(store, "m", "v1", clock=Clock(DAY))
    logger.log(*_rows(3), request_id="good")
    logger.close()
    day = "payload-logs/m/date=2026-03-01"
    store.write_bytes(f"{day}/empty.parquet", b"")
    store.write_bytes(f"{day}/text.parquet", b"this is not parquet")
    foreign = io.BytesIO()
    pd.DataFrame({"a": [1, 2]}).to_parquet(foreign)
    store.write_bytes(f"{day}/foreign.parquet", foreign.getvalue())
    bad = {f"{day}/{n}.parquet" for n in ("empty", "text", "foreign")}
    seen: list[tuple[str, str]] = []
    with caplog.at_level("WARNING", logger="fraud_detection.monitoring.payload_log"):
        frame = read_payload_log(
            store, "m", DAY.date(), DAY.date() + timedelta(days=1), on_skip=lambda k, r: seen.append((k, r))
        )
    assert frame["request_id"].tolist() == ["good"] * 3
    assert {k for k, _ in seen} == bad == set(frame.attrs[SKIPPED_ATTR])
    assert all(key in caplog.text for key in bad)
    reasons = dict(seen)
    assert "empty" in reasons[f"{day}/empty.parquet"] and "not Parquet" in reasons[f"{day}/text.parquet"]
    assert "missing" in reasons[f"{day}/foreign.parquet"]
    only_bad = read_payload_log(store, "m", DAY.date() + timedelta(days=1), DAY.date() + timedelta(days=2))
    assert only_bad.empty and only_bad.attrs[SKIPPED_ATTR] == []


def test_event_times_are_exact_and_never_raise_whatever_the_float_error_state():
    """Unknown (NaN) or absurd event times become NaT; whole seconds stay exact (as pandas' own conversion)."""
    import pandas as pd

    from fraud_detection.monitoring.payload_log import _event_times

    seconds = np.array([1_700_000_123.0, np.nan, 1e308, -np.inf, 1_700_000_000.5])
    with np.errstate(all="raise"):
        got = _event_times(seconds)
    assert got.isna().tolist() == [False, True, True, True, False]
    want = pd.to_datetime(seconds[[0, 4]], unit="s", utc=True)
    assert list(got[[0, 4]]) == list(want)
