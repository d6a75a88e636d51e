"""The feature step on a real Kubeflow Spark Operator: a SparkApplication builds the features. Skipped by default.

Run with ``pytest -m e2e tests/e2e/test_spark_operator_cluster.py`` and:

* a kubeconfig allowed to create, get and delete ``sparkapplications`` in the Spark namespace (the chart's
  ``spark.enabled`` renders the ServiceAccount, the Roles and the settings ConfigMap; the Spark Operator watches the
  namespace; the Spark image of ``make images`` is pullable there);
* ``FRAUD_E2E_SPARK_SETTINGS``: a directory holding the chart's ``settings.json`` (``kubectl get configmap
  <fullname>-spark -o jsonpath='{.data.settings\\.json}' > DIR/settings.json``);
* the store both this machine and the cluster reach: ``FRAUD_STORE_URI`` (``s3://bucket/prefix`` or ``az://``),
  ``FRAUD_S3_ENDPOINT`` and the keys in the environment as for the pipeline.

It runs :func:`components.spark_operator.features_job.run_feature_job` (the pipeline step's own code: stage the
input, submit, wait, fetch the day partitions) on a small simulated history and checks every feature of every
transaction against the in-memory executor's, bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate
from fraud_detection.features.offline import FeatureConfig, build_features

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings_dir() -> Path:
    where = os.environ.get("FRAUD_E2E_SPARK_SETTINGS")
    if not where or not (Path(where) / "settings.json").is_file():
        pytest.skip("set FRAUD_E2E_SPARK_SETTINGS to a directory with the chart's Spark settings.json")
    if not os.environ.get("FRAUD_STORE_URI", "").startswith(("s3://", "az://")):
        pytest.skip("set FRAUD_STORE_URI to an s3:// or az:// store the cluster reaches")
    from components.spark_operator.status import SparkApplicationError
    from components.spark_operator.submit import connect

    try:
        connect()
    except SparkApplicationError as exc:
        pytest.skip(f"no usable cluster: {exc}")
    return Path(where)


def test_a_spark_application_builds_the_in_memory_features(settings_dir: Path, tmp_path: Path):
    from components.spark_operator.features_job import run_feature_job

    raw = schema.validate_transactions(simulate(SimulationConfig(n_customers=300, n_terminals=600, n_days=45, seed=5)))
    validated = schema.write_frame(raw, tmp_path / "validated.parquet")
    uri = run_feature_job(validated, tmp_path / "features", run_key=f"e2e-{os.getpid()}", settings_dir=settings_dir)
    assert uri.startswith(("s3://", "az://"))
    got = pd.read_parquet(tmp_path / "features")
    want = build_features(raw, FeatureConfig(label_delay_days=7))
    assert len(got) == len(want)
    got = got.set_index("transaction_id").loc[want["transaction_id"].astype(str)]
    for name in schema.FEATURES:
        assert np.array_equal(got[name].to_numpy(), want[name].to_numpy()), name
    days = {p.name for p in (tmp_path / "features").iterdir() if p.name.startswith("day=")}
    assert len(days) == raw[schema.EVENT_TIME].dt.date.nunique()
