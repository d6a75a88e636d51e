"""The Istio AuthorizationPolicies of the predictor: default deny, explicit allows, robust to path encodings.

No CRD schema of Istio is vendored under tests/schemas/, so the policies are checked in two ways:

* structurally, against the fields of Istio's reference
  (https://istio.io/latest/docs/reference/config/security/authorization-policy/): only documented fields, string
  matches of the supported forms (exact, ``prefix*``, ``*suffix``, ``*``: a ``*`` inside a value such as ``*%2F*``
  is no wildcard there), ports as strings;
* by evaluating them, with a small model of Istio's semantics, on requests a client could send: DENY policies
  first, then ALLOW policies (a workload with an ALLOW policy denies what none allows), rules as AND of
  ``from``/``to``/``when``, lists as OR
  (https://istio.io/latest/docs/concepts/security/#implicit-enablement and the "allow-nothing" section after it),
  the path normalised as each ``meshConfig.pathNormalization`` option does
  (https://istio.io/latest/docs/reference/config/security/normalization/), then routed the way the model server
  (uvicorn, which percent-decodes the path, and KServe's routes) would route it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest

from tests import k8s
from tests.infra.helm.chart import ALL_ENABLED, Render, serve_container

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"
GRPC = "/inference.GRPCInferenceService"
RAW_SETS = ("inferenceService.deploymentMode=RawDeployment", "canary.enabled=false")
JWT = "https://login.example.com//fraud-client"  # <iss>/<sub> of a valid token
PROMETHEUS = ("cluster.local/ns/monitoring/sa/kube-prometheus-stack-prometheus", "monitoring")
ACTIVATOR = ("cluster.local/ns/knative-serving/sa/activator", "knative-serving")
STRANGER = ("cluster.local/ns/other/sa/default", "other")
NORMALIZATIONS = ("NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")

# ------------------------------------------------------------------------------------------ structure

SOURCE_FIELDS = {
    "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces", "notNamespaces",
    "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks",
}  # fmt: skip
OPERATION_FIELDS = {"hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"}
CONDITION_FIELDS = {"key", "values", "notValues"}


def _policies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return k8s.find(objects, "AuthorizationPolicy")


def _string_values(policy: dict[str, Any]) -> list[tuple[str, str]]:
    values = []
    for rule in policy["spec"].get("rules", []):
        for source in rule.get("from", []):
            values += [(k, v) for k, vs in source["source"].items() for v in vs]
        for operation in rule.get("to", []):
            values += [(k, v) for k, vs in operation["operation"].items() for v in vs]
        for condition in rule.get("when", []):
            values += [(condition["key"], v) for v in condition.get("values", []) + condition.get("notValues", [])]
    return values


@pytest.mark.parametrize("sets", [(), RAW_SETS], ids=["serverless", "raw"])
def test_policies_use_documented_istio_fields_only(render: Render, sets: tuple[str, ...]) -> None:
    policies = _policies(render(ALL_ENABLED, sets))
    assert {p["spec"]["action"] for p in policies} == {"ALLOW", "DENY"}
    for policy in policies:
        assert policy["apiVersion"] == "security.istio.io/v1"
        assert set(policy["spec"]) == {"selector", "action", "rules"}
        assert policy["spec"]["rules"], "an empty rule list would allow or deny nothing"
        for rule in policy["spec"]["rules"]:
            assert set(rule) <= {"from", "to", "when"}
            assert rule, "an empty rule matches every request"
            for source in rule.get("from", []):
                assert set(source) == {"source"} and source["source"]
                assert set(source["source"]) <= SOURCE_FIELDS
            for operation in rule.get("to", []):
                assert set(operation) == {"operation"} and operation["operation"]
                assert set(operation["operation"]) <= OPERATION_FIELDS
            for condition in rule.get("when", []):
                assert set(condition) <= CONDITION_FIELDS and "key" in condition
                assert re.fullmatch(r"request\.headers\[[A-Za-z0-9-]+\]", condition["key"])
        for key, value in _string_values(policy):
            assert isinstance(value, str) and value, (key, value)
            # Istio supports exact, prefix (abc*), suffix (*abc) and presence (*) matches only.
            assert ("*" not in value.strip("*") and value.count("*") <= 1) or value == "*", (key, value)
            if key in ("ports", "notPorts"):
                assert value.isdigit(), (key, value)
            if key in ("paths", "notPaths"):
                assert value.startswith("/") and "{" not in value, value
            if key in ("methods", "notMethods"):
                assert value == value.upper(), value


def test_policies_select_the_predictor_pods(render: Render) -> None:
    objects = render(ALL_ENABLED)
    for policy in _policies(objects):
        assert policy["spec"]["selector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": MODEL}
        assert policy["metadata"]["namespace"] == k8s.NAMESPACE


def test_the_allowed_paths_are_exact(render: Render) -> None:
    """No wildcard in an allowed path, so no encoded or dotted variant of a path can match an allow rule."""
    for sets in ((), RAW_SETS):
        for policy in _policies(render(ALL_ENABLED, sets)):
            if policy["spec"]["action"] != "ALLOW":
                continue
            for key, value in _string_values(policy):
                if key == "paths":
                    assert "*" not in value, value


def test_request_principals_may_not_be_empty(render: Render) -> None:
    """requestPrincipals: [] would be an unset field to Istio, i.e. inference without a token."""
    for empty in ("istio.auth.requestPrincipals=null", "istio.auth.requestPrincipals={}"):
        with pytest.raises(k8s.ToolError, match=r"requestPrincipals|minLength|at least 1"):
            render(ALL_ENABLED, (empty,))


def test_path_normalization_envoy_filter(render: Render) -> None:
    objects = render(ALL_ENABLED)
    envoy = k8s.one(objects, "EnvoyFilter", "fraud-detection-path-normalization")
    assert envoy["spec"]["workloadSelector"]["labels"] == {"serving.kserve.io/inferenceservice": MODEL}
    (patch,) = envoy["spec"]["configPatches"]
    assert patch["applyTo"] == "NETWORK_FILTER"
    assert patch["match"]["context"] == "SIDECAR_INBOUND"
    assert (
        patch["match"]["listener"]["filterChain"]["filter"]["name"] == "envoy.filters.network.http_connection_manager"
    )
    assert patch["patch"]["operation"] == "MERGE"
    config = patch["patch"]["value"]["typed_config"]
    assert config["@type"].endswith("http_connection_manager.v3.HttpConnectionManager")
    assert config["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert config["merge_slashes"] is True and config["normalize_path"] is True
    off = render(ALL_ENABLED, ("istio.auth.rejectEscapedSlashes=false",))
    assert not k8s.find(off, "EnvoyFilter", "fraud-detection-path-normalization")
    assert k8s.find(off, "EnvoyFilter", "fraud-detection-ratelimit")


# ------------------------------------------------------------------------------- evaluation model


@dataclass(frozen=True)
class Request:
    """What a sidecar knows of a request."""

    path: str
    method: str = "GET"
    port: int = 8080
    request_principal: str = ""  # "<iss>/<sub>" of a valid JWT; "" without one (an invalid one gets 401 earlier)
    principal: str = ""  # peer mTLS identity; "" for plaintext
    namespace: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


def _match(value: str, pattern: str) -> bool:
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _field(values: Sequence[str] | None, negated: Sequence[str] | None, value: str) -> bool:
    if values is not None and not any(_match(value, p) for p in values):
        return False
    return not (negated is not None and any(_match(value, p) for p in negated))


def _source_matches(source: dict[str, Any], request: Request) -> bool:
    actual = {"principals": request.principal, "requestPrincipals": request.request_principal}
    actual["namespaces"] = request.namespace
    for name, value in actual.items():
        negated = "not" + name[0].upper() + name[1:]
        if not _field(source.get(name), source.get(negated), value):
            return False
    return True


def _operation_matches(operation: dict[str, Any], request: Request, path: str) -> bool:
    return (
        _field(operation.get("ports"), operation.get("notPorts"), str(request.port))
        and _field(operation.get("methods"), operation.get("notMethods"), request.method)
        and _field(operation.get("paths"), operation.get("notPaths"), path)
    )


def _condition_matches(condition: dict[str, Any], request: Request) -> bool:
    header = re.fullmatch(r"request\.headers\[(.+)\]", condition["key"])
    assert header, condition["key"]
    headers = {k.lower(): v for k, v in request.headers.items()}
    value = headers.get(header.group(1).lower(), "")
    if "values" in condition and not (value and any(_match(value, p) for p in condition["values"])):
        return False
    return not (value and any(_match(value, p) for p in condition.get("notValues", [])))


def _rule_matches(rule: dict[str, Any], request: Request, path: str) -> bool:
    if "from" in rule and not any(_source_matches(s["source"], request) for s in rule["from"]):
        return False
    if "to" in rule and not any(_operation_matches(o["operation"], request, path) for o in rule["to"]):
        return False
    return all(_condition_matches(c, request) for c in rule.get("when", []))


def _allowed(policies: Sequence[dict[str, Any]], request: Request, path: str) -> bool:
    """Istio's evaluation: any matching DENY denies; else allowed if no ALLOW policy exists or one matches."""

    def matches(policy: dict[str, Any]) -> bool:
        return any(_rule_matches(r, request, path) for r in policy["spec"].get("rules", []))

    if any(matches(p) for p in policies if p["spec"]["action"] == "DENY"):
        return False
    allows = [p for p in policies if p["spec"].get("action", "ALLOW") == "ALLOW"]
    return not allows or any(matches(p) for p in allows)


