"""The Spark Operator feature step's store side on a real S3 server (SeaweedFS on loopback): the validated data is
staged where the SparkApplication's ``--input`` points, the day partitions the driver writes under ``--output`` come
back into the step's artifact, and a local store is refused before anything is copied."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from components.spark_operator.application import application_name, build_application
from components.spark_operator.features_job import INPUT_KEY, fetch_output, stage_input, staging
from components.spark_operator.settings import SparkSettings
from fraud_detection.data import schema
from fraud_detection.features.offline import build_features
from fraud_detection.store.local import LocalStore
from fraud_detection.store.uri import open_store

pytestmark = pytest.mark.integration

SETTINGS = SparkSettings(image="registry.example/fraud-spark:1", namespace="kubeflow", service_account="spark")


def test_input_is_staged_where_the_application_reads_it_and_the_days_come_back(s3_server, small_raw, tmp_path):
    store = open_store(
        "s3://fraud-spark/models",
        s3_endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    validated = tmp_path / "validated"  # a KFP artifact path: no suffix
    raw = schema.validate_transactions(small_raw)
    schema.write_frame(raw, validated.with_suffix(".parquet")).rename(validated)
    name = application_name("minio://mlpipeline/v2/artifacts/fraud-training/run-7/build-features/features")
    where = staging(store, name)
    stage_input(store, where, validated)

    app = build_application(name, SETTINGS, where.input_uri, where.output_uri)
    args = app["spec"]["arguments"]
    input_uri, output_uri = args[args.index("--input") + 1], args[args.index("--output") + 1]
    assert input_uri == f"s3a://fraud-spark/models/spark/{name}/input/validated.parquet"
    assert output_uri == f"s3a://fraud-spark/models/spark/{name}/features"
    # What the driver will read through S3A is byte for byte the step's input.
    assert store.read_bytes(f"spark/{name}/{INPUT_KEY}") == validated.read_bytes()

    # The driver's output (Spark's layout: day partitions and _SUCCESS), then fetched into the step's artifact.
    features = build_features(raw)
    local = tmp_path / "driver-output"
    features.assign(day=features["event_time"].dt.strftime("%Y-%m-%d")).to_parquet(local, partition_cols=["day"])
    (local / "_SUCCESS").write_bytes(b"")
    store.upload_dir(local, f"spark/{name}/features/", last="_SUCCESS")
    out = fetch_output(store, where, tmp_path / "artifact" / "features")
    back = pd.read_parquet(out)
    assert len(back) == len(features) and (out / "_SUCCESS").exists()
    assert sorted(back["transaction_id"]) == sorted(features["transaction_id"])

    with pytest.raises(KeyError, match="nothing under"):
        fetch_output(store, staging(store, application_name("another run")), tmp_path / "empty")


def test_a_local_store_is_refused_before_anything_is_copied(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ValueError, match="must be s3:// or az://"):
        staging(store, "fraud-features-0123456789ab")
    assert not (tmp_path / "store" / "spark").exists()
