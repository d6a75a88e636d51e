"""The in-memory executor of the feature declarations (:mod:`fraud_detection.features.definitions`), vectorised.

A transaction's windows are the ``[start, end)`` intervals of :func:`~fraud_detection.features.definitions.
window_bounds`; rows are sorted by (entity, time), a composite key ``entity_code * SPAN + seconds`` is strictly
ordered within an entity and never overlaps between entities, so one ``searchsorted`` per bound over the whole frame
gives each row's window, and exact integer prefix sums (restarting at each entity) give its counts and sums. No
per-row Python loop. The model inputs then come from
:func:`~fraud_detection.features.definitions.derive_features`, the same function the online executor calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraud_detection.data import schema
from fraud_detection.features.definitions import (
    CUSTOMER_WINDOWS,
    HOUR,
    SECONDS_PER_DAY,
    TERMINAL_WINDOWS,
    WindowSpec,
    amount_cents,
    derive_features,
    window_bounds,
)

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureConfig:
    """Feature parameters.

    Attributes:
        label_delay_days: Labels of transactions newer than this are unknown at scoring time and never used.
        night_end_hour: Hours before this (UTC) count as night.
    """

    label_delay_days: int = 7
    night_end_hour: int = 6


def window_aggregates(
    codes: np.ndarray,
    seconds: np.ndarray,
    values: dict[str, np.ndarray],
    specs: tuple[WindowSpec, ...],
    label_delay_days: int,
) -> dict[str, np.ndarray]:
    """Count and sum ``values`` over each row's windows among the rows of the same entity.

    Args:
        codes: Entity code per row (non-negative ints).
        seconds: Event time per row (int64 epoch seconds).
        values: Aggregate name (without ``n``) to an int64 array to sum.
        specs: The windows.
        label_delay_days: The label delay.

    Returns:
        ``<window name>_<aggregate>`` (``n`` for the count) to int64 arrays aligned with the input rows.
    """
    longest = max(s.days for s in specs) * SECONDS_PER_DAY + label_delay_days * SECONDS_PER_DAY + 2 * HOUR
    base = int(seconds.min()) - longest
    span = int(seconds.max()) - base + 1
    codes64 = codes.astype(np.int64)
    key = codes64 * span + (seconds - base)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    sorted_codes = codes64[order]
    sorted_values = {name: v[order] for name, v in values.items()}
    # Prefix sums restart at each entity (exact int64, and bounded by one entity's history).
    inclusive = {
        name: pd.Series(v).groupby(sorted_codes, sort=False).cumsum().to_numpy() for name, v in sorted_values.items()
    }
    sorted_seconds = seconds[order]
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        start, end = window_bounds(sorted_seconds, spec, label_delay_days)
        lo = np.searchsorted(sorted_key, sorted_codes * span + (start - base), side="left")
        hi = np.searchsorted(sorted_key, sorted_codes * span + (end - base), side="left")
        nonempty = hi > lo
        last = np.maximum(hi - 1, 0)
        first = np.minimum(lo, order.size - 1)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        out[f"{spec.name}_n"] = (hi - lo).astype(np.int64)[inverse]
        for name, inc in inclusive.items():
            v = sorted_values[name]
            window_sum = np.where(nonempty, inc[last] - (inc[first] - v[first]), 0)
            out[f"{spec.name}_{name}"] = window_sum.astype(np.int64)[inverse]
    return out


def first_seen(codes: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Each row's entity's first event time in the data (tenure counts from it when ``customer_since`` is unknown).

    Args:
        codes: Entity code per row.
        seconds: Event time per row (int64 epoch seconds).

    Returns:
        int64 epoch seconds aligned with the rows.
    """
    return pd.Series(seconds).groupby(codes).transform("min").to_numpy(dtype=np.int64)


def customer_aggregates(
    codes: np.ndarray, seconds: np.ndarray, amount: np.ndarray, label_delay_days: int
) -> dict[str, np.ndarray]:
    """The customer windows' counts, amount sums and squared-amount sums (cents) of every row.

    Every executor that holds whole customers calls this: the in-memory one on the whole history, the Spark one on
    each partition of a shuffle by customer.

    Args:
        codes: Customer code per row.
        seconds: Event time per row (int64 epoch seconds).
        amount: Amount per row.
        label_delay_days: The label delay.

    Returns:
        The customer names of :data:`~fraud_detection.features.definitions.AGGREGATES` to int64 arrays.
    """
    cents = amount_cents(amount)
    return window_aggregates(codes, seconds, {"s": cents, "q": cents * cents}, CUSTOMER_WINDOWS, label_delay_days)


def terminal_aggregates(
    codes: np.ndarray, seconds: np.ndarray, label: np.ndarray, label_delay_days: int
) -> dict[str, np.ndarray]:
    """The terminal windows' counts and known frauds of every row (the windows end behind the label delay).

    Args:
        codes: Terminal code per row.
        seconds: Event time per row (int64 epoch seconds).
        label: 0/1 per row (all 0 without labels).
        label_delay_days: The label delay.

    Returns:
        The terminal names of :data:`~fraud_detection.features.definitions.AGGREGATES` to int64 arrays.
    """
    return window_aggregates(codes, seconds, {"f": label}, TERMINAL_WINDOWS, label_delay_days)


def build_features(df: pd.DataFrame, config: FeatureConfig | None = None) -> pd.DataFrame:
    """Compute the feature frame for validated raw transactions.

    Args:
        df: Transactions satisfying :func:`fraud_detection.data.schema.validate_transactions`. ``is_fraud`` is needed
            for the terminal fraud rates; without it they are 0.
        config: Feature parameters.

    Returns:
        One row per transaction, in input order: ``transaction_id``, ``event_time``, ``customer_id``, the features of
        :data:`fraud_detection.data.schema.FEATURES` as float64, and ``is_fraud`` when the input has it.
    """
    cfg = config or FeatureConfig()
    n = len(df)
    if n == 0:
        return _assemble(df, pd.DataFrame({name: np.zeros(0) for name in schema.FEATURES}))
    seconds = df[schema.EVENT_TIME].to_numpy(dtype="datetime64[s]").astype(np.int64)
    amount = df[schema.AMOUNT].to_numpy(dtype=np.float64)
    cust_codes, _ = pd.factorize(df[schema.CUSTOMER_ID], sort=False)
    term_codes, _ = pd.factorize(df[schema.TERMINAL_ID], sort=False)
    has_label = schema.LABEL in df.columns
    label = df[schema.LABEL].to_numpy(dtype=np.int64) if has_label else np.zeros(n, dtype=np.int64)
    if schema.CUSTOMER_SINCE in df.columns and df[schema.CUSTOMER_SINCE].notna().all():
        since = df[schema.CUSTOMER_SINCE].to_numpy(dtype="datetime64[s]").astype(np.int64)
    else:
        since = first_seen(cust_codes, seconds)
    aggregates = customer_aggregates(cust_codes, seconds, amount, cfg.label_delay_days)
    aggregates |= terminal_aggregates(term_codes, seconds, label, cfg.label_delay_days)
    features = derive_features(seconds, amount, since, aggregates, night_end_hour=cfg.night_end_hour)
    return _assemble(df, pd.DataFrame(features, index=df.index))


def _assemble(df: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in (schema.TRANSACTION_ID, schema.EVENT_TIME, schema.CUSTOMER_ID) if c in df.columns]
    parts = [df[keys], features]
    if schema.LABEL in df.columns:
        parts.append(df[[schema.LABEL]])
    return pd.concat(parts, axis=1)
