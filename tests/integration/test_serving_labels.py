"""The label feed of ``python -m serving`` (``POST /v2/models/<name>/labels``) on loopback: labels reach the online
state's terminal fraud counts (terminal risk behind the label delay, as offline) and the store beside the payload
log; repeated labels change nothing; bad bodies are 400s naming the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fraud_detection.data import schema
from tests.helpers.serving import MODEL, ServingProcess, http, serving_process
from tests.integration.test_serving_raw import DELAY, F, rest_score

pytestmark = pytest.mark.integration
T0 = pd.Timestamp("2024-05-01T10:15:00Z")


def _rows(*rows: tuple[str, pd.Timestamp, str, str, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["transaction_id", "event_time", "customer_id", "terminal_id", "amount"])


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServingProcess, Path]]:
    store = tmp_path_factory.mktemp("store")
    args = ["--model_dir", str(tiny_bundle), "--online_store", "memory", "--store_uri", str(store)]
    with serving_process(args, tmp_path_factory.mktemp("labels")) as running:
        yield running, store


def test_labels_reach_the_terminal_risk_behind_the_delay_and_the_store(server):
    running, store = server
    rest_score(running, _rows(("chargeback-1", T0, "card-1", "shop-9", 40.0)))
    labels = {"labels": [{"transaction_id": "chargeback-1", "is_fraud": 1, "reported_at": "2024-05-03T00:00:00Z"}]}
    status, body, _ = http("POST", f"{running.url}/v2/models/{MODEL}/labels", labels)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["labels"] == 1 and answer["online"] == {"applied": 1, "unchanged": 0, "unknown": 0}
    stored = store / answer["stored"]
    assert stored.is_file() and pd.read_parquet(stored)[schema.LABEL].tolist() == [1]

    later = T0 + pd.Timedelta(days=DELAY, hours=2)  # the labelled hour is now behind the delay
    features, _ = rest_score(running, _rows(("after", later, "card-2", "shop-9", 10.0)))
    assert features.shape == (1, F)
    row = dict(zip(schema.FEATURES, features[0], strict=True))
    assert row["terminal_tx_count_1d"] == 1.0 and row["terminal_fraud_rate_1d"] == 1.0

    status, body, _ = http("POST", f"{running.url}/v2/models/{MODEL}/labels", labels)
    assert status == 200 and json.loads(body)["online"] == {"applied": 0, "unchanged": 1, "unknown": 0}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"labels": [{"transaction_id": "x", "is_fraud": 2}]}, b"labels[0].is_fraud"),
        ({"labels": [{"transaction_id": "x", "is_fraud": True}]}, b"labels[0].is_fraud"),
        ({"labels": [{"transaction_id": "x", "is_fraud": 1, "amount": 3}]}, b"unknown field 'amount'"),
        ({"labels": []}, b"non-empty list"),
        ({"rows": []}, b"one field, 'labels'"),
        ({"labels": [{"transaction_id": "x", "is_fraud": 1, "reported_at": "yesterday"}]}, b"reported_at"),
        (
            {"labels": [{"transaction_id": "x", "is_fraud": 1}, {"transaction_id": "x", "is_fraud": 0}]},
            b"labelled both 0 and 1",
        ),
    ],
)
def test_a_bad_label_body_is_a_400_naming_the_problem(server, body, message):
    running, _ = server
    status, answer, _ = http("POST", f"{running.url}/v2/models/{MODEL}/labels", body)
    assert status == 400 and message in answer, answer


def test_a_server_without_any_store_refuses_labels_saying_why(tiny_bundle: Path, tmp_path: Path):
    with serving_process(["--model_dir", str(tiny_bundle)], tmp_path) as running:
        status, answer, _ = http("POST", f"{running.url}/v2/models/{MODEL}/labels", {"labels": []})
        assert status == 400 and b"has neither" in answer
        status, _, _ = http("POST", f"{running.url}/v2/models/other-model/labels", {"labels": []})
        assert status == 404
