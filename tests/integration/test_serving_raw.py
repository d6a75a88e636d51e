"""Raw-transaction scoring through ``python -m serving`` on loopback, against the offline features row by row.

The headline test: simulate, materialize the online state from the first part of the history, then replay the rest
in event order through the server (v2 REST and gRPC alternating, the rows of each hour in one request), ingesting
each label into the online state once it is older than the label delay. Every served feature vector must equal the
offline executor's for the same transaction, and every served score the batch score of those offline features.
Also: retries, a store that dies and comes back, degraded mode, and the 400s of bad raw input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest

from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate
from fraud_detection.features.definitions import HOUR, SECONDS_PER_DAY
from fraud_detection.features.materialize import build_snapshot
from fraud_detection.features.offline import FeatureConfig, build_features
from fraud_detection.features.state.redis_store import RedisStore
from fraud_detection.features.state.uri import open_online_store
from fraud_detection.model.bundle import load_bundle
from fraud_detection.scoring.scorer import Scorer
from tests.helpers.redis import RedisServer, redis_server
from tests.helpers.serving import MODEL, ServingProcess, golden, http, same_structure, serving_process

pytestmark = pytest.mark.integration
DELAY = 7
F = len(schema.FEATURES)


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    raw = simulate(SimulationConfig(n_customers=120, n_terminals=240, n_days=40, seed=21))
    return raw.sort_values(schema.EVENT_TIME, kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def offline(history: pd.DataFrame) -> pd.DataFrame:
    return build_features(history, FeatureConfig(label_delay_days=DELAY))


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis"), persistent=True) as server:
        yield server


def _split(history: pd.DataFrame, live_days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = history[schema.EVENT_TIME].iloc[0] + pd.Timedelta(days=28)
    end = cut + pd.Timedelta(days=live_days)
    t = history[schema.EVENT_TIME]
    return history[t < cut], history[(t >= cut) & (t < end)]


def _iso(ts: pd.Series) -> list[str]:
    return [v.isoformat() for v in ts]


def _text(name: str, values: list[str]) -> dict[str, Any]:
    return {"name": name, "datatype": "BYTES", "shape": [len(values)], "data": values}


def v2_body(rows: pd.DataFrame, **parameters: Any) -> dict[str, Any]:
    return {
        "inputs": [
            _text("transaction_id", rows["transaction_id"].astype(str).tolist()),
            _text("event_time", _iso(rows["event_time"])),
            _text("customer_id", rows["customer_id"].astype(str).tolist()),
            _text("terminal_id", rows["terminal_id"].astype(str).tolist()),
            {"name": "amount", "datatype": "FP64", "shape": [len(rows)], "data": rows["amount"].astype(float).tolist()},
        ],
        "parameters": {"return_features": True, **parameters},
    }  # fmt: skip


def rest_score(server: ServingProcess, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    status, body, _ = http("POST", f"{server.url}/v2/models/{MODEL}/infer", v2_body(rows))
    assert status == 200, body
    out = {o["name"]: o for o in json.loads(body)["outputs"]}
    return np.asarray(out["features"]["data"], dtype=np.float64).reshape(-1, F), np.asarray(
        out["fraud_score"]["data"], dtype=np.float32
    )


def grpc_score(server: ServingProcess, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    n = len(rows)

    def text(name: str, values: list[str]) -> Any:
        contents = pb.InferTensorContents(bytes_contents=[v.encode() for v in values])
        return pb.ModelInferRequest.InferInputTensor(name=name, datatype="BYTES", shape=[n], contents=contents)

    request = pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[
            text("transaction_id", rows["transaction_id"].astype(str).tolist()),
            text("event_time", _iso(rows["event_time"])),
            text("customer_id", rows["customer_id"].astype(str).tolist()),
            text("terminal_id", rows["terminal_id"].astype(str).tolist()),
            pb.ModelInferRequest.InferInputTensor(
                name="amount", datatype="FP64", shape=[n],
                contents=pb.InferTensorContents(fp64_contents=rows["amount"].astype(float).tolist()),
            ),
        ],
        parameters={"return_features": pb.InferParameter(bool_param=True)},
    )  # fmt: skip
    with grpc.insecure_channel(server.grpc) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    raw = dict(zip([o.name for o in response.outputs], response.raw_output_contents, strict=True))
    return np.frombuffer(raw["features"], dtype="<f8").reshape(n, F), np.frombuffer(raw["fraud_score"], dtype="<f4")


def replay(server: ServingProcess, live: pd.DataFrame, label_store: RedisStore | None) -> tuple[np.ndarray, np.ndarray]:
    """Replay the rows hour by hour (one request per hour, alternating REST and gRPC), labels ingested when due."""
    seconds = live[schema.EVENT_TIME].to_numpy(dtype="datetime64[s]").astype(np.int64)
    hours = seconds // HOUR
    features = np.empty((len(live), F))
    scores = np.empty(len(live), dtype=np.float32)
    labelled = 0
    for k, hour in enumerate(np.unique(hours)):
        idx = np.flatnonzero(hours == hour)
        if label_store is not None:
            # Labels the rows of this hour may see: transactions before the hour that ended the delay ago.
            shifted = hour * HOUR - DELAY * SECONDS_PER_DAY
            due = np.flatnonzero(seconds < shifted - shifted % HOUR)
            new = due[due >= labelled] if len(due) else due
            if len(new):
                rows = live.iloc[new]
                label_store.apply_labels(
                    list(zip(rows["transaction_id"].astype(str), rows["is_fraud"].astype(int), strict=True))
                )
                labelled = int(new.max()) + 1
        rows = live.iloc[idx]
        got_f, got_s = (rest_score if k % 2 == 0 else grpc_score)(server, rows)
        features[idx], scores[idx] = got_f, got_s
    return features, scores


def _expected(offline: pd.DataFrame, live: pd.DataFrame, bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    X = offline.loc[live.index, list(schema.FEATURES)].to_numpy(dtype=np.float64)
    scorer = Scorer.from_bundle(load_bundle(bundle))
    return X, scorer.score_batch(X).astype(np.float32)


def test_served_features_and_scores_equal_offline_ones_on_redis(
    history: pd.DataFrame, offline: pd.DataFrame, tiny_bundle: Path, redis: RedisServer, tmp_path: Path
):
    past, live = _split(history, live_days=9)  # longer than the label delay: live labels reach the state
    url = f"redis://127.0.0.1:{redis.port}/3"  # a database of its own
    store = RedisStore(url, DELAY)
    store.load(build_snapshot(past, DELAY)[0])
    with serving_process(["--model_dir", str(tiny_bundle), "--online_store", url], tmp_path) as server:
        features, scores = replay(server, live, store)
    store.close()
    want_f, want_s = _expected(offline, live, tiny_bundle)
    np.testing.assert_allclose(features, want_f, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(scores, want_s)
    assert len(live) > 1_000 and live[schema.LABEL].sum() > 0


def test_served_features_equal_offline_ones_on_the_embedded_store(
    history: pd.DataFrame, offline: pd.DataFrame, tiny_bundle: Path, tmp_path: Path
):
    past, live = _split(history, live_days=2)  # within the label delay: no live label is needed
    state = tmp_path / "state"
    store = open_online_store(str(state), DELAY)
    store.load(build_snapshot(past, DELAY)[0])
    store.close()
    with serving_process(["--model_dir", str(tiny_bundle), "--online_store", str(state)], tmp_path) as server:
        features, scores = replay(server, live, None)
        # A retried request is answered but never counted twice.
        again_f, _ = rest_score(server, live.tail(3))
        later = live.tail(1).copy()
        later["transaction_id"] = "after-the-retry"
        later["event_time"] = later["event_time"] + pd.Timedelta(minutes=2)
        after_f, _ = rest_score(server, later)
    want_f, want_s = _expected(offline, live, tiny_bundle)
    np.testing.assert_allclose(features, want_f, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(scores, want_s)
    count_1d = schema.FEATURES.index("customer_tx_count_1d")
    np.testing.assert_array_equal(again_f[:, count_1d], want_f[-3:, count_1d])
    assert after_f[0, count_1d] == want_f[-1, count_1d] + 1  # the last row counted once, not twice


def test_a_store_outage_gives_503_and_unavailable_never_500_and_nothing_is_double_counted(
    history: pd.DataFrame, tiny_bundle: Path, tmp_path: Path
):
    _, live = _split(history, live_days=1)
    with redis_server(tmp_path / "redis", persistent=True) as redis:
        args = ["--model_dir", str(tiny_bundle), "--online_store", redis.url]
        with serving_process(args, tmp_path) as server:
            first, _ = rest_score(server, live.head(5))
            redis.kill()
            status, body, _ = http("POST", f"{server.url}/v2/models/{MODEL}/infer", v2_body(live.iloc[5:6]))
            assert status == 503 and b"online feature store unavailable" in body, body
            with pytest.raises(grpc.RpcError) as info:
                grpc_score(server, live.iloc[5:6])
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert http("GET", f"{server.url}/v2/health/ready")[0] == 503
            assert http("GET", f"{server.url}/v2/health/live")[0] == 200
            assert http("GET", f"{server.url}/v2/models/{MODEL}/infer")[0] != 500
            metrics = http("GET", f"{server.url}/metrics")[1].decode()
            assert 'fraud_serving_online_store_failures_total{model_name="fraud-detector"' in metrics
            assert 'kind="unavailable"' in metrics
            redis.start()
            status, _, _ = http("GET", f"{server.url}/v2/health/ready")
            assert status == 200
            # The row refused during the outage was never recorded; sending it again counts it once.
            again, _ = rest_score(server, live.iloc[:6])
            count_1d = schema.FEATURES.index("customer_tx_count_1d")
            np.testing.assert_array_equal(again[:5, count_1d], first[:, count_1d])


def test_degraded_mode_scores_without_history_and_says_so(tiny_bundle: Path, history: pd.DataFrame, tmp_path: Path):
    _, live = _split(history, live_days=1)
    with redis_server(tmp_path / "redis") as redis:
        args = ["--model_dir", str(tiny_bundle), "--online_store", redis.url, "--online_store_unavailable", "degraded"]
        with serving_process(args, tmp_path) as server:
            redis.kill()
            status, body, _ = http("POST", f"{server.url}/v2/models/{MODEL}/infer", v2_body(live.head(2)))
            assert status == 200, body
            assert json.loads(body)["parameters"]["features_source"].startswith("degraded")
            assert http("GET", f"{server.url}/v2/health/ready")[0] == 200


@pytest.fixture(scope="module")
def plain_server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    with serving_process(["--model_dir", str(tiny_bundle)], tmp_path_factory.mktemp("plain")) as server:
        yield server


def test_raw_transactions_without_an_online_store_get_a_400_saying_so(plain_server, history):
    status, body, _ = http("POST", f"{plain_server.url}/v2/models/{MODEL}/infer", v2_body(history.head(1)))
    assert status == 400 and b"online feature store" in body and b"--online_store" in body


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b["inputs"].pop(2), b"missing input(s) customer_id"),
        (lambda b: b["inputs"][1].update(data=["2018-05-01T10:00:00"]), b"no UTC offset"),
        (lambda b: b["inputs"][1].update(data=["yesterday"]), b"not an ISO 8601 time"),
        (lambda b: b["inputs"][4].update(data=[-5.0]), b"negative value"),
        (lambda b: b["inputs"][4].update(datatype="BYTES", data=["5"]), b"expected FP32 or FP64"),
        (lambda b: b["inputs"][0].update(datatype="FP64", data=[1.0]), b"expected BYTES"),
        (lambda b: b["inputs"][3].update(shape=[2], data=["a", "b"]), b"shape [2], expected [1]"),
        (
            lambda b: b["inputs"].append({"name": "hour_of_day", "datatype": "FP64", "shape": [1], "data": [3]}),
            b"unknown input 'hour_of_day'",
        ),
    ],
)  # fmt: skip
def test_bad_raw_input_is_a_400_naming_the_field(history, tmp_path, tiny_bundle, change, message, raw_server):
    body = v2_body(history.head(1))
    change(body)
    status, answer, _ = http("POST", f"{raw_server.url}/v2/models/{MODEL}/infer", body)
    assert status == 400 and message in answer, answer


@pytest.fixture(scope="module")
def raw_server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    args = ["--model_dir", str(tiny_bundle), "--online_store", "memory"]
    with serving_process(args, tmp_path_factory.mktemp("raw")) as server:
        yield server


def test_v1_instances_of_raw_transactions_are_scored_with_their_features(raw_server, history):
    rows = history.head(2)
    instances = [
        {
            "transaction_id": str(r.transaction_id),
            "event_time": r.event_time.isoformat(),
            "customer_id": str(r.customer_id),
            "terminal_id": str(r.terminal_id),
            "amount": float(r.amount),
        }
        for r in rows.itertuples()
    ]
    status, body, _ = http(
        "POST", f"{raw_server.url}/v1/models/{MODEL}:predict", {"instances": instances, "return_features": True}
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer["features_source"] == "online"
    assert set(answer["predictions"][0]["features"]) == set(schema.FEATURES)
    assert answer["predictions"][0]["features"]["amount"] == float(rows["amount"].iloc[0])


@pytest.mark.parametrize(
    ("name", "route"),
    [
        ("v2_raw", f"/v2/models/{MODEL}/infer"),
        ("v1_raw", f"/v1/models/{MODEL}:predict"),
        ("v2_raw_error_no_offset", f"/v2/models/{MODEL}/infer"),
    ],
)
def test_raw_requests_answer_as_their_golden_files(tiny_bundle: Path, tmp_path: Path, name: str, route: str):
    """Golden files of docs/SERVING.md: same structure; the features (model-independent, from a fresh state) exactly."""
    with serving_process(["--model_dir", str(tiny_bundle), "--online_store", "memory"], tmp_path) as server:
        status, body, _ = http("POST", server.url + route, golden(f"raw/{name}.request.json"))
    answer, expected = json.loads(body), golden(f"raw/{name}.response.json")
    assert status == (400 if "error" in name else 200), answer
    assert same_structure(answer, expected) == []
    if name == "v2_raw":
        got = next(o for o in answer["outputs"] if o["name"] == "features")["data"]
        assert got == next(o for o in expected["outputs"] if o["name"] == "features")["data"]
    if name == "v1_raw":
        assert answer["predictions"][0]["features"] == expected["predictions"][0]["features"]


def test_two_server_replicas_sharing_one_redis_count_every_transaction_of_a_customer_once(
    tiny_bundle: Path, redis: RedisServer, tmp_path: Path
):
    """Two `python -m serving` processes, one Redis: concurrent writers on the same card lose no update, and a
    transaction retried against the other replica is not counted again."""
    import threading

    url = f"redis://127.0.0.1:{redis.port}/5"
    base = pd.Timestamp("2024-05-01T10:00:00Z")
    rows = pd.DataFrame(
        {
            "transaction_id": [f"tx-{i}" for i in range(120)],
            "event_time": [base + pd.Timedelta(minutes=2 * i) for i in range(120)],
            "customer_id": "shared-card",
            "terminal_id": [f"pos-{i % 7}" for i in range(120)],
            "amount": 10.0,
        }
    )
    args = ["--model_dir", str(tiny_bundle), "--online_store", url]
    with serving_process(args, tmp_path / "a") as one, serving_process(args, tmp_path / "b") as two:
        errors: list[BaseException] = []

        def send(server: ServingProcess, part: pd.DataFrame) -> None:
            try:
                for i in range(len(part)):
                    rest_score(server, part.iloc[i : i + 1])
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=send, args=(one, rows.iloc[0::2])),
            threading.Thread(target=send, args=(two, rows.iloc[1::2])),
            threading.Thread(target=send, args=(two, rows.iloc[0::2])),  # retries of the other replica's rows
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        later = rows.tail(1).assign(transaction_id="after", event_time=base + pd.Timedelta(hours=5))
        features, _ = rest_score(one, later)
    store = RedisStore(url, DELAY)
    hours = {k: v for k, v in store.fields("c:shared-card").items() if k.startswith("h") and k.endswith("n")}
    assert sum(hours.values()) == len(rows) + 1  # every transaction once, none twice
    store.close()
    count_1d = schema.FEATURES.index("customer_tx_count_1d")
    assert features[0, count_1d] == len(rows) + 1
