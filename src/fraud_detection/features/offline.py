"""Point-in-time feature engineering, vectorised.

A transaction's features use only transactions strictly before it (plus itself where the feature says so), and
terminal fraud rates use only transactions older than the label delay, whose labels are assumed known by then.

Every window is computed the same way: rows are sorted by (entity, time); a composite key
``entity_code * SPAN + seconds`` is strictly ordered within an entity and never overlaps between entities, so one
``searchsorted`` per window bound over the whole frame gives each row's window start and end, and prefix sums give
window counts and sums. No per-row Python loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraud_detection.data import schema

LOG = logging.getLogger(__name__)
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class FeatureConfig:
    """Feature parameters.

    Attributes:
        label_delay_days: Labels of transactions newer than this are unknown at scoring time and never used.
        night_end_hour: Hours before this (UTC) count as night.
    """

    label_delay_days: int = 7
    night_end_hour: int = 6


def _window_sums(
    codes: np.ndarray,
    seconds: np.ndarray,
    values: list[np.ndarray],
    windows: list[tuple[int, int]],
) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Count and sum ``values`` over rows of the same entity in ``[t - lo, t - hi)`` for each window.

    Args:
        codes: Entity code per row (non-negative ints).
        seconds: Event time per row in seconds (int64).
        values: Arrays to sum over each window.
        windows: ``(lo, hi)`` offsets in seconds; the window is ``[t - lo, t - hi)`` (rows at exactly ``t - hi``
            and later are excluded, so ``hi = 0`` means strictly before the row's own time).

    Returns:
        For each window, the count and the list of sums, aligned with the input rows.
    """
    base = seconds.min() - max(lo for lo, _ in windows) - 1
    rel = seconds - base
    span = int(rel.max()) + 1
    key = codes.astype(np.int64) * span + rel
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    # Prefix sums restart at each entity, so a row's window sums depend only on that entity's earlier rows (a global
    # running sum would let any other row perturb the floating-point rounding).
    sorted_codes = codes[order]
    sorted_values = [v[order] for v in values]
    inclusive = [pd.Series(v).groupby(sorted_codes, sort=False).cumsum().to_numpy() for v in sorted_values]
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    results = []
    for lo, hi in windows:
        # Queries in sorted order are themselves sorted, which keeps searchsorted cache-friendly.
        start = np.searchsorted(sorted_key, sorted_key - lo, side="left")
        end = np.searchsorted(sorted_key, sorted_key - hi, side="left") if hi else _first_of_ties(sorted_key)
        count = (end - start).astype(np.float64)
        nonempty = end > start
        last = np.maximum(end - 1, 0)
        first = np.minimum(start, order.size - 1)
        sums = [
            np.where(nonempty, inc[last] - (inc[first] - v_sorted[first]), 0.0)
            for inc, v_sorted in zip(inclusive, sorted_values, strict=True)
        ]
        results.append((count[inverse], [s[inverse] for s in sums]))
    return results


def _first_of_ties(sorted_key: np.ndarray) -> np.ndarray:
    """Index of the first element equal to each element of a sorted array (``searchsorted(a, a, 'left')``)."""
    idx = np.arange(sorted_key.size)
    new_run = np.empty(sorted_key.size, dtype=bool)
    new_run[:1] = True
    new_run[1:] = sorted_key[1:] != sorted_key[:-1]
    return np.maximum.accumulate(np.where(new_run, idx, 0))


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
    event_time = df[schema.EVENT_TIME]
    seconds = event_time.to_numpy(dtype="datetime64[s]").astype(np.int64)
    amount = df[schema.AMOUNT].to_numpy(dtype=np.float64)
    cust_codes, _ = pd.factorize(df[schema.CUSTOMER_ID], sort=False)
    term_codes, _ = pd.factorize(df[schema.TERMINAL_ID], sort=False)
    label = df[schema.LABEL].to_numpy(dtype=np.float64) if schema.LABEL in df.columns else np.zeros(n, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    if n == 0:
        frame = pd.DataFrame({name: np.zeros(0) for name in schema.FEATURES})
        return _assemble(df, frame)

    hour = event_time.dt.hour.to_numpy()
    out["amount"] = amount
    out["hour_of_day"] = hour.astype(np.float64)
    out["is_weekend"] = (event_time.dt.dayofweek.to_numpy() >= 5).astype(np.float64)
    out["is_night"] = (hour < cfg.night_end_hour).astype(np.float64)

    if schema.CUSTOMER_SINCE in df.columns and df[schema.CUSTOMER_SINCE].notna().all():
        since = df[schema.CUSTOMER_SINCE].to_numpy(dtype="datetime64[s]").astype(np.int64)
    else:
        # Tenure counts from the customer's first transaction in the data.
        first = pd.Series(seconds).groupby(cust_codes).transform("min").to_numpy()
        since = first
    out["customer_tenure_days"] = np.maximum(seconds - since, 0) / SECONDS_PER_DAY

    cust_windows = [(d * SECONDS_PER_DAY, 0) for d in schema.CUSTOMER_WINDOWS_DAYS]
    cust_res = dict(
        zip(
            schema.CUSTOMER_WINDOWS_DAYS,
            _window_sums(cust_codes, seconds, [amount, amount * amount], cust_windows),
            strict=True,
        )
    )
    for days, (count, (total, _)) in cust_res.items():
        # Windows hold the prior transactions; the current one is added to match "this one included".
        out[f"customer_tx_count_{days}d"] = count + 1
        out[f"customer_avg_amount_{days}d"] = (total + amount) / (count + 1)
    prior_count_1d = cust_res[1][0]
    prior_count_30d, (prior_sum_30d, prior_sq_30d) = cust_res[30]
    out["num_prev_tx_24h"] = prior_count_1d
    out["avg_monthly_spend"] = prior_sum_30d
    prior_mean_30d = np.divide(prior_sum_30d, prior_count_30d, out=np.zeros(n), where=prior_count_30d > 0)
    out["amount_to_customer_avg_30d"] = np.divide(amount, prior_mean_30d, out=np.ones(n), where=prior_mean_30d > 0)
    prior_var = np.divide(prior_sq_30d, prior_count_30d, out=np.zeros(n), where=prior_count_30d > 1) - np.where(
        prior_count_30d > 1, prior_mean_30d**2, 0.0
    )
    prior_std = np.sqrt(np.maximum(prior_var, 0.0))
    zscore = np.divide(amount - prior_mean_30d, prior_std, out=np.zeros(n), where=prior_std > 1e-9)
    out["amount_zscore_30d"] = np.clip(zscore, -50.0, 50.0)

    delay = cfg.label_delay_days * SECONDS_PER_DAY
    term_windows = [(delay + d * SECONDS_PER_DAY, delay) for d in schema.TERMINAL_WINDOWS_DAYS]
    for days, (count, (frauds,)) in zip(
        schema.TERMINAL_WINDOWS_DAYS, _window_sums(term_codes, seconds, [label], term_windows), strict=True
    ):
        out[f"terminal_tx_count_{days}d"] = count
        out[f"terminal_fraud_rate_{days}d"] = np.divide(frauds, count, out=np.zeros(n), where=count > 0)

    frame = pd.DataFrame({name: out[name] for name in schema.FEATURES}, index=df.index)
    return _assemble(df, frame)


def _assemble(df: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in (schema.TRANSACTION_ID, schema.EVENT_TIME, schema.CUSTOMER_ID) if c in df.columns]
    parts = [df[keys], features]
    if schema.LABEL in df.columns:
        parts.append(df[[schema.LABEL]])
    return pd.concat(parts, axis=1)
