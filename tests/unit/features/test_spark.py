"""Spark = in memory: the Spark executor's features equal build_features's on every feature, row by row.

One Spark session for the module (it takes 10-20 s to start). The fast test (simulated data, and the written,
day-partitioned Parquet read back) runs by default; the property-based one is marked ``spark``
(``-m "not spark"`` leaves it out). Skipped only when Java or pyspark is missing (``make install`` installs both).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraud_detection.data import schema
from fraud_detection.features.engine import spark_missing
from fraud_detection.features.offline import FeatureConfig, build_features
from tests.unit.features.test_online import histories

if spark_missing():
    pytest.skip(spark_missing() or "", allow_module_level=True)

from fraud_detection.features import spark as spark_features


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    session = spark_features.spark_session(master="local[2]", driver_memory="2g", shuffle_partitions=4)
    yield session
    session.stop()
    # Stop the JVM too: its py4j threads would otherwise live on in the test process (and call time.sleep).
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is not None:
        gateway.shutdown()
        SparkContext._gateway = None
        SparkContext._jvm = None


def assert_parity(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Every feature equal (to 1e-9, in fact bit for bit) for every transaction id; labels equal."""
    assert len(got) == len(want)
    got = got.set_index("transaction_id").loc[want["transaction_id"].astype(str)]
    for name in schema.FEATURES:
        np.testing.assert_allclose(got[name].to_numpy(), want[name].to_numpy(), rtol=0, atol=1e-9, err_msg=name)
        assert np.array_equal(got[name].to_numpy(), want[name].to_numpy()), name
    if "is_fraud" in want:
        assert np.array_equal(got["is_fraud"].to_numpy(), want["is_fraud"].to_numpy())


def test_spark_equals_memory_on_simulated_data_and_writes_day_partitions(spark, small_raw, tmp_path: Path):
    raw = schema.validate_transactions(small_raw)
    want = build_features(raw, FeatureConfig(label_delay_days=7))
    path = tmp_path / "raw.parquet"
    schema.write_frame(raw, path)  # pandas writes nanosecond timestamps: the reader's hardest case
    frame = spark_features.build_features_spark(
        spark_features.read_transactions_spark(spark, path), FeatureConfig(label_delay_days=7)
    )
    out = spark_features.write_features_spark(frame, tmp_path / "features")
    days = sorted(p.name for p in out.iterdir() if p.name.startswith("day="))
    assert days[0] == f"day={raw['event_time'].min():%Y-%m-%d}" and len(days) == raw["event_time"].dt.date.nunique()
    back = pd.read_parquet(out)
    assert list(back.columns[:3]) == ["transaction_id", "event_time", "customer_id"]
    assert list(back.columns[3 : 3 + len(schema.FEATURES)]) == list(schema.FEATURES)
    assert_parity(back, want)
    assert (pd.to_datetime(back["day"].astype(str)).dt.date == back["event_time"].dt.date).all()


def test_csv_input_without_labels_and_a_bad_file(spark, tmp_path: Path):
    raw = pd.DataFrame(
        {
            "TRANSACTION_ID": ["a", "b", "c"],
            "TX_DATETIME": ["2024-03-01 10:00:00", "2024-03-01 10:00:59", "2024-03-02 10:00:00"],
            "CUSTOMER_ID": [1, 1, 1],
            "TERMINAL_ID": [5, 5, 6],
            "TX_AMOUNT": [10.0, 20.005, 30.0],
        }
    )
    path = tmp_path / "raw.csv"
    raw.to_csv(path, index=False)
    got = spark_features.build_features_spark(spark_features.read_transactions_spark(spark, path)).toPandas()
    assert_parity(got, build_features(schema.read_transactions(path)))
    raw.assign(TX_AMOUNT=[1.0, -2.0, 3.0]).to_csv(path, index=False)
    with pytest.raises(schema.SchemaError, match="negative amount"):
        spark_features.read_transactions_spark(spark, path)
    with pytest.raises(schema.SchemaError, match="S3A"):
        spark_features.read_transactions_spark(spark, "s3://bucket/raw.parquet")


def _union(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Independent histories side by side: entity and transaction ids prefixed with the history's index."""
    parts = []
    for i, frame in enumerate(frames):
        part = frame.copy()
        for col in ("transaction_id", "customer_id", "terminal_id"):
            if col in part:
                part[col] = f"h{i}-" + part[col].astype(str)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@pytest.mark.spark
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(frames=st.lists(histories(), min_size=1, max_size=12), delay=st.integers(0, 8), since=st.booleans())
def test_spark_equals_memory_on_generated_histories(spark, frames, delay, since):
    """Same-second and same-minute events, events exactly on minute/hour/day bounds, 3 customers and 2 terminals per
    history, labels; with customer_since or without (tenure from the first transaction). Several histories are
    checked per Spark job (disjoint entities), each against build_features run on it alone."""
    frames = [schema.validate_transactions(f) for f in frames]
    if since:
        frames = [f.assign(customer_since=f["event_time"].min() - pd.Timedelta(days=3, seconds=17)) for f in frames]
    want = _union([build_features(f, FeatureConfig(label_delay_days=delay)) for f in frames])
    raw = spark.createDataFrame(_union(frames))
    got = spark_features.build_features_spark(raw, FeatureConfig(label_delay_days=delay)).toPandas()
    assert_parity(got, want)


def test_shuffle_partitions_grow_with_the_history_within_bounds() -> None:
    assert spark_features.shuffle_partitions_for(1_800_000) == 16
    assert spark_features.shuffle_partitions_for(100_000_000) == 100
    assert spark_features.shuffle_partitions_for(10**12) == 4_000
