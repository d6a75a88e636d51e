"""`python -m serving` as a subprocess on loopback, called with the standard v2 clients, plain HTTP and a fuzzer."""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from fraud_detection.data import schema
from fraud_detection.model.bundle import load_bundle
from fraud_detection.monitoring.payload_reader import read_payload_log
from fraud_detection.store.local import LocalStore
from tests.helpers.serving import (
    FIXTURES,
    MODEL,
    ServingProcess,
    golden,
    http,
    run_client,
    same_structure,
    serving_process,
)

pytestmark = pytest.mark.integration
F = len(schema.FEATURES)
V2 = f"/v2/models/{MODEL}/infer"
V1 = f"/v1/models/{MODEL}:predict"
MAX_BATCH = 64


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving-store")


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, store_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    args = [
        "--model_dir", str(tiny_bundle),
        "--store_uri", str(store_dir),
        "--payload_log_flush_seconds", "0.5",
        "--max_batch_size", str(MAX_BATCH),
    ]  # fmt: skip
    with serving_process(args, tmp_path_factory.mktemp("serving-logs")) as proc:
        yield proc


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.array(golden("v2_infer.request.json")["inputs"][0]["data"], dtype=np.float32)


@pytest.fixture(scope="module")
def triton(server: ServingProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    yield client
    client.close()


def _json(body: bytes) -> dict:
    return json.loads(body)


# -- process and protocol basics -----------------------------------------------------------------------------


def _listening(port: int) -> list[str]:
    """Local addresses of the sockets listening on a TCP port (from /proc/net/tcp and tcp6)."""
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # each 32-bit word is in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(socket.inet_ntop(family, raw))
    return found


def test_server_listens_on_loopback_only(server: ServingProcess):
    for port in (server.http_port, server.grpc_port):
        addresses = _listening(port)
        assert addresses, f"nothing listens on {port}"
        for address in addresses:
            ip = ipaddress.ip_address(address)
            mapped = getattr(ip, "ipv4_mapped", None)
            assert ip.is_loopback or (mapped is not None and mapped.is_loopback), address


def test_health_and_metadata(server: ServingProcess, triton, tiny_bundle: Path):
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"):
        status, _, _ = http("GET", server.url + path)
        assert status == 200, path
    status, body, _ = http("GET", server.url + "/v2")
    assert status == 200 and _json(body)["name"] == "kserve"
    status, body, _ = http("GET", f"{server.url}/v2/models/{MODEL}")
    meta = _json(body)
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        (f, "FP64", [-1]) for f in schema.FEATURES
    ]
    assert [o["name"] for o in meta["outputs"]] == ["fraud_score", "is_fraud", "reason_codes"]
    assert not same_structure(meta, golden("v2_model_metadata.response.json"))
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready(MODEL)


@pytest.mark.parametrize("request_file", sorted(p.name for p in FIXTURES.glob("*.request.json")))
def test_golden_requests_get_golden_responses(server: ServingProcess, request_file: str):
    spec = golden(request_file)
    route = spec.pop("_route")
    status, body, _ = http("POST", server.url + route, spec)
    expected = golden(request_file.replace(".request.", ".response."))
    assert status == expected.pop("_status"), body
    problems = same_structure(_json(body), expected)
    assert not problems, "\n".join(problems)


def test_seed_body_over_plain_http(server: ServingProcess, tiny_bundle: Path):
    seed = golden("v1_seed.request.json")["features"]
    status, body, _ = http("POST", server.url + V1, {"features": seed}, {"Content-Type": "application/json"})
    assert status == 200
    response = _json(body)
    assert response["model_version"] == load_bundle(tiny_bundle).metadata.version
    (prediction,) = response["predictions"]
    assert 0 <= prediction["fraud_score"] <= 1
    assert set(prediction["imputed_features"]) == set(schema.FEATURES) - set(seed)


