"""The serving points of the hardening issue, against a real `python -m serving` on loopback.

Repository routes off, readiness follows the model, no OpenAPI schema with docs off, the threshold option, the body
limit (413, Content-Length and chunked) with liveness responsive under large bodies, client errors logged quietly,
strict v2 types with messages naming the problem, the amount maximum, gRPC draining on SIGTERM, and a fuzzer over
REST v2/v1 and gRPC.
"""

from __future__ import annotations

import http.client as http_client
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from fraud_detection.data import schema
from tests.helpers.serving import MODEL, ServingProcess, golden, http, serving_process

pytestmark = pytest.mark.integration
F = len(schema.FEATURES)
V2 = f"/v2/models/{MODEL}/infer"
V1 = f"/v1/models/{MODEL}:predict"
LIMIT = 1_000_000
#: A 4xx message names its field (quoted), a byte offset, a header, or the body/limit it is about.
NAMES_PROBLEM = re.compile(
    r"'[^']+'|byte \d+|Inference-Header-Content-Length|Content-Length|request body|does not exist"
)


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    with serving_process(["--model_dir", str(tiny_bundle)], tmp_path_factory.mktemp("hardening")) as proc:
        yield proc


@pytest.fixture(scope="module")
def custom(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    args = [
        "--model_dir", str(tiny_bundle),
        "--enable_model_repository",
        "--no-expose_threshold",
        "--max_body_bytes", str(LIMIT),
        "--max_amount", "1000",
    ]  # fmt: skip
    with serving_process(args, tmp_path_factory.mktemp("hardening-custom")) as proc:
        yield proc


def _rows() -> list[list[float]]:
    return golden("v2_infer.request.json")["inputs"][0]["data"]


def _features(data: Any, shape: Any = None, datatype: Any = "FP64") -> dict[str, Any]:
    shape = [len(data), F] if shape is None else shape
    return {"inputs": [{"name": "features", "shape": shape, "datatype": datatype, "data": data}]}


def _error(raw: bytes) -> str:
    return str(json.loads(raw)["error"])


def _stub(server: ServingProcess) -> Any:
    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc))


def _grpc_request(rows: list[list[float]]) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP64", shape=[len(rows), F])
    tensor.contents.fp64_contents.extend(v for row in rows for v in row)
    return pb.ModelInferRequest(model_name=MODEL, inputs=[tensor])


# -- 1. repository routes, readiness, docs, threshold ---------------------------------------------------------


def test_repository_routes_are_off_by_default(server: ServingProcess):
    for action in ("unload", "load"):
        status, raw, _ = http("POST", f"{server.url}/v2/repository/models/{MODEL}/{action}")
        assert status == 404, raw
    stub = _stub(server)
    for call, request in (
        (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=MODEL)),
        (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=MODEL)),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "--enable_model_repository" in (err.value.details() or "")
    assert http("POST", server.url + V2, _features(_rows()))[0] == 200
    assert http("GET", server.url + "/v2/health/ready")[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        f"/v2%2Fmodels/{MODEL}",
        f"/v2%2frepository/models/{MODEL}/unload",
        f"/v2/models/{MODEL}%5Cinfer",
        f"/v2/models%2F{MODEL}/infer",
    ],
)
def test_encoded_slashes_in_the_path_are_refused_by_the_server_itself(server: ServingProcess, path: str):
    """Defence in depth: the server refuses what a mesh's raw-path rules might let through (uvicorn decodes %2F)."""
    for method in ("GET", "POST"):
        status, raw, _ = http(method, server.url + path)
        assert status == 400 and b"encoded" in raw, (method, path, raw)
    assert http("POST", server.url + V2, _features(_rows()))[0] == 200


def test_docs_and_openapi_are_not_served_with_docs_off(server: ServingProcess):
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert http("GET", server.url + path)[0] == 404, path