BASE_DECODED = set("-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _decode(path: str, chars: set[str]) -> str:
    """Decode the %HH of the given characters, once (no double decoding); other escapes get upper-case hex."""

    def one(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return char if char in chars else "%" + m.group(1).upper()

    return re.sub(r"%([0-9A-Fa-f]{2})", one, path)


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment in (".", ".."):
            if segment == ".." and out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def normalize(raw: str, mode: str, reject_escaped_slashes: bool) -> str | None:
    """The path the policies see and the backend gets, per Istio's pathNormalization; None when rejected (400)."""
    path = raw.split("?", 1)[0]  # policies compare the path without its query
    if "%00" in path:
        return None
    if reject_escaped_slashes and re.search(r"%(2f|5c)", path, re.IGNORECASE):
        return None  # the EnvoyFilter: path_with_escaped_slashes_action REJECT_REQUEST
    if mode == "NONE":
        return path
    if mode == "DECODE_AND_MERGE_SLASHES":
        path = _decode(path, {"/", "\\"})
    path = _remove_dot_segments(_decode(path, BASE_DECODED).replace("\\", "/"))
    if mode in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES") or reject_escaped_slashes:
        path = re.sub(r"/{2,}", "/", path)
    return path


# KServe's REST routes (kserve.protocol.rest) as Starlette matches them on the percent-decoded path, by category.
SEGMENT = r"[^/]+"
BACKEND_ROUTES = [
    ("health", rf"/|/v2/health/(live|ready)|/v2/models/{SEGMENT}(/versions/{SEGMENT})?/ready"),
    ("metrics", r"/metrics"),
    ("repository", rf"/v2/repository/models/{SEGMENT}/(load|unload)"),
    ("protected", rf"/v1/models/{SEGMENT}:(predict|explain)|/v2/models/{SEGMENT}(/versions/{SEGMENT})?/infer"),
    ("protected", rf"/v2/models/{SEGMENT}/labels"),  # the label feed (serving/labels.py)
    ("protected", rf"/v1/models(/{SEGMENT})?|/v2|/v2/models(/{SEGMENT}(/versions/{SEGMENT})?)?"),
    ("repository", rf"{re.escape(GRPC)}/Repository\w+"),
    ("protected", rf"{re.escape(GRPC)}/\w+"),
]


def backend_route(path: str) -> str:
    """The category of the route the model server would run for a path (uvicorn percent-decodes it first)."""
    decoded = unquote(path)
    for category, pattern in BACKEND_ROUTES:
        if re.fullmatch(pattern, decoded):
            return category
    return "none"


ATTACK_PATHS = [
    f"/v2/repository/models/{MODEL}/unload",
    f"/v2/repository/models/{MODEL}/load",
    f"/v2%2Frepository/models/{MODEL}/unload",
    f"/v2%2frepository%2fmodels%2f{MODEL}%2funload",
    f"/v2/models/../repository/models/{MODEL}/unload",
    f"/v2/models/%2e%2e/repository/models/{MODEL}/unload",
    f"/v2/models/{MODEL}/..%2F..%2Frepository/models/{MODEL}/unload",
    f"//v2/repository/models/{MODEL}/unload",
    f"/v2//repository/models/{MODEL}/unload",
    f"/v2\\repository\\models\\{MODEL}\\unload",
    f"/v2%5Crepository/models/{MODEL}/unload",
    f"/v2%252Frepository/models/{MODEL}/unload",
    f"/v2%2Fmodels/{MODEL}/infer",
    f"/v2/models%2F{MODEL}/infer",
    f"/v2/models/{MODEL}%2Finfer",
    "/v2/models/fraud%2Ddetector/infer",
    f"/v2/models/{MODEL}/infer?token=none",
    f"/v2/models/{MODEL}/infer/",
    f"/v2/models/{MODEL}/./infer",
    f"/v2/models/x/../{MODEL}/infer",
    f"/v2/models/{MODEL}/versions/1/infer",
    f"/v1/models/{MODEL}:predict",
    f"/v1/models/{MODEL}%3Apredict",
    f"/v1/models/{MODEL}:explain",
    f"/v2/models/{MODEL}/infer",
    f"/v2/models/{MODEL}",
    f"/v1/models/{MODEL}",
    "/v2",
    "/v2/models",
    "/v1/models",
    "/metrics",
    "/metrics%2F",
    "/%6Detrics",
    "/docs",
    "/openapi.json",
    "/",
    "/healthz",
    "/v2/health/ready",
    f"{GRPC}/ModelInfer",
    f"{GRPC}/ModelMetadata",
    f"{GRPC}/ServerReady",
    f"{GRPC}/RepositoryIndex",
    f"{GRPC}/RepositoryModelLoad",
    f"{GRPC}/RepositoryModelUnload",
    f"{GRPC}%2FRepositoryModelUnload",
    "/inference.GRPCInferenceService/../inference.GRPCInferenceService/RepositoryModelUnload",
]

CALLERS = {
    "anonymous": {},
    "stranger": {"principal": STRANGER[0], "namespace": STRANGER[1]},
    "activator": {"principal": ACTIVATOR[0], "namespace": ACTIVATOR[1]},
    "prometheus": {"principal": PROMETHEUS[0], "namespace": PROMETHEUS[1]},
    "jwt": {"request_principal": JWT},
    "jwt-stranger": {"request_principal": JWT, "principal": STRANGER[0], "namespace": STRANGER[1]},
}

# ALLOW policies a namespace may already hold (Knative's Istio guide suggests the first), which are OR-ed with ours.
NEIGHBOURS = {
    "alone": [],
    "knative-guide": [
        {"spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": ["knative-serving"]}}]}]}},
        {"spec": {"action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["/metrics", "/healthz"]}}]}]}},
    ],
    "allow-all": [{"spec": {"action": "ALLOW", "rules": [{}]}}],
}


