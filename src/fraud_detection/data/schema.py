"""The one data contract: raw transaction schema, feature schema, validation and readers.

Everything else (training, request validation, v2 model metadata, drift reports) reads the feature list from here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraud_detection.store.files import atomic_file

LOG = logging.getLogger(__name__)

TRANSACTION_ID = "transaction_id"
EVENT_TIME = "event_time"
CUSTOMER_ID = "customer_id"
TERMINAL_ID = "terminal_id"
AMOUNT = "amount"
CUSTOMER_SINCE = "customer_since"
LABEL = "is_fraud"
#: Column of a sampled training frame: how many population rows the row stands for.
SAMPLE_WEIGHT = "sample_weight"

RAW_REQUIRED: tuple[str, ...] = (TRANSACTION_ID, EVENT_TIME, CUSTOMER_ID, TERMINAL_ID, AMOUNT)
RAW_OPTIONAL: tuple[str, ...] = (CUSTOMER_SINCE, LABEL)

#: Column names of the Fraud Detection Handbook's simulated data set, mapped onto the contract.
HANDBOOK_COLUMN_MAP: dict[str, str] = {
    "TRANSACTION_ID": TRANSACTION_ID,
    "TX_DATETIME": EVENT_TIME,
    "CUSTOMER_ID": CUSTOMER_ID,
    "TERMINAL_ID": TERMINAL_ID,
    "TX_AMOUNT": AMOUNT,
    "TX_FRAUD": LABEL,
}

CUSTOMER_WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
TERMINAL_WINDOWS_DAYS: tuple[int, ...] = (1, 2, 4, 7, 30)


@dataclass(frozen=True)
class FeatureSpec:
    """One model input.

    Attributes:
        name: Column and tensor name.
        description: What the feature means, point in time.
        min_value: Smallest valid value (None for unbounded).
        max_value: Largest valid value (None for unbounded).
    """

    name: str
    description: str
    min_value: float | None = None
    max_value: float | None = None


def _feature_specs() -> tuple[FeatureSpec, ...]:
    specs = [
        FeatureSpec("amount", "transaction amount", 0.0),
        FeatureSpec("hour_of_day", "hour of the event time, UTC (0-23)", 0.0, 23.0),
        FeatureSpec("avg_monthly_spend", "customer's total spend over the 30 days before the transaction", 0.0),
        FeatureSpec("customer_tenure_days", "days since the customer relationship started", 0.0),
        FeatureSpec("num_prev_tx_24h", "customer's transactions in the 24 h before this one", 0.0),
        FeatureSpec("is_weekend", "1 when the transaction is on Saturday or Sunday", 0.0, 1.0),
        FeatureSpec("is_night", "1 when the transaction is between 00:00 and 06:00", 0.0, 1.0),
    ]
    for days in CUSTOMER_WINDOWS_DAYS:
        specs.append(
            FeatureSpec(
                f"customer_tx_count_{days}d",
                f"customer's transactions over {days} day(s), this one included",
                1.0,
            )
        )
        specs.append(
            FeatureSpec(
                f"customer_avg_amount_{days}d",
                f"customer's mean amount over {days} day(s), this one included",
                0.0,
            )
        )
    specs.append(
        FeatureSpec("amount_to_customer_avg_30d", "amount divided by the customer's mean over the prior 30 days", 0.0)
    )
    specs.append(
        FeatureSpec(
            "amount_zscore_30d",
            "amount's z-score against the customer's prior 30 days (0 without history, clipped to +-50)",
            -50.0,
            50.0,
        )
    )
    for days in TERMINAL_WINDOWS_DAYS:
        specs.append(
            FeatureSpec(
                f"terminal_tx_count_{days}d",
                f"terminal's transactions over {days} day(s) before the label delay",
                0.0,
            )
        )
        specs.append(
            FeatureSpec(
                f"terminal_fraud_rate_{days}d",
                f"share of fraud at the terminal over {days} day(s) before the label delay",
                0.0,
                1.0,
            )
        )
    specs += [
        FeatureSpec(
            "amount_to_customer_avg_7d",
            "amount divided by the customer's mean over the prior 7 days (1 without history)",
            0.0,
        ),
        FeatureSpec(
            "customer_avg_7d_to_baseline",
            "customer's mean amount over the prior 7 days divided by their mean over the 23 days before those (the "
            "baseline a compromise of the last days has not inflated; 1 without either)",
            0.0,
        ),
    ]
    return tuple(specs)


FEATURE_SPECS: tuple[FeatureSpec, ...] = _feature_specs()
FEATURES: tuple[str, ...] = tuple(spec.name for spec in FEATURE_SPECS)
#: The original project's five features, kept by name.
SEED_FEATURES: tuple[str, ...] = (
    "amount",
    "hour_of_day",
    "avg_monthly_spend",
    "customer_tenure_days",
    "num_prev_tx_24h",
)


class SchemaError(ValueError):
    """A frame or file does not satisfy the data contract; the message names the column and the problem."""


def parse_column_map(pairs: list[str] | None) -> dict[str, str]:
    """Parse ``SRC=DST`` pairs from the command line into a mapping.

    Args:
        pairs: Items like ``TX_AMOUNT=amount``; ``None`` or empty for no mapping.

    Returns:
        Mapping from source column name to contract column name.

    Raises:
        SchemaError: An item is not of the form ``SRC=DST`` or names an unknown target column.
    """
    mapping: dict[str, str] = {}
    known = set(RAW_REQUIRED) | set(RAW_OPTIONAL)
    for pair in pairs or []:
        src, sep, dst = pair.partition("=")
        if not sep or not src or not dst:
            raise SchemaError(f"column map item {pair!r} must look like SRC=DST")
        if dst not in known:
            raise SchemaError(f"column map item {pair!r}: {dst!r} is not a contract column ({sorted(known)})")
        mapping[src] = dst
    return mapping


def validate_transactions(df: pd.DataFrame, *, require_label: bool = False) -> pd.DataFrame:
    """Check a raw transaction frame against the contract and normalise its dtypes.

    Args:
        df: Raw transactions, already renamed to contract column names.
        require_label: Fail when ``is_fraud`` is missing (training needs labels).

    Returns:
        A frame with ``event_time`` as UTC timestamps, ``amount`` as float64, ``is_fraud`` as int8 (if present),
        ``customer_since`` as UTC timestamps (if present), sorted by event time.

    Raises:
        SchemaError: Missing column, wrong type, negative or non-finite amount, unparseable time, null id,
            duplicate transaction id, or a label that is not 0/1.
    """
    required = (*RAW_REQUIRED, LABEL) if require_label else RAW_REQUIRED
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SchemaError(f"missing column(s): {', '.join(missing)} (found: {', '.join(map(str, df.columns))})")
    out = df.copy(deep=False)
    for col in (TRANSACTION_ID, CUSTOMER_ID, TERMINAL_ID):
        nulls = int(out[col].isna().sum())
        if nulls:
            raise SchemaError(f"column {col!r}: {nulls} null value(s)")
    dup = out[TRANSACTION_ID].duplicated()
    if dup.any():
        first = out.loc[dup, TRANSACTION_ID].iloc[0]
        raise SchemaError(f"column {TRANSACTION_ID!r}: {int(dup.sum())} duplicate id(s), e.g. {first!r}")
    out[EVENT_TIME] = _to_utc(out[EVENT_TIME], EVENT_TIME)
    if CUSTOMER_SINCE in out.columns:
        out[CUSTOMER_SINCE] = _to_utc(out[CUSTOMER_SINCE], CUSTOMER_SINCE)
    amount = out[AMOUNT]
    if not pd.api.types.is_numeric_dtype(amount) or pd.api.types.is_bool_dtype(amount):
        converted = pd.to_numeric(amount, errors="coerce")
        bad = converted.isna() & amount.notna()
        if bad.any():
            raise SchemaError(
                f"column {AMOUNT!r}: wrong type, {int(bad.sum())} non-numeric value(s), e.g. {amount[bad].iloc[0]!r}"
            )
        amount = converted
    amount = amount.astype("float64")
    values = amount.to_numpy()
    if not np.isfinite(values).all():
        raise SchemaError(f"column {AMOUNT!r}: {int((~np.isfinite(values)).sum())} missing or non-finite value(s)")
    if (values < 0).any():
        raise SchemaError(f"column {AMOUNT!r}: {int((values < 0).sum())} negative amount(s), e.g. {values.min()}")
    out[AMOUNT] = amount
    if LABEL in out.columns:
        label = pd.to_numeric(out[LABEL], errors="coerce")
        bad = ~label.isin([0, 1])
        if bad.any():
            raise SchemaError(f"column {LABEL!r}: {int(bad.sum())} value(s) not 0/1, e.g. {out[LABEL][bad].iloc[0]!r}")
        out[LABEL] = label.astype("int8")
    if not out[EVENT_TIME].is_monotonic_increasing:
        out = out.sort_values(EVENT_TIME, kind="stable").reset_index(drop=True)
    return out


def _to_utc(series: pd.Series, name: str) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        parsed = series.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(series):
        parsed = series.dt.tz_localize("UTC")
    else:
        parsed = pd.to_datetime(series, utc=True, errors="coerce", format="mixed")
        bad = parsed.isna() & series.notna()
        if bad.any():
            raise SchemaError(f"column {name!r}: {int(bad.sum())} unparseable time(s), e.g. {series[bad].iloc[0]!r}")
    nulls = int(parsed.isna().sum())
    if nulls and name == EVENT_TIME:
        raise SchemaError(f"column {name!r}: {nulls} missing time(s)")
    return parsed.astype("datetime64[ns, UTC]")


def read_transactions(
    path: str | Path,
    column_map: Mapping[str, str] | None = None,
    *,
    require_label: bool = False,
) -> pd.DataFrame:
    """Read raw transactions from CSV or Parquet, rename columns and validate.

    Args:
        path: A ``.csv``, ``.csv.gz``, ``.parquet`` file, or a directory of Parquet (else CSV) files.
        column_map: Source column name to contract column name; the handbook's names are recognised without it.
        require_label: Fail when the label column is missing.

    Returns:
        The validated frame (see :func:`validate_transactions`).

    Raises:
        SchemaError: The file cannot be read, holds no rows or breaks the contract; a directory holds no CSV or
            Parquet file.
    """
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"input {path}: no such file or directory")
    if path.is_dir():
        df = _read_directory(path)
    elif path.suffix == ".parquet":
        df = read_parquet_file(path)
    elif path.name.endswith((".csv", ".csv.gz")):
        df = _read_csv(path)
    else:
        raise SchemaError(f"input {path}: unknown format (expected .csv, .csv.gz or .parquet)")
    if df.empty:
        raise SchemaError(f"input {path}: no rows (only a header, or empty)")
    mapping = dict(HANDBOOK_COLUMN_MAP)
    mapping.update(column_map or {})
    df = df.rename(columns={k: v for k, v in mapping.items() if k in df.columns and v not in df.columns})
    LOG.info("read %d rows from %s", len(df), path)
    return validate_transactions(df, require_label=require_label)


#: A Parquet file starts and ends with these bytes.
PARQUET_MAGIC = b"PAR1"


def check_parquet_bytes(data: bytes, name: str) -> None:
    """Check the Parquet framing (magic bytes at both ends, a footer length that fits) before any parser sees it.

    Args:
        data: The object's bytes.
        name: Its file name or store key, for the message.

    Raises:
        SchemaError: Empty, truncated or not Parquet; the message names it.
    """
    if not data:
        raise SchemaError(f"{name}: empty file (0 bytes), not Parquet")
    if len(data) < 12 or data[:4] != PARQUET_MAGIC or data[-4:] != PARQUET_MAGIC:
        raise SchemaError(f"{name}: not a Parquet file (corrupt or truncated: no Parquet magic bytes)")
    footer = int.from_bytes(data[-8:-4], "little")
    if footer <= 0 or footer > len(data) - 12:
        raise SchemaError(f"{name}: corrupt Parquet footer (length {footer} in a {len(data)}-byte file)")


def read_parquet_bytes(data: bytes, name: str) -> pd.DataFrame:
    """Read Parquet bytes after checking their framing; a corrupt file is a one-line error naming it.

    The table is read with pyarrow and validated in full before it becomes a frame.

    Args:
        data: The bytes.
        name: File name or store key, for the message.

    Returns:
        The frame.

    Raises:
        SchemaError: The bytes are not a readable Parquet file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_parquet_bytes(data, name)
    try:
        table = pq.read_table(pa.BufferReader(data))
        table.validate(full=True)
        return table.to_pandas()
    except Exception as exc:
        message = " ".join(str(exc).split()).replace("'<Buffer>'", repr(name))
        raise SchemaError(f"{name}: corrupt Parquet file: {message[:300]}") from exc


