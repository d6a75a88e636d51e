"""Canary rollout: decision logic on fixed metric values, Prometheus API handling, InferenceService JSON patches
(validated against KServe's CRD schema after being applied to the chart's own InferenceService), the records and
annotations a decision leaves, and the `fraud rollout` commands.

The cluster is replaced by an in-memory fake that applies each JSON patch and validates the result against the
CRD, and once by a loopback HTTP server behind the real ``kubernetes`` client (to check what goes on the wire).
Prometheus is replaced by a loopback server answering canned values; the real one is in
tests/integration/test_rollout_prometheus.py.
"""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.rollout import analysis, canary, contract, errors, kube, patches, prometheus, records
from fraud_detection.store.local import LocalStore
from tests import k8s

MODEL = "fraud-detector"
STABLE, CANARY = "20260101-000000-aaaaaaaa", "20260201-000000-bbbbbbbb"
runner = CliRunner()

# RFC 6902 operations as the rollout emits them (add/remove/replace/test only).
JSON_PATCH_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["op", "path"],
        "additionalProperties": False,
        "properties": {
            "op": {"enum": ["add", "remove", "replace", "test"]},
            "path": {"type": "string", "pattern": "^(/([^~/]|~[01])*)+$"},
            "value": {},
        },
        "allOf": [
            {"if": {"properties": {"op": {"enum": ["add", "replace", "test"]}}}, "then": {"required": ["value"]}},
            {"if": {"properties": {"op": {"const": "remove"}}}, "then": {"not": {"required": ["value"]}}},
        ],
    },
}


# ------------------------------------------------------------------------------------------------- fixtures


def metrics(
    version: str,
    *,
    requests: float = 1000,
    errors: float = 0,
    p99: float | None = 0.02,
    scores: list[float] | None = None,
    fraud: float = 20,
    legit: float = 980,
    alerts: tuple[str, ...] = (),
) -> analysis.VersionMetrics:
    """Version metrics with a score histogram from per-bucket counts (bounds 0.01, 0.1, 0.5, 1, +Inf)."""
    per_bucket = scores if scores is not None else [700, 200, 80, 20, 0]
    bounds = [0.01, 0.1, 0.5, 1.0, math.inf]
    cumulative, total = [], 0.0
    for le, count in zip(bounds, per_bucket, strict=True):
        total += count
        cumulative.append((le, total))
    return analysis.VersionMetrics(
        version=version,
        requests=requests,
        errors=errors,
        p99_latency_seconds=p99,
        score_buckets=tuple(cumulative),
        predictions={"fraud": fraud, "legit": legit},
        firing_alerts=alerts,
    )


def decide(stable: analysis.VersionMetrics, canary: analysis.VersionMetrics, **limits: Any) -> analysis.RolloutDecision:
    return analysis.decide(stable, canary, analysis.Thresholds(**limits), model_name=MODEL, window="10m")


