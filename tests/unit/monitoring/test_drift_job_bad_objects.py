"""The drift job never dies on one bad object: it skips and names it, computes on the rest (hardening issue)."""

import io
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest

from fraud_detection.data import schema
from fraud_detection.model.bundle import load_bundle
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.model.train import score
from fraud_detection.monitoring.drift_job import DriftJobConfig, NothingToMonitorError, run_drift_job
from fraud_detection.monitoring.labels import LABELS_PREFIX, ingest_labels, load_labels, validate_labels
from fraud_detection.monitoring.payload_columns import PAYLOAD_PREFIX
from fraud_detection.monitoring.payload_log import PayloadLogger
from fraud_detection.monitoring.payload_reader import read_payload_log
from fraud_detection.monitoring.telemetry import drift_registry
from fraud_detection.store.local import LocalStore

MODEL = "fraud-detector"


def _log(store: LocalStore, bundle_dir: Path, rows: pd.DataFrame, version: str) -> None:
    bundle = load_bundle(bundle_dir)
    logger = PayloadLogger(store, MODEL, version).start()
    x = rows[list(schema.FEATURES)].to_numpy()
    scores = score(bundle.model, rows)
    ids = rows[schema.TRANSACTION_ID].astype(str).tolist()
    logger.log(x, scores, scores >= bundle.metadata.threshold, request_id="r", identifiers={schema.TRANSACTION_ID: ids})
    logger.close()


@pytest.fixture
def store_with_traffic(tmp_path: Path, tiny_bundle: Path, small_features: pd.DataFrame) -> tuple[LocalStore, str]:
    store = LocalStore(tmp_path / "store")
    registry = ModelRegistry(store, MODEL)
    version = registry.publish(tiny_bundle)
    registry.set_alias("production", version)
    _log(store, tiny_bundle, small_features.sample(400, random_state=0), version)
    return store, version


def _run(store: LocalStore, tmp_path: Path):
    return run_drift_job(
        store,
        DriftJobConfig(window_hours=1, min_rows=100),
        read_window=read_payload_log,
        now=datetime.now(UTC) + timedelta(minutes=1),
        cache_dir=tmp_path / "cache",
        retrain=None,
    )


def _skipped_total(result) -> dict[str, float]:
    text = generate_latest(drift_registry(result, now=1.0)).decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("fraud_drift_skipped_objects_total{"):
            kind = line.split('kind="')[1].split('"')[0]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return out


def _partition(version_day: datetime) -> str:
    return f"{PAYLOAD_PREFIX}/{MODEL}/date={version_day:%Y-%m-%d}/"


def test_a_huge_finite_amount_answered_200_does_not_break_later_runs(store_with_traffic, tiny_bundle, tmp_path):
    store, version = store_with_traffic
    bundle = load_bundle(tiny_bundle)
    logger = PayloadLogger(store, MODEL, version).start()
    row = bundle.reference[list(schema.FEATURES)].iloc[:1].to_numpy().copy()
    row[0, list(schema.FEATURES).index("amount")] = 1e308
    logger.log(row, np.array([0.5]), np.array([True]), request_id="huge", identifiers={schema.TRANSACTION_ID: ["huge"]})
    logger.close()
    result = _run(store, tmp_path)
    report = result.versions[0]
    assert not report.drift.too_small and report.drift.n_current == 400
    assert result.dropped_rows == 1
    assert result.as_dict()["dropped_rows"] == 1


@pytest.mark.parametrize("content", [b"", b"not parquet at all", b"PAR1garbagePAR1"], ids=["empty", "text", "bad"])
def test_a_corrupt_or_empty_partition_is_skipped_and_named(store_with_traffic, tmp_path, content, caplog):
    store, _ = store_with_traffic
    key = _partition(datetime.now(UTC)) + "corrupt.parquet"
    store.write_bytes(key, content)
    with caplog.at_level(logging.WARNING):
        result = _run(store, tmp_path)
    assert result.versions[0].drift.n_current == 400
    assert [(s.kind, s.key) for s in result.skipped] == [("payload_log", key)]
    assert key in caplog.text and "<Buffer>" not in caplog.text
    assert _skipped_total(result) == {"payload_log": 1.0, "labels": 0.0, "model_version": 0.0}


def test_a_corrupt_labels_object_is_skipped_and_the_others_are_used(store_with_traffic, small_features, tmp_path):
    store, _ = store_with_traffic
    labels = small_features[[schema.TRANSACTION_ID, schema.LABEL]].head(50).assign(reported_at="2026-01-01")
    ingest_labels(store, validate_labels(labels))
    store.write_bytes(f"{LABELS_PREFIX}zz-corrupt.parquet", b"garbage")
    buf = io.BytesIO()
    pd.DataFrame({"x": [1]}).to_parquet(buf)
    store.write_bytes(f"{LABELS_PREFIX}zz-wrong-columns.parquet", buf.getvalue())
    skipped: list[tuple[str, str]] = []
    assert len(load_labels(store, on_skip=lambda key, reason: skipped.append((key, reason)))) == 50
    assert [k for k, _ in skipped] == [f"{LABELS_PREFIX}zz-corrupt.parquet", f"{LABELS_PREFIX}zz-wrong-columns.parquet"]
    result = _run(store, tmp_path)
    assert {s.key for s in result.skipped if s.kind == "labels"} == {k for k, _ in skipped}
    assert result.versions[0].quality
    assert _skipped_total(result) == {"payload_log": 0.0, "labels": 2.0, "model_version": 0.0}


