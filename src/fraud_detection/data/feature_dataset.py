"""Feature Parquet as a dataset: one file (in-memory engine) or ``day=YYYY-MM-DD`` partitions (Spark engine).

Read without loading it: the time span from the event-time column alone, row counts from the Parquet footers (or
the event-time column where the footers cannot tell), and
time windows as filters pushed down to the scan (partition pruning on ``day``, row-group statistics on
``event_time``), batch by batch with only the needed columns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from fraud_detection.data import schema

LOG = logging.getLogger(__name__)

#: The partition column of the Spark engine's output (``DIR/day=YYYY-MM-DD/part-*.parquet``).
DAY = "day"
#: Columns training reads: the id (for the deterministic sample), time, card, features and label.
TRAINING_COLUMNS: tuple[str, ...] = (
    schema.TRANSACTION_ID,
    schema.EVENT_TIME,
    schema.CUSTOMER_ID,
    *schema.FEATURES,
    schema.LABEL,
)
#: Rows per scanned batch: about 25 MB of training columns.
BATCH_ROWS = 131_072
#: Read one file and one batch ahead, on one thread, without buffering whole files first: pyarrow's defaults (4 files
#: and 16 batches pre-buffered, decoded in parallel) hold several times more in memory, and how much more depends on
#: thread scheduling; the scan is not where training spends its time.
_ONE_AHEAD = {
    "batch_readahead": 1,
    "fragment_readahead": 1,
    "use_threads": False,
    "fragment_scan_options": ds.ParquetFragmentScanOptions(pre_buffer=False),
}


def open_features(path: str | Path) -> ds.Dataset:
    """Open a feature Parquet file or directory of (hive-partitioned) Parquet files, reading footers only.

    Args:
        path: A ``.parquet`` file or a directory (hidden and ``_``-prefixed files such as ``_SUCCESS`` are ignored).

    Returns:
        The dataset.

    Raises:
        SchemaError: Missing, unreadable, or without the training columns; the message names the path.
    """
    path = Path(path)
    if not path.exists():
        raise schema.SchemaError(f"input {path}: no such file or directory")
    try:
        dataset = ds.dataset(str(path), format="parquet", partitioning="hive")
    except (OSError, pa.ArrowException) as exc:
        raise schema.SchemaError(f"input {path}: not a readable Parquet dataset: {' '.join(str(exc).split())}") from exc
    if not dataset.files:
        raise schema.SchemaError(f"input {path}: holds no Parquet file")
    missing = [c for c in TRAINING_COLUMNS if c not in dataset.schema.names]
    if missing:
        raise schema.SchemaError(
            f"input {path}: not a feature dataset, missing column(s): {', '.join(missing)} (run `fraud features`)"
        )
    if not pa.types.is_timestamp(dataset.schema.field(schema.EVENT_TIME).type):
        raise schema.SchemaError(f"input {path}: column {schema.EVENT_TIME!r} is not a timestamp")
    return dataset


def is_feature_dataset(path: str | Path) -> bool:
    """Whether a path is a Parquet file or directory holding every training column (footers only).

    Args:
        path: Any path.

    Returns:
        True for a feature dataset.
    """
    try:
        open_features(path)
    except schema.SchemaError:
        return False
    return True


def _scalar(dataset: ds.Dataset, when: pd.Timestamp) -> pa.Scalar:
    """An event-time bound in the column's own type (Spark writes naive UTC timestamps, pandas UTC-aware ones)."""
    kind = dataset.schema.field(schema.EVENT_TIME).type
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[kind.unit]
    value = _utc(when).value * per_second // 1_000_000_000
    return pa.scalar(value, pa.int64()).cast(kind)