# -- standard v2 clients -------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_http(triton, rows, binary: bool, tiny_bundle: Path):
    inp = httpclient.InferInput("features", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("fraud_score", "is_fraud", "reason_codes")
    ]
    result = triton.infer(MODEL, [inp], outputs=outputs, request_id="triton-http")
    scores = result.as_numpy("fraud_score")
    assert scores.dtype == np.float32 and scores.shape == (2,)
    assert result.as_numpy("is_fraud").dtype == bool
    codes = [json.loads(c) for c in result.as_numpy("reason_codes")]
    assert len(codes) == 2 and len(codes[0]) == 3
    response = result.get_response()
    assert response["id"] == "triton-http"
    assert response["parameters"]["model_version"] == load_bundle(tiny_bundle).metadata.version
    default = triton.infer(MODEL, [inp])  # no outputs named: binary outputs, no reason codes
    np.testing.assert_array_equal(default.as_numpy("fraud_score"), scores)
    assert default.as_numpy("reason_codes") is None


def test_tritonclient_per_feature_inputs_match_the_matrix(triton, rows):
    inputs = []
    for j, name in enumerate(schema.FEATURES):
        inp = httpclient.InferInput(name, [rows.shape[0]], "FP64")
        inp.set_data_from_numpy(rows[:, j].astype(np.float64))
        inputs.append(inp)
    per_feature = triton.infer(MODEL, inputs).as_numpy("fraud_score")
    matrix = httpclient.InferInput("features", list(rows.shape), "FP32")
    matrix.set_data_from_numpy(rows)
    np.testing.assert_allclose(per_feature, triton.infer(MODEL, [matrix]).as_numpy("fraud_score"), rtol=1e-6)


def test_tritonclient_errors_name_the_problem(triton, rows):
    bad = httpclient.InferInput("features", [1, 5], "FP32")
    bad.set_data_from_numpy(rows[:1, :5])
    with pytest.raises(InferenceServerException, match=rf"shape \[1, 5\], expected \[N, {F}\]") as err:
        triton.infer(MODEL, [bad])
    assert err.value.status() == "400"
    good = httpclient.InferInput("features", list(rows.shape), "FP32")
    good.set_data_from_numpy(rows)
    with pytest.raises(InferenceServerException, match="does not exist") as err:
        triton.infer("no-such-model", [good])
    assert err.value.status() == "404"


def test_tritonclient_grpc(server: ServingProcess, tiny_bundle: Path):
    result = run_client("triton-grpc", server.grpc)
    assert result["live"] and result["ready"] and result["model_ready"]
    assert [tuple(i) for i in result["inputs"]] == [(f, "FP64", [-1]) for f in schema.FEATURES]
    version = load_bundle(tiny_bundle).metadata.version
    assert result["id"] == "grpc-1" and result["model_version"] == version
    assert result["parameters"]["model_version"] == version
    assert len(result["fraud_score"]) == 2 and all(isinstance(v, bool) for v in result["is_fraud"])
    assert len(json.loads(result["reason_codes"][0])) == 3
    assert result["errors"]["shape"].startswith("StatusCode.INVALID_ARGUMENT input 'features': shape [2, 5]")
    assert result["errors"]["negative"].startswith("StatusCode.INVALID_ARGUMENT feature 'amount': negative")
    assert result["errors"]["unknown_model"].startswith("StatusCode.NOT_FOUND")


def test_kserve_clients_rest_and_grpc(server: ServingProcess, triton, rows):
    result = run_client("kserve", server.url, server.grpc)
    inp = httpclient.InferInput("features", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows)
    expected = triton.infer(MODEL, [inp]).as_numpy("fraud_score").tolist()
    for key in ("rest_binary_False", "rest_binary_True", "grpc"):
        assert result[key]["fraud_score"] == pytest.approx(expected, rel=1e-6), key
        assert len(result[key]["is_fraud"]) == 2
    assert result["rest_ready"] and result["grpc_ready"]