def test_rows_of_a_version_not_in_the_registry_are_skipped(store_with_traffic, tiny_bundle, small_features, tmp_path):
    store, version = store_with_traffic
    _log(store, tiny_bundle, small_features.sample(50, random_state=1), "v-unknown")
    result = _run(store, tmp_path)
    assert [v.model_version for v in result.versions] == [version]
    assert [(s.kind, s.key) for s in result.skipped] == [("model_version", "v-unknown")]
    assert _skipped_total(result) == {"payload_log": 0.0, "labels": 0.0, "model_version": 1.0}


def _second_version(store: LocalStore, tiny_bundle: Path, tmp_path: Path) -> str:
    """The tiny bundle published again under another version id (a former canary, say)."""
    from tests.unit.model.test_registry_aliases import _two_versions

    local, _, second = _two_versions(tiny_bundle, tmp_path / "two")
    ModelRegistry(store, MODEL).publish(local.store.root / local.version_prefix(second))  # type: ignore[attr-defined]
    return second


def test_rows_of_a_version_whose_bundle_is_tampered_are_skipped_and_never_unpickled(
    store_with_traffic, tiny_bundle, small_features, tmp_path, caplog
):
    store, version = store_with_traffic
    other = _second_version(store, tiny_bundle, tmp_path)
    _log(store, tiny_bundle, small_features.sample(60, random_state=2), other)
    store.write_bytes(ModelRegistry(store, MODEL).version_prefix(other) + "model.joblib", b"not the published model")
    with caplog.at_level(logging.WARNING):
        result = _run(store, tmp_path)
    assert [v.model_version for v in result.versions] == [version]
    assert [(s.kind, s.key) for s in result.skipped] == [("model_version", other)]
    assert "60 logged row(s)" in result.skipped[0].reason and "model.joblib digest" in result.skipped[0].reason
    assert store.uri(f"models/{MODEL}/versions/{other}") in result.skipped[0].reason
    assert _skipped_total(result)["model_version"] == 1.0
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")], "a refused download was left"


def test_a_tampered_production_still_fails_the_run(store_with_traffic, tmp_path):
    from fraud_detection.model.bundle import BundleIntegrityError

    store, version = store_with_traffic
    store.write_bytes(ModelRegistry(store, MODEL).version_prefix(version) + "model.joblib", b"forged")
    with pytest.raises(BundleIntegrityError, match=r"model\.joblib digest"):
        _run(store, tmp_path)


def test_an_empty_store_is_nothing_to_monitor(tmp_path):
    with pytest.raises(NothingToMonitorError, match="no production model"):
        run_drift_job(LocalStore(tmp_path), DriftJobConfig(), read_window=read_payload_log)


def test_the_cron_entry_exits_0_with_one_line_on_an_empty_store(tmp_path, monkeypatch, caplog):
    from monitoring import drift_job as entry

    monkeypatch.setenv("FRAUD_STORE_URI", str(tmp_path / "empty"))
    monkeypatch.delenv("FRAUD_PUSHGATEWAY_URL", raising=False)
    monkeypatch.setenv("FRAUD_CACHE_DIR", str(tmp_path / "cache"))
    assert entry.main() == 0
    assert "nothing to monitor" in caplog.text and not any(r.exc_info for r in caplog.records)


def test_the_cron_entry_exits_0_with_a_warning_when_objects_were_skipped(
    store_with_traffic, tmp_path, monkeypatch, caplog
):
    store, _ = store_with_traffic
    store.write_bytes(_partition(datetime.now(UTC)) + "corrupt.parquet", b"junk")
    monkeypatch.setenv("FRAUD_STORE_URI", str(store.root))
    monkeypatch.setenv("FRAUD_DRIFT_WINDOW_HOURS", "1")
    monkeypatch.setenv("FRAUD_DRIFT_RETRAIN", "false")
    monkeypatch.setenv("FRAUD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FRAUD_PUSHGATEWAY_URL", raising=False)
    from monitoring import drift_job as entry

    assert entry.main() == 0
    assert "skipped 1 bad object" in caplog.text and "corrupt.parquet" in caplog.text


def test_the_cron_entry_on_a_dead_store_is_one_error_line_and_exit_1(tmp_path, monkeypatch, caplog):
    from monitoring import drift_job as entry
    from tests.helpers.net import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("FRAUD_STORE_URI", "s3://models/p")
    monkeypatch.setenv("FRAUD_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    monkeypatch.setenv("FRAUD_STORE_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("FRAUD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FRAUD_PUSHGATEWAY_URL", raising=False)
    monkeypatch.delenv("FRAUD_PAYLOAD_LOG_URI", raising=False)
    with caplog.at_level(logging.INFO):
        assert entry.main() == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and not errors[0].exc_info, caplog.text
    assert errors[0].getMessage().startswith("drift job failed: S3 store at " + endpoint)
