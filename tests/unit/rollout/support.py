"""What the rollout tests share: canned metrics, the chart's InferenceService, fakes of cluster and Prometheus."""

from __future__ import annotations

import copy
import json
import math
import re
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
from typer.testing import CliRunner

from fraud_detection.model.registry import ModelRegistry
from fraud_detection.rollout import analysis, canary, kube, patches
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


def _closed_port() -> int:
    from tests.helpers.net import free_port

    return free_port()


def _in_canary(chart_isvc: dict[str, Any]) -> dict[str, Any]:
    return jsonpatch.apply_patch(chart_isvc, patches.canary_patch(chart_isvc, CANARY, 10))


def _started(chart_isvc, tmp_path, ready_after: int | None = 0) -> tuple[FakeCluster, ModelRegistry]:
    cluster = FakeCluster(chart_isvc, ready_after=ready_after)
    registry = make_registry(tmp_path / "store", STABLE, CANARY)
    registry.set_alias("production", STABLE)
    canary.start_canary(client_for(cluster), CANARY, registry=registry)
    cluster.get_namespaced_custom_object("serving.kserve.io", "v1beta1", "fraud-detection", "inferenceservices", MODEL)
    return cluster, registry


def _no_nan(name: str) -> None:
    raise AssertionError(f"{name} in a rollout record (not JSON)")


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
