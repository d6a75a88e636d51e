"""Retraining learns from what was scored plus the labels that came back, never from simulated data unless asked.

A model server with an online store and a payload log scores a month of raw transactions (their ids keyed-hashed in
the log), the bank's chargebacks are ingested with ``fraud labels ingest``, and ``fraud pipeline run --data
payload-log`` trains and registers a model through ``kfp.local`` on exactly those transactions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.store.local import LocalStore
from tests.helpers.serving import MODEL, http, serving_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]
KEY = "identifier-key-from-a-secret"


def test_a_pipeline_run_trains_on_the_payload_log_and_labels_of_a_served_run(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    raw = simulate(SimulationConfig(n_customers=150, n_terminals=300, n_days=32, seed=5))
    raw = raw.sort_values(schema.EVENT_TIME, kind="stable").reset_index(drop=True)
    store = tmp_path / "store"
    env = {"FRAUD_IDENTIFIER_KEY": KEY}
    args = ["--model_dir", str(tiny_bundle), "--online_store", "memory", "--store_uri", str(store)]
    args += ["--payload_log", "on", "--payload_log_flush_seconds", "1"]
    with serving_process(args, tmp_path, env=env) as server:
        for start in range(0, len(raw), 500):
            rows = raw.iloc[start : start + 500]
            body = {
                "inputs": [
                    {"name": c, "datatype": "BYTES", "shape": [len(rows)], "data": rows[c].astype(str).tolist()}
                    for c in (schema.TRANSACTION_ID, schema.CUSTOMER_ID, schema.TERMINAL_ID)
                ]
                + [
                    {"name": "event_time", "datatype": "BYTES", "shape": [len(rows)],
                     "data": [t.isoformat() for t in rows[schema.EVENT_TIME]]},
                    {"name": "amount", "datatype": "FP64", "shape": [len(rows)], "data": rows["amount"].tolist()},
                ]
            }  # fmt: skip
            status, answer, _ = http("POST", f"{server.url}/v2/models/{MODEL}/infer", body)
            assert status == 200, answer
    # The log never holds a clear id.
    logged = pd.concat(pd.read_parquet(p) for p in (store / "payload-logs" / MODEL).rglob("*.parquet"))
    assert len(logged) == len(raw)
    assert not set(logged["transaction_key"]) & set(raw[schema.TRANSACTION_ID].astype(str))

    frauds = raw[raw[schema.LABEL] == 1]
    labels = tmp_path / "chargebacks.csv"
    pd.DataFrame(
        {"transaction_id": frauds[schema.TRANSACTION_ID], "is_fraud": 1, "reported_at": "2026-01-01T00:00:00Z"}
    ).to_csv(labels, index=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FRAUD_ONLINE_STORE", raising=False)
    monkeypatch.setenv("FRAUD_STORE_URI", str(store))
    runner = CliRunner()
    result = runner.invoke(app, ["labels", "ingest", str(labels), "--store", str(store)])
    assert result.exit_code == 0, result.output

    models = tmp_path / "models"
    result = runner.invoke(
        app,
        ["pipeline", "run", "--data", "payload-log", "--store", str(models), "--work-dir", str(tmp_path / "work"),
         "--train-days", "14", "--delay-days", "3", "--test-days", "7", "--max-iter", "30"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    registry = ModelRegistry(LocalStore(models), MODEL)
    (version,) = registry.versions()
    meta = registry.metadata(version)
    source = meta.training.source
    assert source.startswith(f"payload-log({len(raw)} transactions"), source
    assert f"{len(frauds)} labelled fraud" in source
    assert 0 < meta.metrics["average_precision"] <= 1
    assert json.dumps(meta.model_dump(mode="json")).count(KEY) == 0
