"""``fraud online materialize`` / ``fraud online labels`` and ``fraud labels ingest --online`` on the embedded store."""

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.features.definitions import HOUR
from fraud_detection.features.online import CUSTOMER_PREFIX, TERMINAL_PREFIX
from fraud_detection.features.state.embedded import EmbeddedStore

runner = CliRunner()


@pytest.fixture
def history(small_raw: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "history.parquet"
    small_raw.to_parquet(path)
    return path


def _json(output: str) -> dict:
    return json.loads(output[output.index("{") :])


def test_materialize_loads_the_state_a_server_then_sees(history: Path, small_raw: pd.DataFrame, tmp_path: Path):
    state = tmp_path / "state"
    result = runner.invoke(app, ["online", "materialize", "--data", str(history), "--online", str(state)])
    assert result.exit_code == 0, result.output
    summary = _json(result.output)
    assert summary["transactions"] == len(small_raw)
    assert summary["customers"] == small_raw["customer_id"].nunique()
    store = EmbeddedStore(state, 7)
    customer = str(small_raw["customer_id"].iloc[-1])
    assert store.fields(CUSTOMER_PREFIX + customer)["newest"] > 0
    store.close()


def test_labels_reach_the_terminal_counts_once(history: Path, small_raw: pd.DataFrame, tmp_path: Path):
    state = tmp_path / "state"
    unlabelled = tmp_path / "unlabelled.parquet"
    small_raw.drop(columns=["is_fraud"]).to_parquet(unlabelled)
    assert (
        runner.invoke(app, ["online", "materialize", "--data", str(unlabelled), "--online", str(state)]).exit_code == 0
    )
    row = small_raw.iloc[-1]
    labels = tmp_path / "labels.csv"
    pd.DataFrame(
        {"transaction_id": [str(row.transaction_id)], "is_fraud": [1], "reported_at": ["2018-06-01T00:00:00Z"]}
    ).to_csv(labels, index=False)
    result = runner.invoke(app, ["online", "labels", str(labels), "--online", str(state)])
    assert result.exit_code == 0, result.output
    assert _json(result.output)["applied"] == 1
    again = runner.invoke(
        app, ["labels", "ingest", str(labels), "--store", str(tmp_path / "store"), "--online", str(state)]
    )
    assert again.exit_code == 0, again.output
    assert "0 applied, 1 unchanged" in again.output
    store = EmbeddedStore(state, 7)
    hour = int(pd.Timestamp(row.event_time).timestamp()) // HOUR
    assert store.fields(TERMINAL_PREFIX + str(row.terminal_id))[f"h{hour}f"] == 1
    store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--online", "s3://bucket/state"], "unsupported scheme 's3'"),
        ([], "no online store"),
    ],
)
def test_bad_online_targets_exit_2_with_one_line(history: Path, args, message, monkeypatch):
    monkeypatch.delenv("FRAUD_ONLINE_STORE", raising=False)
    result = runner.invoke(app, ["online", "materialize", "--data", str(history), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