@pytest.fixture(scope="module")
def chart_isvc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The InferenceService exactly as the Helm chart renders it, serving STABLE, with a KServe-like status."""
    chart = k8s.materialize_chart(tmp_path_factory.mktemp("chart") / "fraud-detection")
    objects = k8s.helm_template(chart, set_values=[f"model.version={STABLE}"])
    isvc = k8s.one(objects, "InferenceService")
    assert not k8s.validate_object(isvc)
    isvc["metadata"]["generation"] = 1
    isvc["status"] = {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {
            "predictor": {
                "latestCreatedRevision": "fraud-detector-predictor-00001",
                "latestReadyRevision": "fraud-detector-predictor-00001",
                "latestRolledoutRevision": "fraud-detector-predictor-00001",
                "traffic": [{"revisionName": "fraud-detector-predictor-00001", "percent": 100, "latestRevision": True}],
            }
        },
    }
    return isvc


def valid(obj: dict[str, Any]) -> dict[str, Any]:
    """The object minus its status, after asserting it satisfies the KServe CRD (unknown fields rejected)."""
    spec_only = {k: v for k, v in obj.items() if k != "status"}
    errors = k8s.validate_object(spec_only)
    assert not errors, errors
    return obj


class FakeCluster:
    """The two CustomObjectsApi calls, on one in-memory InferenceService, with KServe's revision bookkeeping.

    A spec change creates a revision that becomes ready after ``ready_after`` reads (never when None). Traffic
    follows KServe: with ``canaryTrafficPercent`` the latest ready revision gets that share and the last
    rolled-out one the rest; without it the latest ready revision gets everything.
    """

    def __init__(self, obj: dict[str, Any], ready_after: int | None = 0) -> None:
        self.obj = copy.deepcopy(obj)
        self.ready_after = ready_after
        self.patches: list[list[dict[str, Any]]] = []
        self._pending: tuple[str, int] | None = None  # (revision, reads left)
        self._revision = 1
        self._route()

    def _component(self) -> dict[str, Any]:
        return self.obj["status"]["components"]["predictor"]

    def _route(self) -> None:
        comp = self._component()
        percent = self.obj["spec"]["predictor"].get("canaryTrafficPercent")
        ready = comp["latestReadyRevision"]
        rolled = comp["latestRolledoutRevision"]
        if percent is None or ready == rolled:
            comp["traffic"] = [{"revisionName": ready, "percent": 100}]
            if percent is None:
                comp["latestRolledoutRevision"] = ready
        else:
            comp["traffic"] = [
                {"revisionName": ready, "percent": percent, "tag": "latest"},
                {"revisionName": rolled, "percent": 100 - percent, "tag": "prev"},
            ]

    def served_share(self, revision: str) -> int:
        return sum(t["percent"] for t in self._component()["traffic"] if t["revisionName"] == revision)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural) == ("serving.kserve.io", "v1beta1", "inferenceservices")
        assert (namespace, name) == (self.obj["metadata"]["namespace"], self.obj["metadata"]["name"])
        if self._pending is not None:
            revision, left = self._pending
            if left <= 0:
                self._component()["latestReadyRevision"] = revision
                self.obj["status"]["observedGeneration"] = self.obj["metadata"]["generation"]
                self._pending = None
                self._route()
            else:
                self._pending = (revision, left - 1)
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        from kubernetes.client.exceptions import ApiException

        assert isinstance(body, list), "the rollout must send JSON patches, never merge patches"
        jsonschema.validate(body, JSON_PATCH_SCHEMA)
        try:
            new = jsonpatch.apply_patch(self.obj, body)
        except jsonpatch.JsonPatchException as exc:
            raise ApiException(status=422, reason=str(exc)) from exc
        valid(new)
        self.patches.append(body)
        if new["spec"] != self.obj["spec"]:
            new["metadata"]["generation"] += 1
            self._revision += 1
            revision = f"fraud-detector-predictor-{self._revision:05d}"
            new["status"]["components"]["predictor"]["latestCreatedRevision"] = revision
            if self.ready_after is not None:
                self._pending = (revision, self.ready_after)
        self.obj = new
        self._route()
        return copy.deepcopy(self.obj)


def client_for(cluster: FakeCluster) -> kube.InferenceServiceClient:
    meta = cluster.obj["metadata"]
    return kube.InferenceServiceClient(meta["namespace"], meta["name"], cluster, cluster)


def make_registry(root: Path, *versions: str) -> ModelRegistry:
    store = LocalStore(root)
    for version in versions:
        store.write_bytes(f"models/{MODEL}/versions/{version}/MANIFEST.json", b'{"files": {}}')
    return ModelRegistry(store, MODEL)


def alias(registry: ModelRegistry, name: str, key: str = "version") -> Any:
    record = registry.get_alias(name)
    assert record is not None, f"alias {name} is not set"
    return record[key]


def env(obj: dict[str, Any]) -> dict[str, Any]:
    return k8s.env_of(obj["spec"]["predictor"]["containers"][0])


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


# ------------------------------------------------------------------------------------------ fake Prometheus


class _JsonHandler(BaseHTTPRequestHandler):
    """A quiet loopback handler answering JSON."""

    def _send(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


class _PromHandler(_JsonHandler):
    answer: Callable[[str], Any]
    seen: list[str]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        query = form["query"][0]
        self.seen.append(query)
        self._send(*self.answer(query))


def vector(*series: tuple[dict[str, str], float | str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": m, "value": [0, str(v)]} for m, v in series]},
    }


def canned(by_version: dict[str, analysis.VersionMetrics]) -> Callable[[str], Any]:
    """Answer the rollout's queries from VersionMetrics, keyed by the queried model_version."""

    def answer(query: str) -> tuple[int, Any]:
        version = re.search(r'model_version="([^"]*)"', query)
        m = by_version.get(version.group(1)) if version else None
        if m is None:
            return 200, vector()
        if "fraud_serving_requests_total" in query:
            return 200, vector(({}, m.requests))
        if "fraud_serving_errors_total" in query:
            return 200, vector(({}, m.errors)) if m.errors else vector()
        if "histogram_quantile" in query:
            return 200, vector(({}, "NaN" if m.p99_latency_seconds is None else m.p99_latency_seconds))
        if "fraud_serving_score_ratio_bucket" in query:
            return 200, vector(*[({"le": "+Inf" if math.isinf(le) else str(le)}, c) for le, c in m.score_buckets])
        if "fraud_serving_predictions_total" in query:
            return 200, vector(*[({"decision": d}, v) for d, v in m.predictions.items()])
        if query.startswith("count by (alertname) (ALERTS"):
            return 200, vector(*[({"alertname": a}, 1) for a in m.firing_alerts])
        return 400, {"status": "error", "errorType": "bad_data", "error": f"unexpected query {query}"}

    return answer


