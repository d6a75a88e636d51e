"""Retraining from production: scored raw transactions plus labels become a training history, with keyed hashes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data import schema
from fraud_detection.features.offline import build_features
from fraud_detection.monitoring.labels import ingest_labels, validate_labels
from fraud_detection.monitoring.payload_columns import hash_identifier
from fraud_detection.monitoring.payload_log import PayloadLogConfig, PayloadLogger
from fraud_detection.monitoring.payload_reader import read_payload_log
from fraud_detection.monitoring.training_data import transactions_from_log
from fraud_detection.store.local import LocalStore

KEY = b"a-secret-from-a-kubernetes-secret"
NOW = datetime(2026, 3, 10, tzinfo=UTC)


def _log_history(store: LocalStore, raw: pd.DataFrame, *, key: bytes | None) -> None:
    logger = PayloadLogger(
        store, "fraud-detector", "v1", PayloadLogConfig(identifier_key=key), clock=lambda: NOW.timestamp() - 3600
    )
    seconds = raw[schema.EVENT_TIME].to_numpy(dtype="datetime64[s]").astype(np.int64)
    X = build_features(raw)[list(schema.FEATURES)].to_numpy()
    for start in range(0, len(raw), 100):
        rows = slice(start, start + 100)
        ids = {
            c: raw[c].astype(str).iloc[rows].tolist()
            for c in (schema.TRANSACTION_ID, schema.CUSTOMER_ID, schema.TERMINAL_ID)
        }
        n = len(ids[schema.TRANSACTION_ID])
        logger.log(X[rows], np.zeros(n), np.zeros(n, dtype=bool), request_id=f"r{start}", identifiers=ids,
                   event_times=seconds[rows].tolist())  # fmt: skip
    # A retry of the first rows, and a request scored from features (no raw transaction): neither adds a row.
    ids = {
        c: raw[c].astype(str).iloc[:5].tolist() for c in (schema.TRANSACTION_ID, schema.CUSTOMER_ID, schema.TERMINAL_ID)
    }
    logger.log(
        X[:5],
        np.zeros(5),
        np.zeros(5, dtype=bool),
        request_id="retry",
        identifiers=ids,
        event_times=seconds[:5].tolist(),
    )
    logger.log(X[:3], np.zeros(3), np.zeros(3, dtype=bool), request_id="features-only")
    logger.close()


@pytest.fixture
def served(small_raw: pd.DataFrame, tmp_path: Path) -> tuple[LocalStore, pd.DataFrame]:
    # Requests without customer_since (tenure then counts from the first known transaction, online and offline).
    raw = small_raw.sort_values(schema.EVENT_TIME, kind="stable").head(2_000).reset_index(drop=True)
    raw = raw.drop(columns=[schema.CUSTOMER_SINCE], errors="ignore")
    store = LocalStore(tmp_path / "store")
    _log_history(store, raw, key=KEY)
    frauds = raw[raw[schema.LABEL] == 1]
    labels = pd.DataFrame({"transaction_id": frauds[schema.TRANSACTION_ID].astype(str), "is_fraud": 1,
                           "reported_at": "2026-03-05T00:00:00Z"})  # fmt: skip
    ingest_labels(store, validate_labels(labels))
    return store, raw


def test_scored_transactions_and_labels_become_a_history_with_the_same_features(served):
    store, raw = served
    data = transactions_from_log(store, "fraud-detector", identifier_key=KEY, now=NOW)
    frame = data.transactions
    assert len(frame) == len(raw) and data.raw_rows == len(raw)  # the retry counted once, features-only rows left out
    assert data.labelled_fraud == int(raw[schema.LABEL].sum()) > 0
    assert frame[schema.LABEL].to_numpy().tolist() == raw[schema.LABEL].astype(int).tolist()
    # Ids are keyed hashes, never the clear ids or their plain sha256.
    first = str(raw[schema.CUSTOMER_ID].iloc[0])
    assert frame[schema.CUSTOMER_ID].iloc[0] == hash_identifier(first, KEY) != hash_identifier(first)
    assert not set(frame[schema.TRANSACTION_ID]) & set(raw[schema.TRANSACTION_ID].astype(str))
    # Features only compare ids: the history of hashes gives the features of the clear history.
    got = build_features(schema.validate_transactions(frame))[list(schema.FEATURES)].to_numpy()
    want = build_features(raw)[list(schema.FEATURES)].to_numpy()
    np.testing.assert_array_equal(got, want)


def test_the_log_keeps_no_raw_ids_unless_asked_and_warns_when_unkeyed(tmp_path: Path, small_raw, caplog):
    store = LocalStore(tmp_path / "plain")
    _log_history(store, small_raw.head(50).reset_index(drop=True), key=None)
    log = read_payload_log(store, "fraud-detector", datetime(2026, 3, 1, tzinfo=UTC), NOW)
    assert not {schema.TRANSACTION_ID, schema.CUSTOMER_ID, schema.TERMINAL_ID} & set(log.columns)
    assert "FRAUD_IDENTIFIER_KEY" in caplog.text
    assert "a-secret" not in repr(PayloadLogConfig(identifier_key=KEY))


def test_a_log_without_raw_transactions_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match="no raw transaction scored in the last 183 days"):
        transactions_from_log(LocalStore(tmp_path / "empty"), "fraud-detector", now=NOW)
