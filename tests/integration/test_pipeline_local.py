"""The whole ``fraud-training`` DAG through ``kfp.local`` (SubprocessRunner, this venv) on a small simulated set.

Runs: the CLI on the local store, then the same data again (cached data steps, no promotion); the store and the
data on a SeaweedFS server on loopback; and invalid data, which fails at validate_data with nothing registered.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.store.local import LocalStore
from fraud_detection.store.uri import open_store
from pipelines.local import PipelineRunError, StepEvent, run_local

pytestmark = pytest.mark.integration

SIZE = {"n_customers": 300, "n_terminals": 600, "n_days": 60}
SIM = SimulationConfig(n_customers=300, n_terminals=600, n_days=60)
FAST = {"max_iter": 40, "test_days": 14, "delay_days": 7}
DATA_STEPS = ("ingest-data", "validate-data", "build-features")


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No kubeconfig and no in-cluster service: deploy_model must skip, whatever the developer's machine has."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # One OpenMP thread per task: on shared cores, scikit-learn's per-core threads spin at barriers and can slow
    # training several-fold; the results are the same.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in ("FRAUD_STORE_URI", "FRAUD_MODEL_NAME", "FRAUD_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def _statuses(events: list[StepEvent]) -> dict[str, str]:
    return {e.step: e.status for e in events}


def test_cli_run_registers_a_model_and_a_second_run_on_the_same_data_does_not_promote(tmp_path: Path):
    store, work = tmp_path / "store", tmp_path / "work"
    args = ["pipeline", "run", "--customers", "300", "--terminals", "600", "--days", "60", "--max-iter", "40"]
    result = CliRunner().invoke(app, [*args, "--store", str(store), "--work-dir", str(work)])
    assert result.exit_code == 0, result.output

    registry = ModelRegistry(LocalStore(store), "fraud-detector")
    (version,) = registry.versions()
    assert (registry.get_alias("production") or {}).get("version") == version
    bundle = registry.load(version, tmp_path / "cache")
    assert 0 < bundle.metadata.metrics["average_precision"] <= 1
    assert 0 <= bundle.metadata.metrics["card_precision_at_100"] <= 1
    assert bundle.metadata.training.source.startswith("simulator(customers=300")
    for step in (*DATA_STEPS, "train-model", "evaluate-model", "register-model", "deploy-model"):
        assert f"✓ {step} succeeded" in result.output, step
    assert f"promoted {version}" in result.output
    assert "canary deployment: skipped" in result.output
    assert "average_precision" in result.output

    events: list[StepEvent] = []
    arguments = {**SIZE, **FAST, "store_uri": str(store)}
    second = run_local(arguments, work, on_event=events.append)
    assert second.promoted is False
    assert second.candidate_version != version
    assert any("average precision" in r and r.endswith("fail") for r in second.reasons)
    assert second.metrics["production_average_precision"] == pytest.approx(second.metrics["average_precision"])
    statuses = _statuses(events)
    assert [statuses[s] for s in DATA_STEPS] == ["cached"] * 3
    assert statuses["train-model"] == statuses["evaluate-model"] == "succeeded"
    assert statuses["register-model"] == statuses["deploy-model"] == "skipped"
    assert registry.versions() == [version]
    assert (registry.get_alias("production") or {}).get("version") == version
    assert second.report_path.read_text().count("data:image/png;base64,") == 2
    assert second.log_path.exists()


def test_run_with_data_and_store_on_seaweedfs(s3_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FRAUD_TRUST_UNSIGNED", "true")  # unsigned bundles on S3: this test is about the store
    raw = tmp_path / "transactions.parquet"
    schema.write_frame(simulate(replace(SIM, seed=11)), raw)
    data = open_store(
        "s3://raw-data",
        s3_endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    data.write_bytes("transactions/2018/part-0.parquet", raw.read_bytes())

    result = run_local(
        {**FAST, "data_source": "s3://raw-data/transactions/2018", "store_uri": "s3://models/fraud"}, tmp_path / "work"
    )
    assert result.promoted is True
    assert result.outputs["deploy-model"]["Output"] == "skipped"
    version = result.outputs["register-model"]["version"]
    assert (
        result.outputs["register-model"]["storage_uri"] == f"s3://models/fraud/models/fraud-detector/versions/{version}"
    )

    from fraud_detection.settings import PipelineSettings
    from fraud_detection.store.uri import open_configured_store

    store = open_configured_store(PipelineSettings(), "s3://models/fraud")  # the env's endpoint, keys and trust rule
    registry = ModelRegistry(store, "fraud-detector")
    assert registry.versions() == [version] == [result.candidate_version]
    bundle = registry.load("production", tmp_path / "cache")
    assert bundle.metadata.metrics["average_precision"] == pytest.approx(result.metrics["average_precision"])
    assert bundle.metadata.training.source == "s3://raw-data/transactions/2018"


def test_invalid_data_fails_at_validate_data_and_registers_nothing(tmp_path: Path):
    frame = simulate(replace(SIM, seed=5))
    frame.loc[frame.index[:4], "amount"] = -3.5
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    store = tmp_path / "store"

    events: list[StepEvent] = []
    with pytest.raises(PipelineRunError) as failure:
        run_local({**FAST, "data_source": str(bad), "store_uri": str(store)}, tmp_path / "work", on_event=events.append)
    assert failure.value.step == "validate-data"
    assert "column 'amount': 4 negative amount(s)" in failure.value.error
    assert "SchemaError" in failure.value.error
    statuses = _statuses(events)
    assert statuses["ingest-data"] == "succeeded"
    assert statuses["validate-data"] == "failed"
    assert all(statuses[s] == "skipped" for s in ("build-features", "train-model", "register-model", "deploy-model"))
    assert ModelRegistry(LocalStore(store), "fraud-detector").versions() == []

    result = CliRunner().invoke(
        app, ["pipeline", "run", "--data", str(bad), "--store", str(store), "--work-dir", str(tmp_path / "work")]
    )
    assert result.exit_code == 2
    assert "step validate-data failed" in result.output
    assert "negative amount" in result.output
    assert not store.exists() or ModelRegistry(LocalStore(store), "fraud-detector").versions() == []


def test_cli_run_refuses_data_and_simulation_sizes_together(tmp_path: Path):
    raw = tmp_path / "tx.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(raw)
    result = CliRunner().invoke(app, ["pipeline", "run", "--data", str(raw), "--customers", "10"])
    assert result.exit_code == 2
    assert "exclusive" in result.output