def test_threshold_is_shown_by_default(server: ServingProcess):
    _, raw, _ = http("POST", server.url + V1, {"instances": [_row_object()]})
    assert "threshold" in json.loads(raw)
    _, raw, _ = http("POST", server.url + V2, _features(_rows()))
    assert "threshold" in json.loads(raw)["parameters"]


def test_threshold_can_be_hidden(custom: ServingProcess):
    status, raw, _ = http("POST", custom.url + V1, {"instances": [_row_object()]})
    assert status == 200 and "threshold" not in json.loads(raw), raw
    status, raw, _ = http("POST", custom.url + V2, _features(_rows()))
    assert status == 200 and "threshold" not in json.loads(raw)["parameters"], raw
    metrics = http("GET", custom.url + "/metrics")[1].decode()
    (info,) = [line for line in metrics.splitlines() if line.startswith("fraud_serving_model_info{")]
    assert 'threshold="hidden"' in info


def _row_object() -> dict[str, float]:
    return dict(zip(schema.FEATURES, _rows()[0], strict=True))


# -- 2. body limit and liveness -------------------------------------------------------------------------------


def _raw_post(
    url: str, path: str, body: bytes, *, chunked: bool = False, headers_only: bool = False
) -> tuple[int, bytes]:
    """POST a body (chunked or with Content-Length; ``headers_only`` announces it and sends nothing).

    Returns (status, body), or (-1, b"reset") when the server refused the body by closing the connection before
    its answer could be read.
    """
    host, port = url.removeprefix("http://").split(":")
    conn = http_client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        else:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        try:
            for i in range(0, 0 if headers_only else len(body), 65536):
                chunk = body[i : i + 65536]
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
            if chunked:
                conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered 413 and closed before the whole body was sent
        try:
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (ConnectionResetError, http_client.RemoteDisconnected):
            return -1, b"reset"
    finally:
        conn.close()


def test_body_over_the_limit_is_413_by_content_length(custom: ServingProcess):
    body = json.dumps(_features([[1.0] * F] * 10_000)).encode()
    assert len(body) > LIMIT
    status, raw = _raw_post(custom.url, V2, body, headers_only=True)  # refused before the body is read
    assert status == 413
    assert f"exceeds the limit of {LIMIT} bytes" in _error(raw)


def test_body_over_the_limit_is_413_when_chunked(custom: ServingProcess):
    body = json.dumps({"instances": [[1.0] * F] * 10_000}).encode()
    status, raw = _raw_post(custom.url, V1, body, chunked=True)
    assert status == 413
    assert f"exceeds the limit of {LIMIT} bytes" in _error(raw)
    assert http("GET", custom.url + "/v2/health/live")[0] == 200


def test_default_limit_is_8_mib(server: ServingProcess):
    status, raw = _raw_post(server.url, V2, b" " * (8 * 1024 * 1024 + 1), headers_only=True)
    assert status == 413 and "8388608 bytes" in _error(raw)


