"""The Spark engines end to end on this machine (marked ``spark``: a JVM per test, deselected by default).

* The whole ``fraud-training`` DAG through ``kfp.local`` with ``feature_engine=spark``: raw data read from a
  SeaweedFS server on loopback, features built by Spark (``local[*]``, 2 cores here) inside the feature step and
  passed on as day partitions, the model trained from them and registered in the S3 store.
* The SparkApplication's driver entry point under ``spark-submit`` (master and bind addresses from spark-submit's
  options, as the Spark Operator gives them; the code passes ``master=None``): equal features to the in-memory
  executor.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate
from fraud_detection.features.engine import spark_missing
from fraud_detection.features.offline import FeatureConfig, build_features
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.store.uri import open_store
from pipelines.local import StepEvent, run_local

pytestmark = [
    pytest.mark.integration,
    pytest.mark.spark,
    pytest.mark.slow,
    pytest.mark.skipif(bool(spark_missing()), reason=spark_missing() or ""),
]

SIM = SimulationConfig(n_customers=200, n_terminals=400, n_days=60, seed=13)
FAST = {"max_iter": 30, "test_days": 14, "delay_days": 7}
DRIVER = Path(__file__).resolve().parents[2] / "components" / "spark_operator" / "driver.py"


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No kubeconfig, no in-cluster service (deploy_model skips), one OpenMP thread per task."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in ("FRAUD_STORE_URI", "FRAUD_MODEL_NAME", "FRAUD_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def assert_same_features(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Every feature equal bit for bit for every transaction id, labels equal."""
    assert len(got) == len(want)
    got = got.set_index("transaction_id").loc[want["transaction_id"].astype(str)]
    for name in schema.FEATURES:
        assert np.array_equal(got[name].to_numpy(), want[name].to_numpy()), name
    assert np.array_equal(got["is_fraud"].to_numpy(), want["is_fraud"].to_numpy())


def test_pipeline_with_the_spark_engine_on_seaweedfs(s3_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FRAUD_TRUST_UNSIGNED", "true")  # unsigned bundles on S3: this test is about the engine
    raw = tmp_path / "transactions.parquet"
    schema.write_frame(simulate(replace(SIM)), raw)
    data = open_store(
        "s3://raw-spark",
        s3_endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    data.write_bytes("transactions/part-0.parquet", raw.read_bytes())

    events: list[StepEvent] = []
    work = tmp_path / "work"
    result = run_local(
        {
            **FAST,
            "data_source": "s3://raw-spark/transactions",
            "store_uri": "s3://models/fraud",
            "feature_engine": "spark",
        },
        work,
        enable_caching=False,
        on_event=events.append,
    )
    statuses = {e.step: e.status for e in events}
    assert [statuses[s] for s in ("ingest-data", "validate-data", "build-features", "train-model")] == ["succeeded"] * 4
    assert result.promoted is True  # nothing in production yet

    # The feature step's output: day partitions, equal to the in-memory executor on the validated rows.
    (features,) = [p for p in work.glob("runs/**/build-features/features") if p.is_dir()]
    (validated,) = work.glob("runs/**/validate-data/validated")
    days = sorted(p.name for p in features.iterdir() if p.name.startswith("day="))
    frame = pd.read_parquet(validated)
    assert len(days) == frame["event_time"].dt.date.nunique() and (features / "_SUCCESS").exists()
    want = build_features(frame, FeatureConfig(label_delay_days=FAST["delay_days"]))
    assert_same_features(pd.read_parquet(features), want)

    # The model trained on them is in the S3 store, with the data's lineage.
    from fraud_detection.settings import PipelineSettings
    from fraud_detection.store.uri import open_configured_store

    registry = ModelRegistry(open_configured_store(PipelineSettings(), "s3://models/fraud"), "fraud-detector")
    assert registry.versions() == [result.candidate_version]
    bundle = registry.load("production", tmp_path / "cache")
    assert bundle.metadata.training.source == "s3://raw-spark/transactions"
    assert 0 < result.metrics["average_precision"] <= 1


def test_the_driver_entry_point_runs_under_spark_submit(tmp_path: Path):
    raw = schema.validate_transactions(simulate(replace(SIM, n_days=20)))
    source = tmp_path / "validated.parquet"
    schema.write_frame(raw, source)
    out = tmp_path / "features"
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    spark_submit = Path(sys.executable).parent / "spark-submit"
    conf = {
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.driver.memory": "1g",
    }
    args = [str(spark_submit), "--master", "local[2]", *(a for k, v in conf.items() for a in ("--conf", f"{k}={v}"))]
    args += [str(DRIVER), "--input", str(source), "--output", str(out), "--label-delay-days", "3"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    log = proc.stdout + proc.stderr  # spark-submit sends the Python driver's stderr to stdout
    assert proc.returncode == 0, log[-3000:]
    assert "INFO fraud_detection.spark_driver: wrote" in log
    assert_same_features(pd.read_parquet(out), build_features(raw, FeatureConfig(label_delay_days=3)))

    # A failure is one line in the driver's log and a non-zero exit (the operator marks the application FAILED).
    bad = tmp_path / "bad.parquet"
    schema.write_frame(raw.assign(amount=-1.0), bad)
    args[args.index(str(source))] = str(bad)
    args[args.index(str(out))] = str(tmp_path / "never")
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    (line,) = [x for x in log.splitlines() if "feature job failed:" in x]
    assert "column 'amount'" in line and "negative amount" in line
    assert not (tmp_path / "never").exists()
