"""The canary decision on fixed metric values: each limit at its edges, too little traffic, alerts."""

from __future__ import annotations

import json
import math

import pytest

from fraud_detection.rollout import analysis, prometheus
from tests.unit.rollout.support import CANARY, MODEL, STABLE, decide, metrics

# ------------------------------------------------------------------------------------------- decision logic


def test_an_equal_canary_is_promoted_with_every_check_passing():
    decision = decide(metrics(STABLE), metrics(CANARY))
    assert decision.decision is analysis.Decision.PROMOTE
    assert [c.name for c in decision.checks] == [
        "traffic",
        "error_rate",
        "p99_latency",
        "score_ks",
        "score_psi",
        "alert_rate",
        "firing_alerts",
    ]
    assert all(c.outcome is analysis.Outcome.PASS and c.passed is True for c in decision.checks)
    assert decision.check("score_ks").value == pytest.approx(0.0)
    assert decision.check("score_psi").value == pytest.approx(0.0)
    assert len(decision.reasons) == len(decision.checks)


@pytest.mark.parametrize(
    ("stable_errors", "canary_errors", "expected"),
    [
        (0, 50, analysis.Decision.ROLLBACK),  # 5 % against a flawless stable version
        (0, 5, analysis.Decision.PROMOTE),  # 0.5 %: twice nothing, but under the 1-point margin
        (50, 80, analysis.Decision.PROMOTE),  # 8 % against 5 %: under twice the stable rate
        (50, 101, analysis.Decision.ROLLBACK),  # 10.1 % against 5 %: over twice and over 1 point above
        (100, 0, analysis.Decision.PROMOTE),  # a canary better than stable
    ],
)
def test_error_rate_limit_is_the_larger_of_ratio_and_margin(stable_errors, canary_errors, expected):
    decision = decide(metrics(STABLE, errors=stable_errors), metrics(CANARY, errors=canary_errors))
    assert decision.decision is expected, decision.reasons
    check = decision.check("error_rate")
    assert check.value == pytest.approx(canary_errors / 1000)
    assert check.stable == pytest.approx(stable_errors / 1000)
    assert check.threshold == pytest.approx(max(2 * stable_errors / 1000, stable_errors / 1000 + 0.01))
    if expected is analysis.Decision.ROLLBACK:
        assert check.outcome is analysis.Outcome.FAIL
        assert decision.reasons[0] == check.reason
        assert "error rate" in check.reason and "above the limit" in check.reason


@pytest.mark.parametrize(
    ("stable_p99", "canary_p99", "expected"),
    [
        (0.05, 1.0, analysis.Decision.ROLLBACK),
        (0.05, 0.14, analysis.Decision.PROMOTE),
        (0.4, 0.55, analysis.Decision.PROMOTE),
    ],
)
def test_p99_latency_limit(stable_p99, canary_p99, expected):
    decision = decide(metrics(STABLE, p99=stable_p99), metrics(CANARY, p99=canary_p99))
    assert decision.decision is expected
    assert decision.check("p99_latency").threshold == pytest.approx(max(1.5 * stable_p99, stable_p99 + 0.1))


def test_a_shifted_score_distribution_rolls_back_on_both_distances():
    shifted = metrics(CANARY, scores=[100, 200, 300, 400, 0])
    decision = decide(metrics(STABLE), shifted)
    assert decision.decision is analysis.Decision.ROLLBACK
    ks = decision.check("score_ks")
    # CDFs at 0.01: 0.70 vs 0.10; at 0.1: 0.90 vs 0.30; at 0.5: 0.98 vs 0.60 -> max 0.60.
    assert ks.value == pytest.approx(0.6)
    assert ks.outcome is analysis.Outcome.FAIL
    assert decision.check("score_psi").outcome is analysis.Outcome.FAIL