def _reachable(policies: list[dict[str, Any]], request: Request, mode: str, envoy_filter: bool) -> str | None:
    """The backend category a request reaches, or None when the sidecar refuses it."""
    path = normalize(request.path, mode, envoy_filter)
    if path is None or not _allowed(policies, request, path):
        return None
    return backend_route(path)


@pytest.mark.parametrize("neighbours", NEIGHBOURS, ids=NEIGHBOURS.keys())
@pytest.mark.parametrize("sets", [(), RAW_SETS], ids=["serverless", "raw"])
@pytest.mark.parametrize("envoy_filter", [True, False], ids=["envoyfilter", "no-envoyfilter"])
def test_no_path_variant_reaches_a_route_it_should_not(
    render: Render, sets: tuple[str, ...], envoy_filter: bool, neighbours: str
) -> None:
    """Whatever the mesh's pathNormalization and the namespace's other ALLOW policies: the repository routes are
    never reached, inference and metadata only with a JWT, /metrics only from Prometheus, nothing unknown."""
    objects = render(ALL_ENABLED, (*sets, f"istio.auth.rejectEscapedSlashes={str(envoy_filter).lower()}"))
    policies = _policies(objects) + NEIGHBOURS[neighbours]
    breaches = []
    for mode in NORMALIZATIONS:
        for path in ATTACK_PATHS:
            for method in ("GET", "POST"):
                for port in (8080, 8012, 8081):
                    for caller, identity in CALLERS.items():
                        request = Request(path=path, method=method, port=port, **identity)
                        reached = _reachable(policies, request, mode, envoy_filter)
                        # Knative's probe path on the queue-proxy: the queue-proxy answers it when it carries
                        # K-Network-Probe, and the model server has no such route (404) when it does not.
                        if (reached, path, port) == ("none", "/healthz", 8012) and not sets:
                            continue
                        bad = (
                            reached in ("repository", "none")
                            or (reached == "protected" and not request.request_principal)
                            or (reached == "metrics" and request.namespace != "monitoring")
                        )
                        if bad:
                            breaches.append((mode, path, method, port, caller, reached))
    assert breaches == []


