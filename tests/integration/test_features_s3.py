"""``fraud features`` on s3:// data with a real S3 server (SeaweedFS on loopback): the input is staged to a local
temporary directory through the store layer (``fraud_detection.store.staging``, which the Spark Operator step uses
too), and day partitions go back under the output prefix with ``_SUCCESS`` written last.

The staging and the in-memory engine run by default; the Spark engine end to end starts a JVM (marked ``spark``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.data import schema
from fraud_detection.features.engine import spark_missing
from fraud_detection.features.offline import build_features
from fraud_detection.store.base import ArtifactStore
from fraud_detection.store.staging import split_location
from fraud_detection.store.uri import open_store
from tests.helpers.store_staging import (
    check_bad_location_is_one_line_error,
    check_in_memory_features_from_and_to_the_store,
    check_object_and_prefix_staged_byte_for_byte,
    check_publishing_replaces_an_earlier_output_marker_last,
    small_history,
    upload_days,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return small_history()


@pytest.fixture
def env(s3_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)


def _bucket(s3_server, name: str) -> ArtifactStore:
    return open_store(
        f"s3://{name}",
        s3_endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )


def test_split_location() -> None:
    assert split_location("s3://raw/2026/11/tx.parquet") == ("s3://raw", "2026/11/tx.parquet")
    assert split_location("az://exports/tx/") == ("az://exports", "tx/")
    for bad in ("/tmp/x", "s3:///key", "gs://b/k"):
        with pytest.raises(ValueError, match="expected s3://bucket"):
            split_location(bad)


def test_an_object_and_a_prefix_are_staged_byte_for_byte(s3_server, raw: pd.DataFrame, tmp_path: Path) -> None:
    store = _bucket(s3_server, "stage-in")
    check_object_and_prefix_staged_byte_for_byte(store, raw, tmp_path, "nothing under s3://stage-in/exports/missing/")


def test_publishing_replaces_an_earlier_output_marker_last(s3_server, tmp_path: Path) -> None:
    check_publishing_replaces_an_earlier_output_marker_last(_bucket(s3_server, "publish"), tmp_path)


def test_features_in_memory_from_and_to_s3(s3_server, env, raw: pd.DataFrame, tmp_path: Path) -> None:
    store = _bucket(s3_server, "features-memory")
    check_in_memory_features_from_and_to_the_store(store, "s3://features-memory", raw, tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "s3://features-bad/missing/"], "--data s3://features-bad/missing/: nothing under"),
        (["--data", "s3://features-bad/raw/", "--output", "s3://features-bad"], "not the bucket itself"),
        (["--data", "s3://features-bad/raw/", "--output", "s3://features-bad/f.csv"], "unknown suffix"),
        (
            ["--data", "s3://features-bad/raw/", "--output", "s3://features-bad/taken/", "--engine", "spark"],
            "s3://features-bad/taken/: holds 1 objects but no _SUCCESS",
        ),
    ],
    ids=["missing-input", "bucket-output", "bad-suffix", "foreign-prefix"],
)
def test_bad_locations_are_one_line_errors(s3_server, env, raw, args: list[str], message: str) -> None:
    check_bad_location_is_one_line_error(_bucket(s3_server, "features-bad"), raw, args, message)


@pytest.mark.spark
@pytest.mark.skipif(bool(spark_missing()), reason=spark_missing() or "")
def test_features_on_spark_from_and_to_s3(s3_server, env, raw: pd.DataFrame, tmp_path: Path) -> None:
    store = _bucket(s3_server, "features-spark")
    upload_days(store, "raw/", raw)
    argv = ["features", "--engine", "spark", "--spark-master", "local[1]", "--data", "s3://features-spark/raw"]
    result = CliRunner().invoke(app, [*argv, "--output", "s3://features-spark/features"])
    assert result.exit_code == 0, result.output
    keys = store.list("features/")
    assert "features/_SUCCESS" in keys and all(k.startswith(("features/day=", "features/_SUCCESS")) for k in keys)
    assert not any(Path(k).name.startswith(".") for k in keys)
    back = pd.read_parquet(store.download_dir("features/", tmp_path / "back"))
    want = build_features(raw)
    got = back.set_index("transaction_id").loc[want["transaction_id"].astype(str).tolist()]
    for name in schema.FEATURES:
        assert np.allclose(got[name].to_numpy(), want[name].to_numpy(), rtol=0, atol=1e-9), name