@pytest.fixture
def fake_prometheus() -> Iterator[Callable[[Callable[[str], Any]], tuple[str, list[str]]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[str], Any]) -> tuple[str, list[str]]:
        seen: list[str] = []
        handler = type("Handler", (_PromHandler,), {"answer": staticmethod(answer), "seen": seen})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


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


def _closed_port() -> int:
    from tests.helpers.net import free_port

    return free_port()


# --------------------------------------------------------------------------------------- JSON patch applier


def test_the_chart_renders_what_the_rollout_expects(chart_isvc):
    state = patches.read_state(chart_isvc)
    assert state.model_version == STABLE
    assert state.storage_uri == f"s3://fraud-detection/models/{MODEL}/versions/{STABLE}"
    assert state.canary_percent is None and not state.canary_running
    assert chart_isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


def test_canary_patch_is_a_guarded_json_patch_that_keeps_the_container(chart_isvc):
    patch = patches.canary_patch(chart_isvc, CANARY, 10)
    jsonschema.validate(patch, JSON_PATCH_SCHEMA)
    assert {"op": "test", "path": "/spec/predictor/containers/0/name", "value": "kserve-container"} in patch
    assert not any(op["path"] == "/spec/predictor/containers" for op in patch), "never replace the containers"
    out = valid(jsonpatch.apply_patch(chart_isvc, patch))
    before, after = chart_isvc["spec"]["predictor"]["containers"][0], out["spec"]["predictor"]["containers"][0]
    assert env(out)["STORAGE_URI"] == f"s3://fraud-detection/models/{MODEL}/versions/{CANARY}"
    assert env(out)["FRAUD_MODEL_VERSION"] == CANARY
    assert out["spec"]["predictor"]["canaryTrafficPercent"] == 10
    # Everything else of the container is untouched (image, args, probes, the other env vars in their order).
    assert {k: v for k, v in after.items() if k != "env"} == {k: v for k, v in before.items() if k != "env"}
    assert [e["name"] for e in after["env"]] == [e["name"] for e in before["env"]]
    changed = [a for a, b in zip(after["env"], before["env"], strict=True) if a != b]
    assert {e["name"] for e in changed} == {"STORAGE_URI", "FRAUD_MODEL_VERSION"}
    annotations = out["metadata"]["annotations"]
    assert annotations[contract.ANNOTATION_STABLE] == STABLE
    assert annotations[contract.ANNOTATION_CANARY] == CANARY
    assert annotations["fraud-detection.io/model-version"] == CANARY  # what deploy.served_version reads
    assert annotations["serving.kserve.io/deploymentMode"] == "Serverless"


def test_canary_patch_fails_when_the_env_moved_meanwhile(chart_isvc):
    patch = patches.canary_patch(chart_isvc, CANARY, 10)
    moved = copy.deepcopy(chart_isvc)
    moved["spec"]["predictor"]["containers"][0]["env"].insert(0, {"name": "EXTRA", "value": "1"})
    with pytest.raises(jsonpatch.JsonPatchTestFailed, match="is not equal to tested value"):
        jsonpatch.apply_patch(moved, patch)


@pytest.mark.parametrize("percent", [0, 100, -5])
def test_canary_patch_rejects_percentages(chart_isvc, percent):
    with pytest.raises(ValueError, match="between 1 and 99"):
        patches.canary_patch(chart_isvc, CANARY, percent)


def test_canary_patch_refuses_the_same_version_and_foreign_layouts(chart_isvc):
    with pytest.raises(errors.RolloutError, match="already serves"):
        patches.canary_patch(chart_isvc, STABLE)
    odd = copy.deepcopy(chart_isvc)
    for item in odd["spec"]["predictor"]["containers"][0]["env"]:
        if item["name"] == "STORAGE_URI":
            item["value"] = "s3://bucket/model.joblib"
    with pytest.raises(errors.RolloutError, match="does not follow"):
        patches.canary_patch(odd, CANARY)
    renamed = copy.deepcopy(chart_isvc)
    renamed["spec"]["predictor"]["containers"][0]["name"] = "main"
    with pytest.raises(errors.RolloutError, match="kserve-container"):
        patches.canary_patch(renamed, CANARY)