def test_score_distances_by_hand():
    stable = [(0.1, 50.0), (0.5, 80.0), (math.inf, 100.0)]
    canary = [(0.1, 25.0), (0.5, 75.0), (math.inf, 100.0)]
    distance = analysis.score_distribution_distance(stable, canary)
    assert distance is not None
    ks, psi = distance
    assert ks == pytest.approx(0.25)
    expected_psi = sum((c - s) * math.log(c / s) for s, c in [(0.5, 0.25), (0.3, 0.5), (0.2, 0.25)])
    assert psi == pytest.approx(expected_psi)
    assert analysis.score_distribution_distance(stable, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert analysis.score_distribution_distance(stable, [(0.1, 3.0)]) is None  # no +Inf bucket


def test_a_canary_raising_more_fraud_alerts_rolls_back():
    decision = decide(metrics(STABLE, fraud=20, legit=980), metrics(CANARY, fraud=150, legit=850))
    assert decision.decision is analysis.Decision.ROLLBACK
    check = decision.check("alert_rate")
    assert check.value == pytest.approx(0.15)
    assert check.threshold == pytest.approx(max(0.04, 0.04))
    assert [c.name for c in decision.checks if c.outcome is analysis.Outcome.FAIL] == ["alert_rate"]


def test_firing_alerts_for_the_canary_roll_back():
    decision = decide(metrics(STABLE), metrics(CANARY, alerts=("FraudCanaryLatencyAboveStable",)))
    assert decision.decision is analysis.Decision.ROLLBACK
    assert "FraudCanaryLatencyAboveStable" in decision.check("firing_alerts").reason


def test_too_little_traffic_is_inconclusive_even_when_the_canary_looks_bad():
    decision = decide(metrics(STABLE), metrics(CANARY, requests=40, errors=20, fraud=5, legit=15))
    assert decision.decision is analysis.Decision.INCONCLUSIVE
    assert decision.check("traffic").outcome is analysis.Outcome.INSUFFICIENT
    assert decision.check("traffic").passed is None
    assert decision.reasons[0].startswith("traffic: canary 40 requests")
    assert len(decision.reasons) == len(set(decision.reasons))
    assert "too little" in decision.reasons[0]


def test_little_stable_traffic_is_inconclusive_too():
    assert decide(metrics(STABLE, requests=10), metrics(CANARY)).decision is analysis.Decision.INCONCLUSIVE


def test_a_canary_failing_every_request_rolls_back_although_it_scored_nothing():
    canary = metrics(CANARY, errors=1000, scores=[0, 0, 0, 0, 0], fraud=0, legit=0)
    decision = decide(metrics(STABLE), canary)
    assert decision.decision is analysis.Decision.ROLLBACK
    assert decision.check("score_ks").outcome is analysis.Outcome.INSUFFICIENT
    assert decision.check("error_rate").outcome is analysis.Outcome.FAIL


def test_missing_latency_data_is_inconclusive_not_promote():
    decision = decide(metrics(STABLE), metrics(CANARY, p99=None))
    assert decision.decision is analysis.Decision.INCONCLUSIVE
    assert decision.reasons[0].startswith("p99 latency: no latency data")


def test_thresholds_are_configurable_and_checked():
    tight = decide(metrics(STABLE), metrics(CANARY, errors=5), max_error_rate_increase=0.001)
    assert tight.decision is analysis.Decision.ROLLBACK
    assert decide(metrics(STABLE), metrics(CANARY), min_requests=5000).decision is analysis.Decision.INCONCLUSIVE
    with pytest.raises(ValueError, match="max_error_rate_ratio"):
        analysis.Thresholds(max_error_rate_ratio=-1)
    with pytest.raises(ValueError, match="max_score_ks"):
        analysis.Thresholds(max_score_ks=1.5)


def test_decision_serialises_every_check_and_metric():
    decision = decide(metrics(STABLE), metrics(CANARY, errors=60))
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["decision"] == "rollback"
    assert data["source"] == "analysis"
    assert (data["stable_version"], data["canary_version"], data["window"]) == (STABLE, CANARY, "10m")
    assert data["thresholds"]["max_error_rate_increase"] == 0.01
    assert data["canary"]["error_rate"] == pytest.approx(0.06)
    assert data["canary"]["score_buckets"][-1] == ["+Inf", 1000.0]
    error_check = next(c for c in data["checks"] if c["name"] == "error_rate")
    assert error_check == {
        "name": "error_rate",
        "outcome": "fail",
        "passed": False,
        "value": pytest.approx(0.06),
        "threshold": pytest.approx(0.01),
        "canary": pytest.approx(0.06),
        "stable": 0.0,
        "reason": error_check["reason"],
    }


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("1h30m", 5400), ("500ms", 0.5)])
def test_parse_duration(text, seconds):
    assert analysis.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "5x", "m10", "0s", "10m;drop", "1h 30m"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="window"):
        analysis.parse_duration(text)


def test_queries_select_one_version_and_escape_labels():
    queries = prometheus.version_queries(MODEL, 'v"1', "5m", namespace="fraud-detection")
    for query in queries.values():
        assert 'model_name="fraud-detector"' in query
        assert 'model_version="v\\"1"' in query
        assert 'namespace="fraud-detection"' in query
    assert queries["requests"] == (
        'sum(increase(fraud_serving_requests_total{model_name="fraud-detector",model_version="v\\"1",'
        'namespace="fraud-detection"}[5m]))'
    )
    assert "namespace" not in prometheus.version_queries(MODEL, "v1", "5m")["errors"]
    with pytest.raises(ValueError, match="window"):
        prometheus.version_queries(MODEL, "v1", "5 minutes")