# -- bad input -----------------------------------------------------------------------------------------------


def _features_body(data, shape=None, datatype="FP32") -> dict:
    shape = shape or [len(data), F]
    return {"inputs": [{"name": "features", "shape": shape, "datatype": datatype, "data": data}]}


@pytest.mark.parametrize(
    ("route", "body", "needle"),
    [
        (V2, _features_body([[1.0] * 5], shape=[1, 5]), f"shape [1, 5], expected [N, {F}]"),
        (V2, _features_body([["a"] * F], datatype="BYTES"), "datatype BYTES, expected FP32 or FP64"),
        (V2, {"inputs": [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [1]}]}, "missing feature(s)"),
        (V2, _features_body([[-1.0] + [1.0] * (F - 1)]), "'amount': negative value -1"),
        (V2, _features_body([[1.0] * (F - 1) + [float("nan")]], datatype="FP64"), "NaN is not a JSON number"),
        (V2, _features_body([[1.0] * (F - 1) + [float("inf")]], datatype="FP64"), "Infinity is not a JSON number"),
        (V2, _features_body([[1.0] * F] * (MAX_BATCH + 1)), f"{MAX_BATCH + 1} rows exceeds the limit of {MAX_BATCH}"),
        (V2, {"inputs": "nope"}, "'inputs' must be a list"),
        (V2, {"outputs": []}, "'inputs': field required"),
        (V1, {"features": {"amount": 1}}, "missing feature 'hour_of_day'"),
        (V1, {"instances": [{"amount": -3, "hour_of_day": 1}]}, "row 0: missing feature"),
        (V1, {"instances": [[1.0] * F] * (MAX_BATCH + 1)}, "exceeds the limit"),
        (V1, {"rows": []}, "unknown key 'rows'"),
    ],
)
def test_bad_requests_are_400_naming_the_problem(server: ServingProcess, route, body, needle):
    status, raw, _ = http("POST", server.url + route, body)  # urllib sends a form Content-Type: still JSON to us
    assert status == 400, raw
    assert needle in _json(raw)["error"]


def test_unknown_model_is_404_everywhere(server: ServingProcess):
    for method, path, body in (
        ("POST", "/v2/models/nope/infer", _features_body([[1.0] * F])),
        ("POST", "/v1/models/nope:predict", {"features": {}}),
        ("GET", "/v2/models/nope", None),
    ):
        status, raw, _ = http(method, server.url + path, body)
        assert status == 404, (path, raw)
    assert http("GET", server.url + "/v2/health/live")[0] == 200


