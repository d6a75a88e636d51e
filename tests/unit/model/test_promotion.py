"""The promotion gate judges the code that serves: the gate's and the evaluation report's scores are the model
server's, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kserve import InferInput, InferRequest
from prometheus_client import CollectorRegistry

from fraud_detection.data import schema
from fraud_detection.model.bundle import load_bundle
from fraud_detection.model.metrics import compute_metrics
from fraud_detection.model.promotion import compare_with_production, gate_and_register, report_candidate
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.model.train import CalibratedPipeline
from fraud_detection.monitoring.telemetry import ServingMetrics
from fraud_detection.scoring.scorer import Scorer
from fraud_detection.store.local import LocalStore
from serving.model import FraudModel
from tests.helpers.bundles import write_tiny_bundle

MODEL_TYPES = ("hgb", "logreg", "rf")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, small_features: pd.DataFrame) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("promotion")
    return {kind: write_tiny_bundle(small_features, root / kind, kind) for kind in MODEL_TYPES}


@pytest.fixture(scope="module")
def test_rows(small_features: pd.DataFrame) -> pd.DataFrame:
    """The last ten days: several request batches' worth of rows."""
    times = small_features[schema.EVENT_TIME]
    return small_features[times >= times.max() - pd.Timedelta(days=10)].reset_index(drop=True)


def _served_scores(bundle_dir: Path, frame: pd.DataFrame) -> np.ndarray:
    """Scores from the model server's own FraudModel, in requests of at most its batch limit."""
    server = FraudModel(
        "fraud-detector", lambda: load_bundle(bundle_dir), metrics=ServingMetrics.create(CollectorRegistry())
    )
    assert server.load() and server.loaded is not None
    scorer = server.loaded.scorer
    X = frame.loc[:, list(schema.FEATURES)].to_numpy(np.float64)
    step = scorer.max_batch_size
    return np.concatenate([scorer.score(scorer.check(X[i : i + step])).scores for i in range(0, len(X), step)])


def _no_sklearn_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(self: CalibratedPipeline, X: np.ndarray) -> np.ndarray:
        raise AssertionError("scored with scikit-learn's predict_proba instead of the served engine")

    monkeypatch.setattr(CalibratedPipeline, "predict_proba", forbidden)


@pytest.mark.parametrize("kind", MODEL_TYPES)
def test_gate_scores_are_the_served_scores(bundles, test_rows, tmp_path, monkeypatch, kind):
    assert len(test_rows) > 2 * 1_000  # more rows than one request may hold
    served = _served_scores(bundles[kind], test_rows)
    _no_sklearn_scoring(monkeypatch)
    registry = ModelRegistry(LocalStore(tmp_path / "store"), "fraud-detector")
    c = compare_with_production(registry, bundles[kind], test_rows, cache_dir=tmp_path / "cache")
    # Same engine, same calibration: identical up to the engine's batch-size-dependent summation order.
    np.testing.assert_allclose(c.scores, served, rtol=0, atol=1e-12)
    # One request holding every row takes the very same path: bit for bit.
    whole = Scorer.from_bundle(load_bundle(bundles[kind]), max_batch_size=len(test_rows))
    X = test_rows.loc[:, list(schema.FEATURES)].to_numpy(np.float64)
    np.testing.assert_array_equal(c.scores, whole.score(whole.check(X)).scores)
    meta = load_bundle(bundles[kind]).metadata
    assert c.candidate == compute_metrics(test_rows, served, meta.threshold, meta.review_cost).as_dict()


def test_production_is_judged_by_its_served_scores_too(bundles, test_rows, tmp_path, monkeypatch):
    registry = ModelRegistry(LocalStore(tmp_path / "store"), "fraud-detector")
    first = gate_and_register(registry, bundles["logreg"], test_rows, cache_dir=tmp_path / "cache")
    assert first.registered and registry.get_alias("production") is not None
    served_prod = _served_scores(bundles["logreg"], test_rows)
    _no_sklearn_scoring(monkeypatch)
    c = compare_with_production(registry, bundles["hgb"], test_rows, cache_dir=tmp_path / "cache")
    prod_meta = load_bundle(bundles["logreg"]).metadata
    assert c.production_version == prod_meta.version
    expected = compute_metrics(test_rows, served_prod, prod_meta.threshold, prod_meta.review_cost).as_dict()
    assert c.production is not None
    assert c.production.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(c.production[name], value, rtol=0, atol=1e-12, err_msg=name)


def test_evaluation_report_shows_the_served_scores_and_decisions(bundles, test_rows, tmp_path, monkeypatch):
    served = _served_scores(bundles["hgb"], test_rows)
    _no_sklearn_scoring(monkeypatch)
    registry = ModelRegistry(LocalStore(tmp_path / "store"), "fraud-detector")
    report = report_candidate(registry, bundles["hgb"], test_rows, work_dir=tmp_path / "work")
    np.testing.assert_allclose(report.comparison.scores, served, rtol=0, atol=1e-12)
    labels = test_rows[schema.LABEL].to_numpy()
    decisions = served >= report.comparison.threshold
    assert report.confusion == [
        [int(((labels == 0) & ~decisions).sum()), int(((labels == 0) & decisions).sum())],
        [int(((labels == 1) & ~decisions).sum()), int(((labels == 1) & decisions).sum())],
    ]


def test_served_v2_response_carries_the_gate_scores(bundles, test_rows, tmp_path):
    """End to end through KServe's request objects: the wire's FP32 scores are the gate's scores, rounded."""
    registry = ModelRegistry(LocalStore(tmp_path / "store"), "fraud-detector")
    c = compare_with_production(registry, bundles["hgb"], test_rows.head(500), cache_dir=tmp_path / "cache")
    server = FraudModel(
        "fraud-detector", lambda: load_bundle(bundles["hgb"]), metrics=ServingMetrics.create(CollectorRegistry())
    )
    assert server.load()
    X = test_rows.head(500).loc[:, list(schema.FEATURES)].to_numpy(np.float64)
    request = InferRequest("fraud-detector", [InferInput("features", list(X.shape), "FP64", data=X.ravel().tolist())])
    body, _ = server.predict(request).to_rest()
    wire = {o["name"]: o["data"] for o in body["outputs"]}
    np.testing.assert_array_equal(np.asarray(wire["fraud_score"], dtype=np.float32), c.scores.astype(np.float32))
    assert list(wire["is_fraud"]) == (c.scores >= c.threshold).tolist()


def test_a_candidate_never_replaces_a_production_it_was_not_compared_with(bundles, test_rows, tmp_path, monkeypatch):
    """Production moves while the candidate is being judged: the gate's alias move fails and production stays."""
    from fraud_detection.model.registry import RegistryError

    registry = ModelRegistry(LocalStore(tmp_path / "store"), "fraud-detector")
    assert gate_and_register(registry, bundles["logreg"], test_rows, cache_dir=tmp_path / "cache").registered
    other = registry.publish(bundles["rf"])
    publish = registry.publish

    def publish_while_someone_promotes(bundle_dir: Path) -> str:
        registry.set_alias("production", other)  # another run's promote lands between comparison and move
        return publish(bundle_dir)

    monkeypatch.setattr(registry, "publish", publish_while_someone_promotes)
    with pytest.raises(RegistryError, match="not moved"):
        gate_and_register(
            registry, bundles["hgb"], test_rows, cache_dir=tmp_path / "cache", min_ap_gain=-1.0, max_cp_loss=1.0
        )
    assert registry.get_alias("production")["version"] == other
