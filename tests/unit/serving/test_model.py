"""FraudModel on a real tiny bundle, in-process: v2 (REST and gRPC objects), v1, errors, metrics, payload log."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from kserve import InferInput, InferRequest, InferResponse
from kserve.errors import InvalidInput, ModelNotFound, ServerNotReady
from kserve.model_repository import ModelRepository
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import RequestedOutput
from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from fraud_detection.data import schema
from fraud_detection.features.seed import SEED_COMPLETION
from fraud_detection.model.bundle import BundleIntegrityError, load_bundle
from fraud_detection.monitoring.payload_log import PayloadLogConfig, PayloadLogger
from fraud_detection.monitoring.payload_reader import read_payload_log
from fraud_detection.monitoring.telemetry import ServingMetrics
from fraud_detection.settings import ServeSettings
from fraud_detection.store.local import LocalStore
from serving.__main__ import (
    build_parser,
    default_host,
    find_bundle_dir,
    make_payload_logger_factory,
    read_settings,
)
from serving.__main__ import main as serving_main
from serving.grpc_server import grpc_error_kind
from serving.model import FraudModel
from serving.rest import (
    ScoringEndpoints,
    _as_json_unless_binary,
    error_kind,
    scoring_protocol,
    validation_error_handler,
)
from serving.server import TolerantDataPlane
from serving.strict import CheckedData

F = len(schema.FEATURES)
SEED = {"amount": 100, "hour_of_day": 14, "avg_monthly_spend": 500, "customer_tenure_days": 365, "num_prev_tx_24h": 5}


@pytest.fixture(scope="module")
def rows(small_features) -> np.ndarray:
    return small_features.loc[:, list(schema.FEATURES)].to_numpy(np.float64)[:5]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def model(tiny_bundle: Path, registry: CollectorRegistry) -> FraudModel:
    m = FraudModel("fraud-detector", lambda: load_bundle(tiny_bundle), metrics=ServingMetrics.create(registry))
    assert m.load() and m.ready
    return m


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _matrix_request(X: np.ndarray, outputs: list[str] | None = None, datatype: str = "FP64") -> InferRequest:
    inp = InferInput("features", list(X.shape), datatype, data=X.ravel().tolist())
    requested = [RequestedOutput(name) for name in outputs] if outputs else None
    return InferRequest("fraud-detector", [inp], request_id="req-1", request_outputs=requested)


def test_load_runs_a_warm_up_and_binds_metrics_to_the_version(model: FraudModel, registry, tiny_bundle):
    meta = load_bundle(tiny_bundle).metadata
    assert model.loaded is not None and model.loaded.version == meta.version
    info = {"model_name": "fraud-detector", "model_version": meta.version, "threshold": f"{meta.threshold:g}"}
    assert _value(registry, "fraud_serving_model_info", **info) == 1.0


def test_a_bundle_that_fails_verification_never_becomes_ready(tiny_bundle: Path, tmp_path: Path, registry):
    bad = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bad)
    (bad / "metadata.json").write_text((bad / "metadata.json").read_text().replace('"threshold"', '"threshold" '))
    m = FraudModel("fraud-detector", lambda: load_bundle(bad), metrics=ServingMetrics.create(registry))
    with pytest.raises(BundleIntegrityError, match=r"metadata\.json digest"):
        m.load()
    assert not m.ready


def test_metadata_lists_every_input_and_output(model: FraudModel):
    inputs = model.get_input_types()
    assert [i["name"] for i in inputs] == list(schema.FEATURES)
    assert all(i["datatype"] == "FP64" and i["shape"] == [-1] for i in inputs)
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in model.get_output_types()}
    assert outputs == {"fraud_score": ("FP32", [-1]), "is_fraud": ("BOOL", [-1]), "reason_codes": ("BYTES", [-1])}


def test_v2_rest_request_gives_scores_decisions_and_the_version(model: FraudModel, rows, registry):
    scorer = model.loaded.scorer
    response = model.predict(_matrix_request(rows))
    assert isinstance(response, InferResponse)
    body, _ = response.to_rest()
    assert body["id"] == "req-1" and body["model_version"] == model.loaded.version
    assert body["parameters"]["model_version"] == model.loaded.version
    outputs = {o["name"]: o for o in body["outputs"]}
    assert list(outputs) == ["fraud_score", "is_fraud"]
    assert outputs["fraud_score"]["datatype"] == "FP32" and outputs["fraud_score"]["shape"] == [5]
    expected = scorer.predict_proba(rows)
    np.testing.assert_allclose(outputs["fraud_score"]["data"], expected, rtol=1e-6)
    assert outputs["is_fraud"]["data"] == (expected >= scorer.threshold).tolist()
    version = model.loaded.version
    fraud = _value(
        registry,
        "fraud_serving_predictions_total",
        model_name="fraud-detector",
        model_version=version,
        decision="fraud",
    )
    legit = _value(
        registry,
        "fraud_serving_predictions_total",
        model_name="fraud-detector",
        model_version=version,
        decision="legit",
    )
    assert fraud + legit == 5
    assert _value(registry, "fraud_serving_score_ratio_count", model_name="fraud-detector", model_version=version) == 5


def test_reason_codes_only_when_requested_and_in_requested_order(model: FraudModel, rows):
    body, _ = model.predict(_matrix_request(rows[:2], ["reason_codes", "fraud_score"])).to_rest()
    assert [o["name"] for o in body["outputs"]] == ["reason_codes", "fraud_score"]
    codes = [json.loads(s) for s in body["outputs"][0]["data"]]
    assert len(codes) == 2 and len(codes[0]) == 3
    assert {c["feature"] for c in codes[0]} <= set(schema.FEATURES)
    assert body["parameters"]["reason_code_method"] == "saabas"
    assert 0 < float(body["parameters"]["reason_code_baseline"]) < 1


def test_grpc_request_with_raw_tensors_round_trips(model: FraudModel, rows):
    request = pb.ModelInferRequest(model_name="fraud-detector", id="g-1")
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "features", "FP32"
    tensor.shape.extend([2, F])
    request.raw_input_contents.append(rows[:2].astype(np.float32).tobytes())
    request.outputs.add().name = "is_fraud"
    request.outputs.add().name = "reason_codes"
    response = model.predict(InferRequest.from_grpc(request)).to_grpc()
    assert [o.name for o in response.outputs] == ["is_fraud", "reason_codes"]
    assert len(response.raw_output_contents) == 2
    assert response.parameters["model_version"].string_param == model.loaded.version


def test_per_feature_tensors_equal_the_matrix(model: FraudModel, rows):
    inputs = [
        InferInput(name, [3], "FP32", data=rows[:3, j].astype(np.float32).tolist())
        for j, name in enumerate(schema.FEATURES)
    ]
    body, _ = model.predict(InferRequest("fraud-detector", inputs)).to_rest()
    matrix, _ = model.predict(_matrix_request(rows[:3].astype(np.float32), datatype="FP32")).to_rest()
    assert body["outputs"][0]["data"] == matrix["outputs"][0]["data"]


@pytest.mark.parametrize(
    ("inputs", "outputs", "needle"),
    [
        ([InferInput("features", [1, 5], "FP32", data=[1, 2, 3, 4, 5])], None, "'features': shape \\[1, 5\\]"),
        ([InferInput("features", [1, F], "INT64", data=[1] * F)], None, "'features': datatype INT64"),
        ([InferInput("amount", [1], "FP32", data=[1.0])], None, "missing feature\\(s\\): hour_of_day"),
        ([InferInput("features", [1, F], "FP32", data=[-1.0] + [1.0] * (F - 1))], None, "'amount': negative"),
        ([InferInput("features", [1, F], "FP32", data=[1.0] * F)], ["colour"], "unknown output 'colour'"),
    ],
)
def test_bad_v2_requests_raise_invalid_input_naming_the_problem(model: FraudModel, inputs, outputs, needle):
    requested = [RequestedOutput(n) for n in outputs] if outputs else None
    with pytest.raises(InvalidInput, match=needle):
        model.predict(InferRequest("fraud-detector", inputs, request_outputs=requested))


def test_v1_seed_body_is_scored_with_the_filled_features_listed(model: FraudModel):
    response = model.predict({"features": SEED})
    (prediction,) = response["predictions"]
    assert 0 <= prediction["fraud_score"] <= 1 and isinstance(prediction["is_fraud"], bool)
    assert prediction["imputed_features"] == [f for f in schema.FEATURES if f not in SEED]
    assert response["imputed_from"] == SEED_COMPLETION
    assert response["model_version"] == model.loaded.version


def test_v1_instances_as_objects_or_rows_with_reason_codes(model: FraudModel, rows):
    records = [dict(zip(schema.FEATURES, r.tolist(), strict=True)) for r in rows[:2]]
    as_objects = model.predict({"instances": records, "reason_codes": True}, {"x-request-id": "hdr-7"})
    as_rows = model.predict({"instances": rows[:2].tolist()})
    assert as_objects["id"] == "hdr-7"
    assert [p["fraud_score"] for p in as_objects["predictions"]] == [p["fraud_score"] for p in as_rows["predictions"]]
    assert "imputed_features" not in as_objects["predictions"][0] and "imputed_from" not in as_objects
    assert len(as_objects["predictions"][0]["reason_codes"]) == 3
    assert "reason_codes" not in as_rows["predictions"][0]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json", "not valid JSON at byte 0"),
        ([1, 2], "must be a JSON object"),
        ({"instances": [], "features": {}}, "exactly one of"),
        ({"inputs": []}, "unknown key 'inputs'"),
        ({"features": [1, 2]}, "'features' must be an object"),
        ({"instances": {"amount": 1}}, "'instances' must be a list"),
        ({"instances": [[1, 2]]}, f"row 0: 2 values, expected {F}"),
        ({"instances": [[True] * F]}, "expected a number"),
        ({"features": {"hour_of_day": 3}}, "missing feature 'amount'"),
        ({"features": {**SEED, "amount": "12"}}, "'amount': expected a number"),
        ({"features": SEED, "reason_codes": "yes"}, "'reason_codes' must be true or false"),
        ({"instances": []}, "no rows"),
    ],
)
def test_bad_v1_bodies_raise_invalid_input(model: FraudModel, body, needle):
    with pytest.raises(InvalidInput, match=needle):
        model.predict(body)


def test_batch_limit_is_enforced(tiny_bundle: Path, registry, rows):
    m = FraudModel(
        "fraud-detector", lambda: load_bundle(tiny_bundle), metrics=ServingMetrics.create(registry), max_batch_size=3
    )
    m.load()
    with pytest.raises(InvalidInput, match="4 rows exceeds the limit of 3"):
        m.predict(_matrix_request(np.repeat(rows[:1], 4, axis=0)))
    with pytest.raises(InvalidInput, match="exceeds the limit"):
        m.predict({"instances": [SEED] * 4})


def test_scored_rows_reach_the_payload_log(tiny_bundle: Path, registry, tmp_path: Path, rows):
    store = LocalStore(tmp_path)
    made: list[PayloadLogger] = []

    def factory(version, on_drop):
        made.append(PayloadLogger(store, "fraud-detector", version, PayloadLogConfig(flush_rows=1000), on_drop=on_drop))
        return made[-1]

    m = FraudModel(
        "fraud-detector",
        lambda: load_bundle(tiny_bundle),
        metrics=ServingMetrics.create(registry),
        payload_logger_factory=factory,
    )
    m.load()
    m.predict(_matrix_request(rows[:2]))
    m.predict({"features": {**SEED, "transaction_id": "tx-9"}}, {"x-request-id": "seed-1"})
    m.stop()
    assert not m.ready
    now = datetime.now(UTC)
    frame = read_payload_log(store, "fraud-detector", now - timedelta(hours=1), now + timedelta(hours=1))
    assert frame["request_id"].tolist() == ["req-1", "req-1", "seed-1"]
    assert (frame["model_version"] == m.loaded.version).all()
    assert frame["imputed"].iloc[2].startswith("is_weekend,is_night")
    assert frame["transaction_key"].iloc[2] is not None and "transaction_id" not in frame.columns
    made[0].close()


# -- server glue ---------------------------------------------------------------------------------------------


def test_scoring_routes_and_error_kinds():
    assert scoring_protocol("POST", "/v2/models/fraud-detector/infer") == "v2_rest"
    assert scoring_protocol("POST", "/v2/models/fraud-detector/versions/3/infer") == "v2_rest"
    assert scoring_protocol("POST", "/v1/models/fraud-detector:predict") == "v1_rest"
    assert scoring_protocol("GET", "/v2/models/fraud-detector/infer") is None
    assert scoring_protocol("POST", "/v2/repository/models/x/load") is None
    assert [error_kind(s) for s in (200, 400, 404, 405, 422, 500, 502, 503)] == [
        None,
        "validation",
        "not_found",
        "validation",
        "validation",
        "internal",
        "internal",
        "unavailable",  # the online feature store is down
    ]
    assert grpc_error_kind(InvalidInput("x")) == "validation"
    assert grpc_error_kind(ServerNotReady("online store down")) == "unavailable"
    assert grpc_error_kind(ModelNotFound("x")) == "not_found"
    assert grpc_error_kind(RuntimeError("x")) == "internal"


def test_v2_bodies_without_the_binary_header_are_marked_json():
    def headers(*pairs):
        return {"type": "http", "headers": [(k.encode(), v.encode()) for k, v in pairs]}

    def content_type(scope):
        return [v for k, v in scope["headers"] if k == b"content-type"]

    assert content_type(_as_json_unless_binary(headers())) == [b"application/json"]  # tritonclient
    assert content_type(_as_json_unless_binary(headers(("Content-Type", "application/x-www-form-urlencoded")))) == [
        b"application/json"
    ]
    binary = headers(("inference-header-content-length", "120"), ("content-type", "application/octet-stream"))
    assert _as_json_unless_binary(binary) is binary
    json_ct = headers(("content-type", "application/json; charset=utf-8"))
    assert _as_json_unless_binary(json_ct) is json_ct


def test_schema_failures_become_400_naming_the_field():
    exc = RequestValidationError([{"loc": ("body", "inputs"), "msg": "Field required", "type": "missing"}])
    response = asyncio.run(validation_error_handler(None, exc))
    assert response.status_code == 400
    assert json.loads(response.body) == {"error": "invalid request body: inputs: Field required"}


def test_malformed_binary_bodies_become_invalid_input():
    plane = TolerantDataPlane(model_registry=ModelRepository())
    headers = {"inference-header-content-length": "2"}
    with pytest.raises(InvalidInput, match="missing field 'inputs'"):
        plane.decode(b"{}", headers, protocol_version="v2", model_name="m")
    with pytest.raises(InvalidInput, match="malformed"):
        plane.decode(b'{"inputs": 3}', {"inference-header-content-length": "13"}, protocol_version="v2", model_name="m")


def test_rest_decode_hands_the_checked_features_over_marked_and_grpc_data_unmarked(model: FraudModel, rows):
    plane = TolerantDataPlane(model_registry=ModelRepository())
    body = {
        "inputs": [
            {"name": "features", "datatype": "FP64", "shape": [len(rows), F], "data": rows.tolist()},
            {"name": "transaction_id", "datatype": "BYTES", "shape": [len(rows)], "data": ["a"] * len(rows)},
        ]
    }
    request = ScoringEndpoints(plane, max_rows=10)._decode_v2(json.dumps(body).encode(), {}, "fraud-detector")
    assert isinstance(request.inputs[0].data, CheckedData) and type(request.inputs[1].data) is list
    grpc = InferRequest(
        "fraud-detector", [InferInput("features", [len(rows), F], "FP64", rows.tolist())], from_grpc=True
    )
    assert not isinstance(grpc.inputs[0].data, CheckedData)
    np.testing.assert_array_equal(model.predict(request).outputs[0].data, model.predict(grpc).outputs[0].as_numpy())


def test_v2_json_responses_are_rendered_as_fastapi_renders_the_response_model(model: FraudModel, rows):
    repository = ModelRepository()
    repository.update(model)
    app = FastAPI()
    endpoints = ScoringEndpoints(TolerantDataPlane(model_registry=repository), max_rows=10)
    app.add_api_route("/v2/models/{model_name}/infer", endpoints.v2_infer, methods=["POST"], response_model=None)
    body = {
        "id": "r1",
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [len(rows), F], "data": rows.tolist()}],
        "outputs": [{"name": "fraud_score"}, {"name": "is_fraud"}, {"name": "features"}],
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    path = "/v2/models/fraud-detector/infer"
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b""}
    asyncio.run(app({**scope, "headers": [(b"content-type", b"application/json")]}, receive, send))
    assert sent[0]["status"] == 200 and (b"content-type", b"application/json") in sent[0]["headers"]
    expected = InferenceResponse.model_validate(
        model.predict(
            InferRequest.from_inference_request(InferenceRequest.model_validate(body), "fraud-detector")
        ).to_rest()[0]
    )
    rendered = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert rendered == jsonable_encoder(expected)
    assert rendered["id"] == "r1" and len(rendered["outputs"][2]["data"]) == len(rows) * F


# -- entry point helpers -------------------------------------------------------------------------------------


def test_bind_host_is_loopback_unless_in_a_pod_or_configured():
    assert default_host({}) == "127.0.0.1"
    assert default_host({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "0.0.0.0"
    assert default_host({"KUBERNETES_SERVICE_HOST": "x", "FRAUD_SERVING_HOST": "127.0.0.2"}) == "127.0.0.2"


def test_flags_default_to_the_charts_environment():
    env = {
        "FRAUD_MODEL_NAME": "fd",
        "FRAUD_STORE_URI": "s3://bucket/p",
        "FRAUD_PAYLOAD_LOG_ENABLED": "false",
        "FRAUD_PAYLOAD_LOG_FLUSH_ROWS": "7",
        "FRAUD_PAYLOAD_LOG_IDENTIFIERS": "true",
        "FRAUD_MODEL_VERSION": "v9",
    }
    args = build_parser(env).parse_args(["--model_dir", "/mnt/models", "--http_port", "1", "--grpc_port", "2"])
    assert (args.model_name, args.store_uri, args.payload_log) == ("fd", "s3://bucket/p", "off")
    assert (args.payload_log_flush_rows, args.payload_log_identifiers, args.expected_version) == (7, True, "v9")
    assert make_payload_logger_factory(args, settings=None) is None  # type: ignore[arg-type]
    auto = build_parser({}).parse_args(["--model_dir", "d"])
    assert auto.payload_log == "auto" and auto.model_name == "fraud-detector" and auto.host == "127.0.0.1"
    assert make_payload_logger_factory(auto, settings=None) is None  # type: ignore[arg-type]


def test_flags_defaults_come_from_serve_settings_not_os_environ(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FRAUD_STORE_URI", "s3://from-os-environ/p")
    env = {
        "FRAUD_MAX_BATCH_SIZE": "50",
        "FRAUD_SCORER": "sklearn",
        "FRAUD_PAYLOAD_LOG_ENABLED": "true",
        "FRAUD_PAYLOAD_LOG_FLUSH_SECONDS": "2.5",
        "FRAUD_PAYLOAD_LOG_MAX_ROWS": "70",
        "FRAUD_PAYLOAD_LOG_URI": "az://payload-logs",
        "FRAUD_MODEL_REF": "canary",
        "FRAUD_LOG_LEVEL": "DEBUG",
        "FRAUD_SERVING_HOST": "",
    }
    args = build_parser(env).parse_args([])
    assert (args.max_batch_size, args.scorer, args.payload_log) == (50, "sklearn", "on")
    assert (args.payload_log_flush_seconds, args.payload_log_max_rows, args.payload_log_uri) == (
        2.5,
        70,
        "az://payload-logs",
    )
    assert (args.model_ref, args.log_level, args.host, args.store_uri) == ("canary", "DEBUG", "127.0.0.1", None)
    settings = read_settings(env)
    assert isinstance(settings, ServeSettings) and settings.store_uri == ".fraud/store"
    with pytest.raises(ValidationError, match="max_batch_size"):
        build_parser({"FRAUD_MAX_BATCH_SIZE": "many"})
    with pytest.raises(ValidationError, match="scorer"):
        build_parser({"FRAUD_SCORER": "fast"})


def test_invalid_environment_exits_2_before_loading(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FRAUD_PAYLOAD_LOG_FLUSH_ROWS", "lots")
    monkeypatch.setattr("serving.__main__.configure_logging", lambda *args, **kwargs: None)
    assert serving_main(["--model_dir", "/nonexistent"]) == 2


def test_model_dir_may_hold_the_bundle_or_one_bundle_folder(tiny_bundle: Path, tmp_path: Path):
    assert find_bundle_dir(tiny_bundle) == tiny_bundle
    nested = tmp_path / "mnt"
    shutil.copytree(tiny_bundle, nested / "20260101-000000-abcdef12")
    assert find_bundle_dir(nested) == nested / "20260101-000000-abcdef12"
    with pytest.raises(BundleIntegrityError, match="no bundle"):
        find_bundle_dir(tmp_path / "empty")


def test_readiness_checks_answer_from_the_ping_cache_without_a_thread_per_request(
    tiny_bundle: Path, registry, monkeypatch: pytest.MonkeyPatch
):
    from fraud_detection.features.service import OnlineFeatures
    from fraud_detection.features.state.base import OnlineStoreUnavailableError
    from fraud_detection.features.state.embedded import EmbeddedStore

    class NetworkStore(EmbeddedStore):
        waits_on_io = True
        pings = 0
        down = False

        def ping(self) -> None:
            type(self).pings += 1
            if self.down:
                raise OnlineStoreUnavailableError("down")

    threads: list[object] = []
    real_to_thread = asyncio.to_thread

    async def counting_to_thread(fn, *args):
        threads.append(fn)
        return await real_to_thread(fn, *args)

    monkeypatch.setattr("serving.model.asyncio.to_thread", counting_to_thread)
    m = FraudModel(
        "fraud-detector",
        lambda: load_bundle(tiny_bundle),
        metrics=ServingMetrics.create(registry),
        online_factory=lambda delay: OnlineFeatures(NetworkStore(None, delay), delay),
    )
    assert m.load()

    async def checks(n: int) -> list[bool]:
        return [await m.healthy() for _ in range(n)]

    assert asyncio.run(checks(50)) == [True] * 50
    assert NetworkStore.pings == 1 and len(threads) == 1  # one ping (in a thread), then the cache answers
    assert m.online is not None
    m.online._healthy_until = 0.0  # the cache expired (or a store call failed)
    NetworkStore.down = True
    assert asyncio.run(checks(2)) == [False, False]  # a failed ping is never cached
    assert NetworkStore.pings == 3 and len(threads) == 3
    m.stop()