@pytest.mark.parametrize("mode", NORMALIZATIONS)
@pytest.mark.parametrize("sets", [(), RAW_SETS], ids=["serverless", "raw"])
def test_legitimate_traffic_passes(render: Render, sets: tuple[str, ...], mode: str) -> None:
    policies = _policies(render(ALL_ENABLED, sets))
    serverless = not sets

    def reach(path: str, method: str = "GET", port: int = 8080, **identity: Any) -> str | None:
        return _reachable(policies, Request(path=path, method=method, port=port, **identity), mode, True)

    for port in (8080, 8012):
        for probe in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"):
            assert reach(probe, port=port) == "health", probe  # kubelet, no token, no mTLS
        assert reach(f"/v2/models/{MODEL}/infer", "POST", port, request_principal=JWT) == "protected"
        assert reach(f"/v1/models/{MODEL}:predict", "POST", port, request_principal=JWT) == "protected"
        assert reach(f"/v2/models/{MODEL}", "GET", port, request_principal=JWT) == "protected"
        assert reach(f"/v2/models/{MODEL}/infer", "POST", port) is None  # no token
        assert reach(f"/v2/models/{MODEL}/infer", "POST", port, **CALLERS["activator"]) is None
        assert reach(f"/v2/models/{MODEL}/infer", "GET", port, request_principal=JWT) is None  # method
        assert reach("/metrics", port=port, **CALLERS["prometheus"]) == "metrics"
        assert reach("/metrics", port=port, **CALLERS["stranger"]) is None
        assert reach("/metrics", port=port) is None  # plaintext: no identity
        assert reach(f"/v2/repository/models/{MODEL}/unload", "POST", port, request_principal=JWT) is None
    for method in ("ModelInfer", "ModelMetadata", "ModelReady", "ServerReady", "ServerLive", "ServerMetadata"):
        assert reach(f"{GRPC}/{method}", "POST", 8081, request_principal=JWT) == "protected", method
        assert reach(f"{GRPC}/{method}", "POST", 8081) is None, method
    for method in ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"):
        assert reach(f"{GRPC}/{method}", "POST", 8081, request_principal=JWT) is None, method
    probe = {"K-Network-Probe": "queue"}
    autoscaler = Request(path="/metrics", port=9090, **CALLERS["activator"])
    knative_probe = Request(path="/healthz", port=8012, headers=probe)
    assert _allowed(policies, knative_probe, "/healthz") is serverless
    assert _allowed(policies, Request(path="/", port=8012, headers=probe), "/") is serverless
    assert _allowed(policies, autoscaler, "/metrics") is serverless
    assert not _allowed(policies, Request(path="/healthz", port=8012), "/healthz")  # without the probe header
    assert not _allowed(policies, Request(path="/", port=8080, headers=probe), "/")  # not the queue-proxy
    assert not _allowed(policies, Request(path="/metrics", port=9090, **CALLERS["stranger"]), "/metrics")


