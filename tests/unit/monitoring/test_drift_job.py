"""The drift job's logic on a real local store, real bundle and a real payload log (no servers)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data import schema
from fraud_detection.model.bundle import load_bundle
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.model.train import score
from fraud_detection.monitoring.drift_job import DriftJobConfig, run_drift_job
from fraud_detection.monitoring.labels import ingest_labels, validate_labels
from fraud_detection.monitoring.payload_log import PayloadLogger
from fraud_detection.monitoring.payload_reader import read_payload_log
from fraud_detection.monitoring.telemetry import drift_registry
from fraud_detection.store.local import LocalStore


def _log(store: LocalStore, bundle_dir: Path, rows: pd.DataFrame, version: str) -> None:
    bundle = load_bundle(bundle_dir)
    logger = PayloadLogger(store, "fraud-detector", version).start()
    scores = score(bundle.model, rows)
    x = rows[list(schema.FEATURES)].to_numpy()
    for i in range(0, len(rows), 100):
        ids = rows[schema.TRANSACTION_ID].astype(str).iloc[i : i + 100].tolist()
        logger.log(
            x[i : i + 100],
            scores[i : i + 100],
            scores[i : i + 100] >= bundle.metadata.threshold,
            request_id=f"r{i}",
            identifiers={schema.TRANSACTION_ID: ids},
        )
    logger.close()


@pytest.fixture
def store_with_model(tmp_path: Path, tiny_bundle: Path) -> tuple[LocalStore, str]:
    store = LocalStore(tmp_path / "store")
    registry = ModelRegistry(store, "fraud-detector")
    version = registry.publish(tiny_bundle)
    registry.set_alias("production", version)
    return store, version


def test_drift_found_triggers_retraining_and_quality_is_measured(
    store_with_model, tiny_bundle, small_features, tmp_path
):
    store, version = store_with_model
    traffic = small_features.sample(1_000, random_state=0).copy()
    traffic["amount"] *= 3  # inflated amounts: drift
    traffic["hour_of_day"] = (traffic["hour_of_day"] + 6) % 24
    _log(store, tiny_bundle, traffic, version)
    labels = traffic[[schema.TRANSACTION_ID, schema.LABEL]].assign(reported_at="2026-01-01")
    ingest_labels(store, validate_labels(labels))
    calls: list[list[str]] = []
    now = datetime.now(UTC) + timedelta(minutes=1)
    result = run_drift_job(
        store,
        DriftJobConfig(window_hours=1),
        read_window=read_payload_log,
        now=now,
        cache_dir=tmp_path / "cache",
        retrain=lambda reasons: calls.append(reasons) or True,
    )
    report = result.versions[0]
    assert report.model_version == version
    assert report.drift.dataset_drifted
    assert {"amount", "hour_of_day"} <= {f.column for f in report.drift.features if f.drifted}
    assert result.retrain_started and "dataset drift" in calls[0][0]
    quality = {q.maturity: q for q in report.quality}
    assert quality["all"].n_predictions == 1_000 and quality["all"].unlabelled_ratio == 0
    assert quality["all"].n_fraud == int(traffic[schema.LABEL].sum())
    assert not np.isnan(report.estimated_precision)
    assert store.exists(report.report_key)
    text = drift_registry(result, now=123.0)
    from prometheus_client import generate_latest

    exposition = generate_latest(text).decode()
    assert f'fraud_drift_dataset_drifted{{model_name="fraud-detector",model_version="{version}"}} 1.0' in exposition
    assert 'fraud_quality_average_precision_ratio{maturity="all"' in exposition
    assert "fraud_drift_last_success_timestamp_seconds" in exposition


def test_empty_window_is_reported_as_too_small_not_as_drift(store_with_model, tmp_path):
    store, version = store_with_model
    result = run_drift_job(
        store, DriftJobConfig(), read_window=read_payload_log, cache_dir=tmp_path / "cache", retrain=None
    )
    assert [v.model_version for v in result.versions] == [version]
    assert result.versions[0].drift.too_small
    assert not result.retrain_reasons and not result.retrain_started


def test_no_model_and_no_traffic_is_an_error(tmp_path):
    with pytest.raises(LookupError, match="no production model"):
        run_drift_job(LocalStore(tmp_path), DriftJobConfig(), read_window=read_payload_log)
