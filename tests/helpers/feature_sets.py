"""Synthetic feature sets written as the two engines write them: one Parquet file, or day partitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from fraud_detection.data import schema


def synthetic_features(rows: int, days: int, fraud_rate: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """Random feature rows spread over ``days`` days from 2024-01-01, ids 0..rows-1 in time order.

    Args:
        rows: Rows.
        days: Days spanned.
        fraud_rate: Share of rows labelled fraud.
        seed: Random seed.

    Returns:
        A frame holding every training column.
    """
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, days * 86_400, rows))
    frame = pd.DataFrame(
        {
            schema.TRANSACTION_ID: np.arange(rows, dtype=np.int64),
            schema.EVENT_TIME: pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(seconds, unit="s"),
            schema.CUSTOMER_ID: rng.integers(0, max(rows // 20, 1), rows),
        }
    )
    for name in schema.FEATURES:
        frame[name] = rng.random(rows)
    frame[schema.LABEL] = (rng.random(rows) < fraud_rate).astype(np.int8)
    return frame


def write_day_partitions(
    frame: pd.DataFrame, out: Path, *, ids_as_text: bool = True, rows_per_group: int = 1_000_000
) -> Path:
    """Write a feature frame as the Spark engine does: ``out/day=YYYY-MM-DD/*.parquet``, text ids, naive UTC times,
    and no column statistics (Spark's INT96 timestamps carry no min/max, so readers cannot prune by them).

    Args:
        frame: Feature frame.
        out: Destination directory.
        ids_as_text: Write transaction and customer ids as text (Spark's output).
        rows_per_group: Most rows per Parquet row group.

    Returns:
        ``out``.
    """
    spark_like = frame.copy()
    spark_like[schema.EVENT_TIME] = spark_like[schema.EVENT_TIME].dt.tz_convert("UTC").dt.tz_localize(None)
    if ids_as_text:
        for col in (schema.TRANSACTION_ID, schema.CUSTOMER_ID):
            spark_like[col] = spark_like[col].astype(str)
    spark_like["day"] = spark_like[schema.EVENT_TIME].dt.floor("D").astype(str).str.slice(0, 10)
    ds.write_dataset(
        pa.Table.from_pandas(spark_like, preserve_index=False),
        out,
        format="parquet",
        partitioning=["day"],
        partitioning_flavor="hive",
        max_rows_per_group=rows_per_group,
        min_rows_per_group=0,
        max_rows_per_file=rows_per_group * 4,
        file_options=ds.ParquetFileFormat().make_write_options(write_statistics=False),
    )
    (out / "_SUCCESS").write_text("")
    return out