def test_the_crd_check_catches_a_bad_patch(chart_isvc):
    """The validation used throughout can fail: a string percentage and an unknown field are rejected."""
    bad = jsonpatch.apply_patch(
        chart_isvc, [{"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": "10"}]
    )
    assert any(
        "canaryTrafficPercent" in e for e in k8s.validate_object({k: v for k, v in bad.items() if k != "status"})
    )
    bad = jsonpatch.apply_patch(chart_isvc, [{"op": "add", "path": "/spec/predictor/canaryPercent", "value": 10}])
    assert k8s.validate_object({k: v for k, v in bad.items() if k != "status"})


def _in_canary(chart_isvc: dict[str, Any]) -> dict[str, Any]:
    return jsonpatch.apply_patch(chart_isvc, patches.canary_patch(chart_isvc, CANARY, 10))


def test_promote_patch_removes_the_split_and_records_the_decision(chart_isvc):
    canary = _in_canary(chart_isvc)
    annotations = {
        contract.ANNOTATION_DECISION: "promote",
        contract.ANNOTATION_REASONS: '["ok"]',
        contract.ANNOTATION_TIME: "t",
    }
    patch = patches.promote_patch(canary, CANARY, annotations)
    jsonschema.validate(patch, JSON_PATCH_SCHEMA)
    out = valid(jsonpatch.apply_patch(canary, patch))
    assert "canaryTrafficPercent" not in out["spec"]["predictor"]
    assert env(out)["FRAUD_MODEL_VERSION"] == CANARY
    assert out["spec"]["predictor"]["containers"] == canary["spec"]["predictor"]["containers"]  # no new revision
    meta = out["metadata"]["annotations"]
    assert meta[contract.ANNOTATION_DECISION] == "promote" and meta[contract.ANNOTATION_STABLE] == CANARY
    assert contract.ANNOTATION_CANARY not in meta
    assert meta["fraud-detection.io/model-version"] == CANARY


