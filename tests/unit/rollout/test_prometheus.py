"""Prometheus over its HTTP API (a loopback server answering canned values): queries, errors."""

from __future__ import annotations

import pytest

from fraud_detection.rollout import analysis, canary, errors, prometheus
from tests.unit.rollout.support import CANARY, MODEL, STABLE, _closed_port, canned, metrics, vector


def test_analyse_reads_every_metric_from_the_prometheus_api(fake_prometheus):
    stable = metrics(STABLE, errors=2, alerts=())
    canary_metrics = metrics(CANARY, errors=60, alerts=("FraudCanaryErrorRateAboveStable",))
    url, seen = fake_prometheus(canned({STABLE: stable, CANARY: canary_metrics}))
    decision = canary.analyse(
        prometheus.PrometheusClient(url),
        model_name=MODEL,
        stable_version=STABLE,
        canary_version=CANARY,
        window="15m",
        at=1e9,
    )
    assert decision.decision is analysis.Decision.ROLLBACK
    assert decision.canary == canary_metrics
    assert decision.stable == stable
    assert {c.name for c in decision.checks if c.outcome is analysis.Outcome.FAIL} == {"error_rate", "firing_alerts"}
    assert len(seen) == 12 and all("[15m]" in q for q in seen if "ALERTS" not in q)


def test_prometheus_errors_are_reported_clearly(fake_prometheus):
    url, _ = fake_prometheus(lambda q: (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}))
    with pytest.raises(errors.PrometheusError, match="answered 400"):
        prometheus.PrometheusClient(url).query("up")
    url, _ = fake_prometheus(lambda q: (200, {"status": "error", "errorType": "timeout", "error": "too slow"}))
    with pytest.raises(errors.PrometheusError, match="timeout: too slow"):
        prometheus.PrometheusClient(url).query("up")
    url, _ = fake_prometheus(lambda q: (200, vector(({"a": "1"}, 1), ({"a": "2"}, 2))))
    with pytest.raises(errors.PrometheusError, match="2 series"):
        prometheus.PrometheusClient(url).scalar("up")
    with pytest.raises(errors.PrometheusError, match="cannot reach"):
        prometheus.PrometheusClient(f"http://127.0.0.1:{_closed_port()}", timeout=2).query("up")
    with pytest.raises(ValueError, match="http"):
        prometheus.PrometheusClient("prometheus:9090")