def read_parquet_file(path: Path) -> pd.DataFrame:
    """Read a local Parquet file with :func:`read_parquet_bytes`.

    Args:
        path: The file.

    Returns:
        The frame.

    Raises:
        SchemaError: Unreadable or corrupt; the message names the file.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SchemaError(f"input {path}: cannot be read: {exc.strerror or exc}") from exc
    return read_parquet_bytes(data, f"input {path}")


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise SchemaError(f"input {path}: empty file (no header, no rows)") from exc
    except Exception as exc:
        raise SchemaError(f"input {path}: cannot be read as CSV: {' '.join(str(exc).split())[:300]}") from exc


def _read_directory(path: Path) -> pd.DataFrame:
    """Every Parquet file of a directory (recursively), else every CSV file; hidden files are ignored."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    parquet = [p for p in files if p.suffix == ".parquet"]
    csv = [p for p in files if p.name.endswith((".csv", ".csv.gz"))]
    if parquet:
        frames = [read_parquet_file(p) for p in parquet]
    elif csv:
        frames = [_read_csv(p) for p in csv]
    else:
        raise SchemaError(f"input {path}: the directory holds no CSV or Parquet file (.csv, .csv.gz, .parquet)")
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def write_frame(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a frame as Parquet or CSV (by suffix) atomically: a temporary name, then rename.

    Args:
        df: Frame to write.
        path: Destination ending in ``.parquet`` or ``.csv``.

    Returns:
        The written path.
    """
    path = Path(path)
    with atomic_file(path) as tmp:
        if path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    return path


def validate_feature_frame(df: pd.DataFrame) -> None:
    """Check that a frame holds every model feature as a finite number.

    Args:
        df: Feature frame.

    Raises:
        SchemaError: A feature is missing, not numeric or not finite.
    """
    missing = [f for f in FEATURES if f not in df.columns]
    if missing:
        raise SchemaError(f"missing feature(s): {', '.join(missing)}")
    for name in FEATURES:
        col = df[name]
        if not pd.api.types.is_numeric_dtype(col):
            raise SchemaError(f"feature {name!r}: wrong type {col.dtype}, expected a number")
        if not np.isfinite(col.to_numpy(dtype="float64")).all():
            raise SchemaError(f"feature {name!r}: NaN or infinite value(s)")