class LivenessProbe:
    """Polls ``/v2/health/live`` every 50 ms in a thread and records each latency."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                status = http("GET", self.url + "/v2/health/live")[0]
                if status != 200:
                    self.failures.append(str(status))
            except OSError as exc:
                self.failures.append(repr(exc))
            self.latencies.append(time.perf_counter() - start)
            self._stop.wait(0.05)

    def __enter__(self) -> LivenessProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_liveness_stays_responsive_under_large_bodies(server: ServingProcess):
    big = json.dumps(_features([[1.5] * F] * 18_000)).encode()  # ~7 MB, under the 8 MiB limit: parsed, then 400
    huge = b"[" + b"1.5," * 13_000_000 + b"1]"  # ~50 MB: refused by Content-Length
    assert len(big) < 8 * 1024 * 1024 < len(huge)
    with LivenessProbe(server.url) as probe, ThreadPoolExecutor(10) as pool:
        time.sleep(0.2)
        jobs = [pool.submit(_raw_post, server.url, V2, big) for _ in range(6)]
        jobs += [pool.submit(_raw_post, server.url, V1, huge) for _ in range(4)]
        results = [job.result(timeout=120) for job in jobs]
        time.sleep(0.2)
    assert [s for s, _ in results[:6]] == [400] * 6, results[0][1][:200]
    assert {s for s, _ in results[6:]} <= {413, -1}  # 413, or the connection closed while the body was sent
    assert not probe.failures
    assert len(probe.latencies) >= 3
    assert max(probe.latencies) < 1.0, sorted(probe.latencies)[-5:]


# -- 3. client errors logged quietly --------------------------------------------------------------------------


def test_client_errors_are_logged_at_info_without_traceback(server: ServingProcess):
    before = server.log.read_text(errors="replace")
    assert http("POST", server.url + V2, _features([[1.0] * 5], shape=[1, 5]))[0] == 400
    assert http("POST", server.url + "/v2/models/nope/infer", _features(_rows()))[0] == 404
    stub = _stub(server)
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(_grpc_request([[1.0] * 5]), timeout=10)
    deadline = time.monotonic() + 5
    new = ""
    while time.monotonic() < deadline:
        new = server.log.read_text(errors="replace")[len(before) :]
        if new.count("INFO serving.rest: 4") >= 2 and "ModelInfer" in new:
            break
        time.sleep(0.1)
    assert "INFO serving.rest: 400 POST /v2/models/fraud-detector/infer: input 'features'" in new, new
    assert "INFO serving.rest: 404" in new, new
    assert "Traceback" not in new and " ERROR " not in new, new


# -- 4. strict v2 types and messages naming the problem ------------------------------------------------------


def _per_feature(data: Any, shape: Any = None, datatype: str = "FP64") -> dict[str, Any]:
    inputs = [
        {"name": f, "shape": [1], "datatype": "FP64", "data": [v]}
        for f, v in zip(schema.FEATURES, _rows()[0], strict=True)
    ]
    inputs[0] = {"name": schema.AMOUNT, "shape": shape or [1], "datatype": datatype, "data": data}
    return {"inputs": inputs}


STRICT_CASES: list[tuple[str, str, bytes, dict[str, str], str]] = [
    ("true", V2, json.dumps(_per_feature([True])).encode(), {}, "input 'amount': value 0 (True) is a bool"),
    ("false", V2, json.dumps(_per_feature([False])).encode(), {}, "input 'amount': value 0 (False) is a bool"),
    ("string", V2, json.dumps(_per_feature(["1.5"])).encode(), {}, "input 'amount': value 0 ('1.5') is a str"),
    ("fp64", V2, json.dumps(_per_feature([1.0], datatype="fp64")).encode(), {}, "'datatype' 'fp64' is not a v2"),
    ("bool-shape", V2, json.dumps(_features([[1.0] * F], shape=[True, F])).encode(), {}, "input 'features': 'shape'"),
    ("negative-shape", V2, json.dumps(_per_feature([1.0], shape=[-1])).encode(), {}, "non-negative integers"),
    (
        "nesting",
        V2,
        json.dumps(_per_feature([[1.0]])).encode(),
        {},
        "input 'amount': 'data' is nested deeper than shape [1]",
    ),
    ("deep", V2, b'{"inputs": ' + b"[" * 2000 + b"]" * 2000 + b"}", {}, "nested deeper than 1024 levels"),
    ("utf8", V2, b'{"inputs": [], "id": "\xff\xfe"}', {}, "not UTF-8: invalid byte 0xff at byte 22"),
    ("v1-nan", V1, b'{"instances": [{"amount": NaN}]}', {}, "at byte 26: NaN is not a JSON number"),
    ("malformed", V1, b'{"instances": [', {}, "not valid JSON at byte 15"),
    (
        "lying-header",
        V2,
        b'{"inputs": []}',
        {"Inference-Header-Content-Length": "500"},
        "Inference-Header-Content-Length: 500 does not lie within the body of 14 bytes",
    ),
    (
        "lying-binary-size",
        V2,
        json.dumps(
            {
                "inputs": [
                    {"name": "features", "shape": [1, F], "datatype": "FP64", "parameters": {"binary_data_size": 999}}
                ]
            }
        ).encode()
        + b"\0" * 8 * F,
        {"Inference-Header-Content-Length": "127"},
        f"binary_data_size add up to 999 bytes but {8 * F} bytes follow",
    ),
]


@pytest.mark.parametrize(
    ("route", "body", "headers", "needle"), [c[1:] for c in STRICT_CASES], ids=[c[0] for c in STRICT_CASES]
)
def test_strict_types_are_400_naming_the_problem(server: ServingProcess, route, body, headers, needle):
    if "binary_data_size" in body.decode(errors="replace"):
        headers = {"Inference-Header-Content-Length": str(body.index(b"}]}") + 3)}
    status, raw, _ = http("POST", server.url + route, body, headers)
    assert status == 400, raw
    assert needle in _error(raw), _error(raw)


def test_amount_maximum_applies_to_feature_vectors(custom: ServingProcess):
    row = _rows()[0]
    row[schema.FEATURES.index(schema.AMOUNT)] = 5000.0
    status, raw, _ = http("POST", custom.url + V2, _features([row]))
    assert status == 400 and "feature 'amount': 5000 in row 0 is above the maximum 1000" in _error(raw)
    status, raw, _ = http("POST", custom.url + V1, {"instances": [dict(zip(schema.FEATURES, row, strict=True))]})
    assert status == 400 and "above the maximum 1000" in _error(raw)


# -- 5. gRPC drains before the model unloads ------------------------------------------------------------------


def test_grpc_drains_before_the_model_unloads(tiny_bundle: Path, tmp_path: Path):
    request = _grpc_request(_rows() * 200)  # 400 rows: each call takes a few ms
    codes: list[grpc.StatusCode] = []
    lock = threading.Lock()
    stop = threading.Event()
    with serving_process(["--model_dir", str(tiny_bundle)], tmp_path) as proc:
        stub = _stub(proc)
        stub.ModelInfer(request, timeout=10)

        def hammer() -> None:
            while not stop.is_set():
                try:
                    stub.ModelInfer(request, timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code = exc.code()
                with lock:
                    codes.append(code)
                if code == grpc.StatusCode.UNAVAILABLE:
                    return

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=60) == 0
        stop.set()
        for t in threads:
            t.join(timeout=20)
    assert codes.count(grpc.StatusCode.OK) > 10
    # calls arriving once the server stops accepting are refused (UNAVAILABLE, or CANCELLED when they race the
    # shutdown); none may find the model gone (NOT_FOUND) or fail inside (INTERNAL)
    refused = {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert set(codes) <= refused, {c.name: codes.count(c) for c in set(codes)}


# -- 6. fuzzing ----------------------------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def _rest_case(draw: Any) -> tuple[str, bytes, dict[str, str]]:
    route = draw(st.sampled_from([V2, V1]))
    kind = draw(st.sampled_from(["json", "bytes", "mutated", "binary-header", "deep", "literal"]))
    valid = golden("v2_infer.request.json") if route == V2 else golden("v1_instances.request.json")
    valid.pop("_route")
    if kind == "json":
        body = json.dumps(draw(_json_values)).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "deep":
        depth = draw(st.integers(min_value=1, max_value=3000))
        body = b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
    elif kind == "literal":
        body = json.dumps(valid).encode().replace(b"0.", draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])), 1)
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


_DATATYPES = st.sampled_from(["FP64", "FP32", "fp64", "BYTES", "INT64", "BOOL", "", "FP16"])


@st.composite
def _grpc_case(draw: Any) -> pb.ModelInferRequest:
    n_inputs = draw(st.integers(min_value=0, max_value=3))
    inputs = []
    raw = []
    for _ in range(n_inputs):
        name = draw(st.sampled_from(["features", schema.AMOUNT, "transaction_id", "event_time", "x"]))
        shape = draw(st.lists(st.integers(min_value=-2, max_value=30), max_size=3))
        tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=draw(_DATATYPES), shape=shape)
        contents = draw(st.sampled_from(["fp64", "fp32", "int64", "bool", "bytes", "raw", "none"]))
        values = draw(st.lists(st.floats(width=32), max_size=50))
        if contents == "fp64":
            tensor.contents.fp64_contents.extend(values)
        elif contents == "fp32":
            tensor.contents.fp32_contents.extend(values)
        elif contents == "int64":
            tensor.contents.int64_contents.extend(int(v) for v in values if v == v and abs(v) < 1e18)
        elif contents == "bool":
            tensor.contents.bool_contents.extend(bool(v) for v in values)
        elif contents == "bytes":
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=10), max_size=10)))
        elif contents == "raw":
            raw.append(draw(st.binary(max_size=200)))
        inputs.append(tensor)
    request = pb.ModelInferRequest(model_name=draw(st.sampled_from([MODEL, MODEL, "nope"])), inputs=inputs)
    if raw and len(raw) == len(inputs):
        request.raw_input_contents.extend(raw)
    return request


def _check_rest(server: ServingProcess, case: tuple[str, bytes, dict[str, str]]) -> None:
    route, body, headers = case
    status, raw, _ = http("POST", server.url + route, body, headers)
    assert status < 500, (route, body[:200], headers, raw[:300])
    if status >= 400:
        message = _error(raw)
        assert NAMES_PROBLEM.search(message), (route, body[:200], headers, message)


_GRPC_CLIENT_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


def _check_grpc(stub: Any, request: pb.ModelInferRequest) -> None:
    try:
        stub.ModelInfer(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in _GRPC_CLIENT_CODES, (exc.code(), exc.details(), request)  # noqa: PT017
        assert NAMES_PROBLEM.search(exc.details() or ""), (exc.details(), request)  # noqa: PT017


_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_SLOW = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def probe(server: ServingProcess) -> Iterator[LivenessProbe]:
    with LivenessProbe(server.url) as live:
        yield live


@_FAST
@given(case=_rest_case())
def test_fuzzed_rest_bodies(server: ServingProcess, probe: LivenessProbe, case):
    _check_rest(server, case)


@pytest.fixture(scope="module")
def stub(server: ServingProcess) -> Any:
    return _stub(server)


@_FAST
@given(request=_grpc_case())
def test_fuzzed_grpc_requests(stub: Any, probe: LivenessProbe, request):
    _check_grpc(stub, request)


@pytest.mark.slow
@_SLOW
@given(case=_rest_case())
def test_fuzzed_rest_bodies_many(server: ServingProcess, probe: LivenessProbe, case):
    _check_rest(server, case)


@pytest.mark.slow
@_SLOW
@given(request=_grpc_case())
def test_fuzzed_grpc_requests_many(stub: Any, probe: LivenessProbe, request):
    _check_grpc(stub, request)


def test_liveness_stayed_under_a_second_while_fuzzing(server: ServingProcess, probe: LivenessProbe):
    assert not probe.failures, probe.failures[:5]
    assert probe.latencies and max(probe.latencies) < 1.0, sorted(probe.latencies)[-5:]
    assert http("POST", server.url + V2, _features(_rows()))[0] == 200


def test_readiness_is_false_once_the_model_is_unloaded(custom: ServingProcess):
    # last in the module: it unloads the custom server's model
    assert http("GET", custom.url + "/v2/health/ready")[0] == 200
    status, raw, _ = http("POST", f"{custom.url}/v2/repository/models/{MODEL}/unload")
    assert status == 200, raw
    assert http("GET", custom.url + "/v2/health/ready")[0] == 503
    assert http("GET", f"{custom.url}/v2/models/{MODEL}/ready")[0] in (404, 503)
    assert http("GET", custom.url + "/v2/health/live")[0] == 200
