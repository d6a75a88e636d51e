from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data.schema import SchemaError
from fraud_detection.monitoring.labels import (
    estimated_precision,
    ingest_labels,
    label_changes,
    load_labels,
    read_label_file,
    realised_quality,
    validate_labels,
)
from fraud_detection.monitoring.payload_columns import hash_identifier
from fraud_detection.store.local import LocalStore

NOW = datetime(2024, 3, 1, tzinfo=UTC)


def _predictions() -> pd.DataFrame:
    times = [NOW - pd.Timedelta(days=d) for d in (40, 35, 20, 10, 2, 1)]
    return pd.DataFrame(
        {
            "transaction_key": [hash_identifier(t) for t in ["a", "b", "c", "d", "e", "f"]],
            "model_version": ["v1"] * 6,
            "fraud_score": [0.9, 0.1, 0.8, 0.2, 0.7, 0.05],
            "decision": [True, False, True, False, True, False],
            "scored_at": pd.to_datetime(times, utc=True),
        }
    )


def test_label_file_is_validated_with_clear_messages(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("transaction_id,is_fraud,reported_at\n1,1,2024-01-01\n2,0,2024-01-02\n")
    labels = read_label_file(path)
    assert list(labels["transaction_id"]) == ["1", "2"]
    with pytest.raises(SchemaError, match="missing column"):
        validate_labels(pd.DataFrame({"transaction_id": [1], "is_fraud": [1]}))
    with pytest.raises(SchemaError, match="0 or 1"):
        validate_labels(pd.DataFrame({"transaction_id": [1], "is_fraud": [3], "reported_at": ["2024-01-01"]}))
    with pytest.raises(SchemaError, match="unparseable"):
        validate_labels(pd.DataFrame({"transaction_id": [1], "is_fraud": [1], "reported_at": ["soon"]}))


def test_ingested_labels_round_trip_and_latest_report_wins(tmp_path):
    store = LocalStore(tmp_path)
    ingest_labels(
        store, validate_labels(pd.DataFrame({"transaction_id": ["a"], "is_fraud": [0], "reported_at": ["2024-01-01"]}))
    )
    ingest_labels(
        store, validate_labels(pd.DataFrame({"transaction_id": ["a"], "is_fraud": [1], "reported_at": ["2024-02-01"]}))
    )
    labels = load_labels(store)
    assert len(labels) == 1 and labels["is_fraud"].iloc[0] == 1


def _labels(rows: list[tuple[str, int, str]]) -> pd.DataFrame:
    return validate_labels(pd.DataFrame(rows, columns=["transaction_id", "is_fraud", "reported_at"]))


def test_label_changes_say_which_report_wins_as_load_labels_does(tmp_path):
    store = LocalStore(tmp_path)
    ingest_labels(store, _labels([("a", 1, "2024-01-05"), ("b", 0, "2024-01-05"), ("c", 1, "2024-01-05")]))
    batch = _labels([("a", 0, "2024-01-06"), ("b", 1, "2024-01-01"), ("c", 1, "2024-01-09"), ("new", 1, "2024-01-01")])
    corrected, overridden = label_changes(load_labels(store), batch)
    assert (corrected, overridden) == (["a"], ["b"])
    ingest_labels(store, batch)
    effective = load_labels(store).set_index("transaction_id")["is_fraud"].to_dict()
    assert effective == {"a": 0, "b": 0, "c": 1, "new": 1}, "the counts describe what load_labels then does"
    assert label_changes(load_labels(store).iloc[:0], batch) == ([], [])


def test_realised_quality_per_maturity_window():
    labels = validate_labels(
        pd.DataFrame({"transaction_id": ["a", "c", "d"], "is_fraud": [1, 0, 1], "reported_at": ["2024-02-01"] * 3})
    )
    rows = {r.maturity: r for r in realised_quality(_predictions(), labels, NOW)}
    assert rows["30d"].n_predictions == 2  # a, b are at least 30 days old
    assert rows["30d"].precision == 1.0 and rows["30d"].recall == 1.0
    assert rows["14d"].n_predictions == 3
    assert rows["7d"].n_predictions == 4
    # d is fraud but scored low and not alerted: recall 1/2, precision 1/2 (c alerted but legit)
    assert rows["7d"].recall == pytest.approx(0.5) and rows["7d"].precision == pytest.approx(0.5)
    assert rows["all"].unlabelled_ratio == pytest.approx(3 / 6)
    assert 0 < rows["7d"].average_precision <= 1


def test_estimated_precision_is_mean_score_of_alerts():
    est = estimated_precision(_predictions())
    assert est["v1"] == pytest.approx(np.mean([0.9, 0.8, 0.7]))