def test_rollback_patch_pins_traffic_and_restores_the_stable_spec(chart_isvc):
    canary = _in_canary(chart_isvc)
    patch = patches.rollback_patch(canary, STABLE, {contract.ANNOTATION_DECISION: "rollback"})
    jsonschema.validate(patch, JSON_PATCH_SCHEMA)
    out = valid(jsonpatch.apply_patch(canary, patch))
    assert out["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert env(out)["FRAUD_MODEL_VERSION"] == STABLE
    assert out["spec"]["predictor"]["containers"] == chart_isvc["spec"]["predictor"]["containers"]
    assert out["metadata"]["annotations"]["fraud-detection.io/model-version"] == STABLE
    finished = valid(jsonpatch.apply_patch(out, patches.finish_rollback_patch(out)))
    assert "canaryTrafficPercent" not in finished["spec"]["predictor"]
    assert finished["spec"] == chart_isvc["spec"]
    assert patches.finish_rollback_patch(finished) == []


def test_annotation_ops_escape_keys_and_create_the_map():
    ops = patches.annotation_ops({"metadata": {}}, {"a/b": "1", "gone": None})
    assert ops == [{"op": "add", "path": "/metadata/annotations", "value": {"a/b": "1"}}]
    ops = patches.annotation_ops(
        {"metadata": {"annotations": {"gone": "x"}}}, {"a/b": "1", "gone": None, "absent": None}
    )
    assert ops == [
        {"op": "add", "path": "/metadata/annotations/a~1b", "value": "1"},
        {"op": "remove", "path": "/metadata/annotations/gone"},
    ]


# -------------------------------------------------------------------------------- actions on a fake cluster


def test_start_canary_patches_the_service_and_moves_the_canary_alias(chart_isvc, tmp_path):
    cluster = FakeCluster(chart_isvc)
    registry = make_registry(tmp_path, STABLE, CANARY)
    result = canary.start_canary(client_for(cluster), CANARY, percent=15, registry=registry)
    assert (result.stable_version, result.canary_version, result.percent, result.applied) == (STABLE, CANARY, 15, True)
    assert cluster.obj["spec"]["predictor"]["canaryTrafficPercent"] == 15
    assert alias(registry, "canary", "version") == CANARY
    cluster.get_namespaced_custom_object("serving.kserve.io", "v1beta1", "fraud-detection", "inferenceservices", MODEL)
    assert cluster.served_share("fraud-detector-predictor-00002") == 15
    assert cluster.served_share("fraud-detector-predictor-00001") == 85


def test_start_canary_refuses_unknown_versions_running_canaries_and_dry_runs_change_nothing(chart_isvc, tmp_path):
    cluster = FakeCluster(chart_isvc)
    registry = make_registry(tmp_path, STABLE, CANARY)
    with pytest.raises(errors.RolloutError, match="not complete"):
        canary.start_canary(client_for(cluster), "nope", registry=registry)
    dry = canary.start_canary(client_for(cluster), CANARY, registry=registry, dry_run=True)
    assert not dry.applied and dry.patch and not cluster.patches
    assert registry.get_alias("canary") is None
    canary.start_canary(client_for(cluster), CANARY, registry=registry)
    third = "20260301-000000-cccccccc"
    with pytest.raises(errors.RolloutError, match="runs already"):
        canary.start_canary(client_for(cluster), third)
    replaced = canary.start_canary(client_for(cluster), third, force=True)
    assert replaced.stable_version == STABLE  # the stable version survives a replaced canary
    assert cluster.obj["metadata"]["annotations"][contract.ANNOTATION_STABLE] == STABLE


def _started(chart_isvc, tmp_path, ready_after: int | None = 0) -> tuple[FakeCluster, ModelRegistry]:
    cluster = FakeCluster(chart_isvc, ready_after=ready_after)
    registry = make_registry(tmp_path / "store", STABLE, CANARY)
    registry.set_alias("production", STABLE)
    canary.start_canary(client_for(cluster), CANARY, registry=registry)
    cluster.get_namespaced_custom_object("serving.kserve.io", "v1beta1", "fraud-detection", "inferenceservices", MODEL)
    return cluster, registry


def test_promote_sends_everything_to_the_canary_and_records_why(chart_isvc, tmp_path):
    cluster, registry = _started(chart_isvc, tmp_path)
    decision = decide(metrics(STABLE), metrics(CANARY))
    record = canary.apply_decision(
        decision, isvc=client_for(cluster), registry=registry, store=registry.store, extra={"prometheus_url": "x"}
    )
    assert cluster.served_share("fraud-detector-predictor-00002") == 100
    assert "canaryTrafficPercent" not in cluster.obj["spec"]["predictor"]
    assert alias(registry, "production", "version") == CANARY
    assert alias(registry, "production", "previous") == STABLE
    assert registry.get_alias("canary") is None
    # The record in the store, atomic and complete.
    keys = registry.store.list(f"rollouts/{MODEL}/")
    assert keys == [record["record_key"]]
    assert re.fullmatch(rf"rollouts/{MODEL}/\d{{8}}T\d{{12}}Z\.json", keys[0])
    stored = json.loads(registry.store.read_bytes(keys[0]), parse_constant=_no_nan)
    assert stored["decision"] == "promote" and stored["completed"] is True and stored["error"] is None
    assert stored["prometheus_url"] == "x"
    assert stored["inference_service"] == f"fraud-detection/{MODEL}"
    assert [a["action"] for a in stored["actions"]] == ["promote", "alias", "alias-removed"]
    assert {c["name"]: c["outcome"] for c in stored["checks"]}["error_rate"] == "pass"
    assert stored["service_before"]["canary_percent"] == 10
    # The annotations on the InferenceService.
    annotations = cluster.obj["metadata"]["annotations"]
    assert annotations[contract.ANNOTATION_DECISION] == "promote"
    assert json.loads(annotations[contract.ANNOTATION_REASONS]) == list(decision.reasons)
    assert annotations[contract.ANNOTATION_TIME] == decision.decided_at
    assert annotations[contract.ANNOTATION_RECORD] == keys[0]
    assert records.latest_records(registry.store, MODEL)[0]["record_key"] == keys[0]


def _no_nan(name: str) -> None:
    raise AssertionError(f"{name} in a rollout record (not JSON)")


def test_rollback_pins_traffic_waits_for_the_restored_revision_then_releases(chart_isvc, tmp_path, monkeypatch):
    cluster, registry = _started(chart_isvc, tmp_path, ready_after=2)
    registry.set_alias("production", CANARY)  # as if the training pipeline had moved it already
    decision = decide(metrics(STABLE), metrics(CANARY, errors=100))
    sleeps: list[float] = []
    isvc = client_for(cluster)
    original_wait = isvc.wait_latest_ready

    def observed_wait(generation, timeout, *, interval=5.0):
        # Right after the first patch, before the restored revision is ready, the canary gets nothing.
        assert cluster.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
        assert cluster.served_share("fraud-detector-predictor-00001") == 100
        return original_wait(generation, timeout, interval=interval, sleep=sleeps.append)

    monkeypatch.setattr(isvc, "wait_latest_ready", observed_wait)
    record = canary.apply_decision(decision, isvc=isvc, registry=registry, store=registry.store, poll_interval=1)
    assert sleeps == [1, 1]
    assert "canaryTrafficPercent" not in cluster.obj["spec"]["predictor"]
    assert cluster.served_share("fraud-detector-predictor-00003") == 100
    assert env(cluster.obj)["FRAUD_MODEL_VERSION"] == STABLE
    assert alias(registry, "production", "version") == STABLE
    assert registry.get_alias("canary") is None
    assert [a["action"] for a in record["actions"]] == ["pin-stable", "release-pin", "alias", "alias-removed"]
    annotations = cluster.obj["metadata"]["annotations"]
    assert annotations[contract.ANNOTATION_DECISION] == "rollback"
    assert "error rate" in json.loads(annotations[contract.ANNOTATION_REASONS])[0]


def test_a_rollback_whose_revision_never_gets_ready_stays_pinned_and_says_so(chart_isvc, tmp_path):
    cluster, registry = _started(chart_isvc, tmp_path, ready_after=None)
    isvc = client_for(cluster)
    decision = decide(metrics(STABLE), metrics(CANARY, errors=100))
    with pytest.raises(errors.RolloutError, match="not ready within 0 s"):
        canary.apply_decision(decision, isvc=isvc, registry=registry, store=registry.store, wait_seconds=0)
    assert cluster.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert cluster.served_share("fraud-detector-predictor-00001") == 100
    stored = records.latest_records(registry.store, MODEL)[0]
    assert stored["completed"] is False and "RolloutError" in stored["error"]
    # Once the revision is ready, rolling back again finishes the job.
    cluster.ready_after = 0
    cluster._pending = (cluster.obj["status"]["components"]["predictor"]["latestCreatedRevision"], 0)
    manual = canary.manual_decision(
        analysis.Decision.ROLLBACK, model_name=MODEL, stable_version=STABLE, canary_version=CANARY, reason="finish"
    )
    canary.apply_decision(manual, isvc=isvc, registry=registry, store=registry.store, wait_seconds=0)
    assert "canaryTrafficPercent" not in cluster.obj["spec"]["predictor"]
    assert records.latest_records(registry.store, MODEL)[0]["reasons"] == ["manual rollback: finish"]


def test_inconclusive_only_annotates(chart_isvc, tmp_path):
    cluster, registry = _started(chart_isvc, tmp_path)
    spec_before = copy.deepcopy(cluster.obj["spec"])
    decision = decide(metrics(STABLE), metrics(CANARY, requests=5))
    record = canary.apply_decision(decision, isvc=client_for(cluster), registry=registry, store=registry.store)
    assert cluster.obj["spec"] == spec_before
    assert cluster.obj["metadata"]["annotations"][contract.ANNOTATION_DECISION] == "inconclusive"
    assert alias(registry, "canary", "version") == CANARY and alias(registry, "production", "version") == STABLE
    assert [a["action"] for a in record["actions"]] == ["annotate"]


def test_promote_refuses_without_a_ready_canary(chart_isvc, tmp_path):
    cluster, registry = _started(chart_isvc, tmp_path, ready_after=None)
    with pytest.raises(errors.RolloutError, match="not ready"):
        canary.apply_decision(
            decide(metrics(STABLE), metrics(CANARY)), isvc=client_for(cluster), registry=registry, store=registry.store
        )
    assert cluster.obj["spec"]["predictor"]["canaryTrafficPercent"] == 10
    plain = FakeCluster(chart_isvc)
    with pytest.raises(errors.RolloutError, match="nothing to promote"):
        canary.apply_decision(
            decide(metrics(STABLE), metrics(CANARY)), isvc=client_for(plain), registry=None, store=registry.store
        )


def test_resolve_versions(chart_isvc, tmp_path):
    cluster, registry = _started(chart_isvc, tmp_path)
    state = patches.read_state(cluster.obj)
    assert canary.resolve_versions(state, None) == (STABLE, CANARY)
    assert canary.resolve_versions(None, registry) == (STABLE, CANARY)
    assert canary.resolve_versions(None, None, stable_version="a", canary_version="b") == ("a", "b")
    # A canary started by deploy.py (no rollout annotations) after the pipeline moved `production` to it.
    registry.set_alias("production", CANARY)
    bare = copy.deepcopy(cluster.obj)
    del bare["metadata"]["annotations"][contract.ANNOTATION_STABLE]
    assert canary.resolve_versions(patches.read_state(bare), registry) == (STABLE, CANARY)
    with pytest.raises(errors.RolloutError, match="cannot tell"):
        canary.resolve_versions(patches.read_state(chart_isvc), None)
    with pytest.raises(errors.RolloutError, match="both"):
        canary.resolve_versions(None, None, stable_version="a", canary_version="a")


def test_api_errors_become_rollout_errors(chart_isvc):
    from kubernetes.client.exceptions import ApiException

    class Forbidden:
        def get_namespaced_custom_object(self, *args):
            raise ApiException(status=403, reason="Forbidden")

    isvc = kube.InferenceServiceClient("fraud-detection", MODEL, Forbidden(), Forbidden())  # type: ignore[arg-type]
    with pytest.raises(errors.RolloutError, match="HTTP 403: the identity lacks get/patch"):
        isvc.get()
    cluster = FakeCluster(chart_isvc)
    patch = patches.canary_patch(chart_isvc, CANARY)
    cluster.obj["spec"]["predictor"]["containers"][0]["env"].reverse()  # a concurrent edit
    with pytest.raises(errors.RolloutError, match="HTTP 422"):
        client_for(cluster).patch(patch)


# --------------------------------------------------------------- the real kubernetes client on the wire


class _KubeHandler(_JsonHandler):
    state: dict[str, Any]

    def do_GET(self) -> None:
        self.state["requests"].append(("GET", self.path, self.headers.get("Content-Type"), None))
        self._send(200, self.state["obj"])

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.state["requests"].append(("PATCH", self.path, self.headers.get("Content-Type"), body))
        if self.headers.get("Content-Type") != "application/json-patch+json":
            self._send(415, {"kind": "Status", "message": "unsupported"})
            return
        self.state["obj"] = jsonpatch.apply_patch(self.state["obj"], body)
        self._send(200, self.state["obj"])


def test_the_kubernetes_client_sends_json_patches(chart_isvc):
    from kubernetes import client

    state: dict[str, Any] = {"obj": copy.deepcopy(chart_isvc), "requests": []}
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_KubeHandler,), {"state": state}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
        isvc = kube.InferenceServiceClient.from_configuration("fraud-detection", MODEL, configuration)
        canary.start_canary(isvc, CANARY, percent=20)
    finally:
        server.shutdown()
        server.server_close()
    path = f"/apis/serving.kserve.io/v1beta1/namespaces/fraud-detection/inferenceservices/{MODEL}"
    assert [(m, p) for m, p, _, _ in state["requests"]] == [("GET", path), ("PATCH", path)]
    _, _, content_type, body = state["requests"][1]
    assert content_type == "application/json-patch+json"
    assert body == patches.canary_patch(chart_isvc, CANARY, 20)
    assert state["obj"]["spec"]["predictor"]["canaryTrafficPercent"] == 20


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_analyse_without_a_cluster_prints_and_writes_the_decision(fake_prometheus, tmp_path):
    url, seen = fake_prometheus(canned({STABLE: metrics(STABLE), CANARY: metrics(CANARY, errors=80)}))
    out = tmp_path / "decision.json"
    result = runner.invoke(
        app,
        [
            "rollout",
            "analyse",
            "--no-cluster",
            "--prometheus-url",
            url,
            "--store",
            str(tmp_path / "store"),
            "--stable-version",
            STABLE,
            "--canary-version",
            CANARY,
            "--window",
            "20m",
            "--metrics-namespace",
            "",
            "--min-requests",
            "10",
            "--output-json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rollback" in result.output and "error_rate" in result.output
    data = json.loads(out.read_text())
    assert data["decision"] == "rollback" and data["thresholds"]["min_requests"] == 10
    assert seen and not any("namespace=" in q for q in seen)
    assert not (tmp_path / "store").exists(), "analysing without --apply records nothing"


def test_cli_matches_the_metrics_namespace_by_default(fake_prometheus, tmp_path):
    url, seen = fake_prometheus(canned({}))
    result = runner.invoke(
        app,
        [
            *("rollout", "analyse", "--no-cluster", "--prometheus-url", url, "--store", str(tmp_path)),
            *("--stable-version", STABLE, "--canary-version", CANARY, "-n", "payments"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "inconclusive" in result.output
    assert all('namespace="payments"' in q for q in seen)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analyse", "--window", "5x", "--no-cluster", "--stable-version", "a", "--canary-version", "b"], "window"),
        (["analyse", "--no-cluster", "--stable-version", "a", "--canary-version", "b"], "no Prometheus URL"),
        (
            ["analyse", "--no-cluster", "--apply", "--prometheus-url", "http://127.0.0.1:9", "--stable-version", "a"],
            "--apply",
        ),
        (["analyse", "--no-cluster", "--prometheus-url", "http://127.0.0.1:9"], "cannot tell the versions apart"),
        (
            [
                *("analyse", "--no-cluster", "--prometheus-url", "http://127.0.0.1:9"),
                *("--stable-version", "a", "--canary-version", "b"),
            ],
            "cannot reach Prometheus",
        ),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(args, message, tmp_path, monkeypatch):
    monkeypatch.delenv("FRAUD_PROMETHEUS_URL", raising=False)
    result = runner.invoke(app, ["rollout", *args, "--store", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_cli_percent_out_of_range_is_rejected():
    result = runner.invoke(app, ["rollout", "start", "--model-version", CANARY, "--percent", "100"])
    assert result.exit_code == 2
    assert "percent" in result.output


def test_cli_status_without_a_cluster_shows_aliases_and_the_latest_decision(tmp_path):
    registry = make_registry(tmp_path, STABLE, CANARY)
    registry.set_alias("production", STABLE)
    registry.set_alias("canary", CANARY)
    decision = decide(metrics(STABLE), metrics(CANARY, errors=90))
    canary.apply_decision(decision, isvc=None, registry=registry, store=registry.store)
    result = runner.invoke(app, ["rollout", "status", "--no-cluster", "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["aliases"] == {"production": STABLE, "canary": None}
    assert data["latest_decision"]["decision"] == "rollback"
    assert data["latest_decision"]["reasons"][0].startswith("error rate")


def test_importing_rollout_stays_light():
    code = (
        "import sys, fraud_detection.rollout, cli.rollout; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'requests', 'rich', 'sklearn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_manual_decisions_are_promote_or_rollback():
    with pytest.raises(ValueError, match="promote or rollback"):
        canary.manual_decision(
            analysis.Decision.INCONCLUSIVE, model_name=MODEL, stable_version="a", canary_version="b", reason=""
        )
    decision = canary.manual_decision(
        analysis.Decision.PROMOTE, model_name=MODEL, stable_version="a", canary_version="b", reason="hotfix"
    )
    assert decision.source == "manual" and decision.checks == () and decision.reasons == ("manual promote: hotfix",)
    assert replace(decision, window="1m").to_dict()["window"] == "1m"


@pytest.mark.parametrize(
    ("by_version", "expected_exit", "analyses"),
    [
        ({STABLE: metrics(STABLE), CANARY: metrics(CANARY)}, 0, 1),  # promoted at the first analysis
        ({}, 3, 2),  # never any traffic: inconclusive twice, the canary keeps running
    ],
)
def test_cli_run_starts_analyses_and_acts(
    by_version, expected_exit, analyses, chart_isvc, tmp_path, fake_prometheus, monkeypatch
):
    import time

    url, _ = fake_prometheus(canned(by_version))
    cluster = FakeCluster(chart_isvc)
    registry = make_registry(tmp_path, STABLE, CANARY)
    registry.set_alias("production", STABLE)
    monkeypatch.setattr(kube.InferenceServiceClient, "connect", classmethod(lambda cls, ns, name: client_for(cluster)))
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    result = runner.invoke(
        app,
        [
            *("rollout", "run", "--model-version", CANARY, "--window", "90s", "--max-analyses", "2"),
            *("--prometheus-url", url, "--store", str(tmp_path), "--metrics-namespace", ""),
        ],
    )
    assert result.exit_code == expected_exit, result.output
    assert slept == [90.0] * analyses
    stored = records.latest_records(registry.store, MODEL, limit=10)
    expected = ["promote"] if expected_exit == 0 else ["inconclusive"] * 2
    assert [r["decision"] for r in stored] == expected
    if expected_exit == 0:
        assert "canaryTrafficPercent" not in cluster.obj["spec"]["predictor"]
        assert alias(registry, "production") == CANARY
    else:
        assert cluster.obj["spec"]["predictor"]["canaryTrafficPercent"] == 10
        assert "still inconclusive" in result.output