def _metrics(server: ServingProcess) -> dict[tuple, float]:
    _, body, _ = http("GET", server.url + "/metrics")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name.startswith("fraud_serving_"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _total(metrics: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in metrics.items() if n == name and labels.items() <= dict(ls).items())


def test_metrics_follow_the_contract(server: ServingProcess, tiny_bundle: Path, rows):
    version = load_bundle(tiny_bundle).metadata.version
    before = _metrics(server)
    http("POST", server.url + V1, {"features": golden("v1_seed.request.json")["features"]})
    http("POST", server.url + V2, _features_body(rows.tolist()))
    http("POST", server.url + V2, _features_body([[1.0] * 5], shape=[1, 5]))
    http("POST", f"{server.url}/v2/models/nope/infer", _features_body(rows.tolist()))
    run_client("triton-grpc", server.grpc)  # 1 good + 2 invalid + 1 unknown-model gRPC inference
    after = _metrics(server)

    def delta(name: str, **labels: str) -> float:
        return _total(after, name, **labels) - _total(before, name, **labels)

    labels = {"model_name": MODEL, "model_version": version}
    assert delta("fraud_serving_requests_total", protocol="v1_rest", **labels) == 1
    assert delta("fraud_serving_requests_total", protocol="v2_rest", **labels) == 3
    assert delta("fraud_serving_requests_total", protocol="v2_grpc", **labels) == 4
    assert delta("fraud_serving_request_duration_seconds_count", protocol="v2_rest", **labels) == 3
    assert delta("fraud_serving_errors_total", protocol="v2_rest", kind="validation", **labels) == 1
    assert delta("fraud_serving_errors_total", protocol="v2_rest", kind="not_found", **labels) == 1
    assert delta("fraud_serving_errors_total", protocol="v2_grpc", kind="validation", **labels) == 2
    assert delta("fraud_serving_errors_total", protocol="v2_grpc", kind="not_found", **labels) == 1
    assert delta("fraud_serving_errors_total", kind="internal") == 0
    assert delta("fraud_serving_predictions_total", **labels) == 1 + 2 + 2
    assert delta("fraud_serving_score_ratio_count", **labels) == 5
    threshold = f"{load_bundle(tiny_bundle).metadata.threshold:g}"
    assert after[("fraud_serving_model_info", tuple(sorted({**labels, "threshold": threshold}.items())))] == 1
    assert _total(after, "fraud_serving_payload_log_dropped_total", **labels) == 0


def test_scored_requests_reach_the_payload_log(server: ServingProcess, store_dir: Path, rows, tiny_bundle: Path):
    body = _features_body(rows.tolist()) | {"id": "payload-probe"}
    assert http("POST", server.url + V2, body)[0] == 200
    store = LocalStore(store_dir)
    deadline = time.monotonic() + 20
    frame = None
    while time.monotonic() < deadline:
        now = datetime.now(UTC)
        frame = read_payload_log(store, MODEL, now - timedelta(hours=1), now + timedelta(hours=1))
        if (frame["request_id"] == "payload-probe").sum() == 2:
            break
        time.sleep(0.2)
    assert frame is not None
    probe = frame[frame["request_id"] == "payload-probe"]
    assert len(probe) == 2
    assert (probe["model_version"] == load_bundle(tiny_bundle).metadata.version).all()
    np.testing.assert_allclose(probe[list(schema.FEATURES)].to_numpy(), rows, rtol=1e-6)
    assert "customer_id" not in probe.columns


# -- fuzzing -------------------------------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def _malformed(draw) -> tuple[str, bytes, dict[str, str]]:
    route = draw(st.sampled_from([V2, V1]))
    kind = draw(st.sampled_from(["json", "bytes", "mutated", "binary-header"]))
    valid = golden("v2_infer.request.json") if route == V2 else golden("v1_instances.request.json")
    valid.pop("_route")
    if kind == "json":
        body = json.dumps(draw(_json_values)).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
    else:
        target = valid["inputs"][0] if route == V2 else valid
        key = draw(st.sampled_from([*sorted(target), "parameters", "outputs", "extra"]))
        target[key] = draw(_json_values)
        body = json.dumps(valid).encode()
    headers = {}
    if kind == "binary-header":
        headers["Inference-Header-Content-Length"] = str(draw(st.integers(min_value=-5, max_value=len(body) + 5)))
        body += draw(st.binary(max_size=64))
    content_type = draw(st.sampled_from([None, "application/json", "text/plain", "application/octet-stream"]))
    if content_type:
        headers["Content-Type"] = content_type
    return route, body, headers


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_malformed())
def test_fuzzed_bodies_never_get_a_5xx(server: ServingProcess, case):
    route, body, headers = case
    status, raw, _ = http("POST", server.url + route, body, headers)
    assert status < 500, (route, body[:200], headers, raw[:300])


def test_server_still_serves_after_the_fuzzing(server: ServingProcess, rows):
    assert http("GET", server.url + "/v2/health/live")[0] == 200
    status, body, _ = http("POST", server.url + V2, _features_body(rows.tolist()))
    assert status == 200 and len(_json(body)["outputs"][0]["data"]) == 2
    assert server.proc.poll() is None
