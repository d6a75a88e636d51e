"""Payload log: partitions, privacy, flushing by size and time, and never blocking or failing a request."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from fraud_detection.data import schema
from fraud_detection.monitoring.payload_log import (
    BASE_COLUMNS,
    PayloadLogConfig,
    PayloadLogger,
    hash_identifier,
    read_payload_log,
)
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