def test_metrics_sources_are_configurable(render: Render) -> None:
    sa = "cluster.local/ns/observability/sa/prometheus"
    pinned = _policies(
        render(ALL_ENABLED, ("istio.auth.metrics.namespaces=null", f"istio.auth.metrics.principals={{{sa}}}"))
    )
    assert _allowed(pinned, Request(path="/metrics", principal=sa, namespace="observability"), "/metrics")
    assert not _allowed(pinned, Request(path="/metrics", **CALLERS["prometheus"]), "/metrics")
    closed = _policies(
        render(ALL_ENABLED, ("istio.auth.metrics.namespaces=null", "istio.auth.metrics.principals=null"))
    )
    for identity in CALLERS.values():
        assert not _allowed(closed, Request(path="/metrics", **identity), "/metrics")
    no_knative = _policies(render(ALL_ENABLED, ("istio.auth.knative.namespaces=null",)))
    assert not _allowed(no_knative, Request(path="/metrics", port=9090, **CALLERS["activator"]), "/metrics")


def test_principals_restrict_inference(render: Render) -> None:
    allowed = "https://login.example.com//scoring-gateway"
    policies = _policies(render(ALL_ENABLED, (f"istio.auth.requestPrincipals={{{allowed}}}",)))
    path = f"/v2/models/{MODEL}/infer"
    assert _allowed(policies, Request(path=path, method="POST", request_principal=allowed), path)
    assert not _allowed(policies, Request(path=path, method="POST", request_principal=JWT), path)


# ------------------------------------------------------------------------------------------ threshold


def _server_flag(flag: str) -> str:
    """How serving/__main__.py declares a flag: "bool" (BooleanOptionalAction), "value", or "" when absent."""
    text = (k8s.REPO / "serving" / "__main__.py").read_text()
    match = re.search(rf'"{flag}",(.*?)\)\n', text, re.DOTALL)
    if not match:
        return ""
    return "bool" if "BooleanOptionalAction" in match.group(1) else "value"


def test_threshold_is_not_exposed_by_default(render: Render) -> None:
    """exposeThreshold defaults to false and reaches the server as its flag (whose own default is on)."""
    assert _server_flag("--expose_threshold") == "bool", "the chart renders --[no-]expose_threshold"
    args = serve_container(render())["args"]
    exposed = serve_container(render(sets=("inferenceService.exposeThreshold=true",)))["args"]
    assert "--no-expose_threshold" in args and "--expose_threshold" not in args
    assert "--expose_threshold" in exposed and "--no-expose_threshold" not in exposed
    # The model repository extension stays off: the chart never passes --enable_model_repository.
    assert not [a for a in args + exposed if "model_repository" in a]