def time_filter(dataset: ds.Dataset, start: pd.Timestamp, end: pd.Timestamp) -> ds.Expression:
    """The rows with ``start <= event_time < end``, with the ``day`` partitions outside pruned.

    Args:
        dataset: From :func:`open_features`.
        start: Inclusive start (UTC).
        end: Exclusive end (UTC).

    Returns:
        A filter expression for the scan.
    """
    time = ds.field(schema.EVENT_TIME)
    expr = (time >= _scalar(dataset, start)) & (time < _scalar(dataset, end))
    if DAY in dataset.schema.names and pa.types.is_string(dataset.schema.field(DAY).type):
        last = _utc(end) - pd.Timedelta(nanoseconds=1)
        expr &= (ds.field(DAY) >= f"{_utc(start):%Y-%m-%d}") & (ds.field(DAY) <= f"{last:%Y-%m-%d}")
    return expr


def window_rows(dataset: ds.Dataset, start: pd.Timestamp, end: pd.Timestamp) -> int:
    """Rows with events in ``[start, end)``, without loading them.

    Partitions outside the window are pruned by their ``day`` value, and a ``day`` partition wholly inside it counts
    from its Parquet footer (Spark's INT96 timestamps carry no statistics, so its partition is what tells); in other
    files a row group whose ``event_time`` statistics put it wholly inside counts from its footer too, and only a
    row group nothing decides (straddling a window bound) has its event-time column read.

    Args:
        dataset: From :func:`open_features`.
        start: Inclusive start (UTC).
        end: Exclusive end (UTC).

    Returns:
        The row count.
    """
    start, end = _utc(start), _utc(end)
    time = ds.field(schema.EVENT_TIME)
    in_time = (time >= _scalar(dataset, start)) & (time < _scalar(dataset, end))
    total = 0
    for fragment in dataset.get_fragments(filter=time_filter(dataset, start, end)):
        day = ds.get_partition_keys(fragment.partition_expression).get(DAY)
        first = pd.Timestamp(day, tz="UTC") if isinstance(day, str) else None
        if first is not None and start <= first and first + pd.Timedelta(days=1) <= end:
            total += fragment.metadata.num_rows
        else:
            total += fragment.count_rows(filter=in_time, **_ONE_AHEAD)
    return total


def time_span(dataset: ds.Dataset) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last event time, scanning the event-time column alone, batch by batch.

    Args:
        dataset: From :func:`open_features`.

    Returns:
        (first, last), UTC.

    Raises:
        SchemaError: The dataset holds no rows.
    """
    low: pa.Scalar | None = None
    high: pa.Scalar | None = None
    for batch in dataset.to_batches(columns=[schema.EVENT_TIME], batch_size=BATCH_ROWS * 8, **_ONE_AHEAD):
        if batch.num_rows == 0:
            continue
        bounds = pc.min_max(batch.column(0))
        lo, hi = bounds["min"], bounds["max"]
        low = lo if low is None or pc.less(lo, low).as_py() else low
        high = hi if high is None or pc.greater(hi, high).as_py() else high
    if low is None or high is None or not low.is_valid:
        raise schema.SchemaError("the feature dataset holds no rows")
    return _utc(pd.Timestamp(low.cast(pa.int64()).as_py(), unit=low.type.unit)), _utc(
        pd.Timestamp(high.cast(pa.int64()).as_py(), unit=high.type.unit)
    )


def scan(
    dataset: ds.Dataset,
    where: ds.Expression,
    columns: tuple[str, ...] = TRAINING_COLUMNS,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """The matching rows, batch by batch, with only ``columns`` read.

    Args:
        dataset: From :func:`open_features`.
        where: Filter pushed down to the scan.
        columns: Columns to read.
        batch_rows: Most rows per batch (memory holds about two batches and one Parquet row group).

    Yields:
        Record batches.
    """
    for batch in dataset.to_batches(columns=list(columns), filter=where, batch_size=batch_rows, **_ONE_AHEAD):
        if batch.num_rows:
            yield batch


def to_frame(table: pa.Table) -> pd.DataFrame:
    """A training frame from scanned rows: ``event_time`` as UTC timestamps (Spark's naive ones are UTC).

    Args:
        table: Scanned rows.

    Returns:
        The frame.
    """
    frame = table.to_pandas()
    times = frame[schema.EVENT_TIME]
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        frame[schema.EVENT_TIME] = times.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    else:
        frame[schema.EVENT_TIME] = times.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    return frame


def _utc(value: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
