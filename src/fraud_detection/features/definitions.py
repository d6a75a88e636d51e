"""The features, declared once: entities, windows, aggregates, the label delay, and the tiles that bound them.

Every executor (in memory over a history, online against a state store, on Spark) reads these declarations and
derives the model inputs with :func:`derive_features`, so the same transaction gets the same features everywhere.

The window semantics (open and closed bounds, same-minute events, the label delay, cents, tenure) are documented
once, in docs/FEATURES.md; in short: customer windows end at the start of the transaction's minute (the 1-day window
starts a day before that, the longer ones on the hour), terminal windows are the whole hours that ended at least the
label delay before it, and amounts are summed in integer cents, so window sums are exact in every executor.

Windows end on tile boundaries, which keeps online state bounded whatever the traffic (:data:`CUSTOMER_TILES`,
:func:`terminal_tiles`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from fraud_detection.data import schema

#: Epoch seconds: one Python int (online, per transaction) or an int64 array (offline, a history).
IntLike = TypeVar("IntLike", int, np.ndarray)

SECONDS_PER_DAY = 86_400
MINUTE = 60
HOUR = 3_600
#: How late (behind the newest event of an entity) an event may arrive and still get exact features online.
MAX_LATENESS_SECONDS = SECONDS_PER_DAY


@dataclass(frozen=True)
class Tiles:
    """The tiles an entity's online state keeps.

    Attributes:
        fine_seconds: Fine tile width (0: no fine tiles).
        fine_horizon_seconds: Fine tiles kept behind the entity's newest event.
        coarse_seconds: Coarse tile width.
        coarse_horizon_seconds: Coarse tiles kept behind the entity's newest event.
    """

    fine_seconds: int
    fine_horizon_seconds: int
    coarse_seconds: int
    coarse_horizon_seconds: int

    @property
    def max_tiles(self) -> int:
        """The most tiles one entity can hold, whatever its traffic."""
        fine = self.fine_horizon_seconds // self.fine_seconds + 1 if self.fine_seconds else 0
        return fine + self.coarse_horizon_seconds // self.coarse_seconds + 1


@dataclass(frozen=True)
class WindowSpec:
    """One windowed aggregate family of an entity.

    Attributes:
        entity: Entity column (``customer_id`` or ``terminal_id``).
        days: Window length.
        behind_label_delay: The window ends at the label delay (terminal risk) instead of the transaction's minute.
    """

    entity: str
    days: int
    behind_label_delay: bool

    @property
    def name(self) -> str:
        """Short name, e.g. ``customer_7d``."""
        return f"{self.entity.removesuffix('_id')}_{self.days}d"


CUSTOMER_WINDOWS: tuple[WindowSpec, ...] = tuple(
    WindowSpec(schema.CUSTOMER_ID, d, behind_label_delay=False) for d in schema.CUSTOMER_WINDOWS_DAYS
)
TERMINAL_WINDOWS: tuple[WindowSpec, ...] = tuple(
    WindowSpec(schema.TERMINAL_ID, d, behind_label_delay=True) for d in schema.TERMINAL_WINDOWS_DAYS
)
#: Customer aggregates per window: transactions, amount sum (cents), amount-squared sum (cents^2).
CUSTOMER_AGGREGATES: tuple[str, ...] = ("n", "s", "q")
#: Terminal aggregates per window: transactions, known frauds.
TERMINAL_AGGREGATES: tuple[str, ...] = ("n", "f")
#: Every window aggregate, in the order executors exchange them: customer windows, then terminal windows.
AGGREGATES: tuple[str, ...] = tuple(
    [f"{w.name}_{a}" for w in CUSTOMER_WINDOWS for a in CUSTOMER_AGGREGATES]
    + [f"{w.name}_{a}" for w in TERMINAL_WINDOWS for a in TERMINAL_AGGREGATES]
)

_LONGEST_CUSTOMER = max(w.days for w in CUSTOMER_WINDOWS) * SECONDS_PER_DAY
_LONGEST_TERMINAL = max(w.days for w in TERMINAL_WINDOWS) * SECONDS_PER_DAY

#: Customer state: minute tiles for the 1-day window and the current hour, hour tiles for the rest.
CUSTOMER_TILES = Tiles(
    fine_seconds=MINUTE,
    fine_horizon_seconds=SECONDS_PER_DAY + HOUR + MAX_LATENESS_SECONDS,
    coarse_seconds=HOUR,
    coarse_horizon_seconds=_LONGEST_CUSTOMER + HOUR + MAX_LATENESS_SECONDS,
)


def terminal_tiles(label_delay_days: int) -> Tiles:
    """Terminal state: hour tiles over the label delay plus the longest window.

    Args:
        label_delay_days: The label delay.

    Returns:
        The tiles a terminal keeps.
    """
    return Tiles(
        fine_seconds=0,
        fine_horizon_seconds=0,
        coarse_seconds=HOUR,
        coarse_horizon_seconds=label_delay_days * SECONDS_PER_DAY + _LONGEST_TERMINAL + HOUR + MAX_LATENESS_SECONDS,
    )


def window_bounds(seconds: IntLike, spec: WindowSpec, label_delay_days: int) -> tuple[IntLike, IntLike]:
    """Each transaction's window ``[start, end)`` in epoch seconds.

    The same integer arithmetic serves a whole history (int64 arrays, the offline executor) and one transaction
    (a Python int, the online executor).

    Args:
        seconds: Event times (epoch seconds): a Python int or an int64 array.
        spec: The window.
        label_delay_days: The label delay (used when the window sits behind it).

    Returns:
        (start, end), of the same kind and shape as ``seconds``.
    """
    t = seconds
    length = spec.days * SECONDS_PER_DAY
    if spec.behind_label_delay:
        shifted = t - label_delay_days * SECONDS_PER_DAY
        end = shifted - shifted % HOUR
        return end - length, end
    end = t - t % MINUTE
    start = end - length if length <= SECONDS_PER_DAY else (t - t % HOUR) - length
    return start, end


def amount_cents(amount: np.ndarray) -> np.ndarray:
    """Amounts in integer cents, rounded half to even (the unit of every amount sum).

    Args:
        amount: Amounts.

    Returns:
        int64 cents.
    """
    return np.rint(np.asarray(amount, dtype=np.float64) * 100.0).astype(np.int64)


#: A feature column: an array over rows (a history) or one Python number (one transaction).
Column = float | np.ndarray

_C_DAYS = [w.days for w in CUSTOMER_WINDOWS]
_T_DAYS = [w.days for w in TERMINAL_WINDOWS]
_A = {name: i for i, name in enumerate(AGGREGATES)}


def _divided(num: Column, den: Column, defined: bool | np.ndarray, default: float) -> Column:
    """``num / den`` where ``defined``, else ``default`` (the same IEEE division for arrays and numbers)."""
    if isinstance(den, np.ndarray):
        return np.divide(num, den, out=np.full(den.shape[0], default), where=defined)
    return num / den if defined else default


def _chosen(condition: bool | np.ndarray, yes: Column, no: float) -> Column:
    if isinstance(condition, np.ndarray):
        return np.where(condition, yes, no)
    return yes if condition else no


def _clipped(x: Column, lo: float, hi: float) -> Column:
    if isinstance(x, np.ndarray):
        return np.minimum(np.maximum(x, lo), hi)
    return min(max(x, lo), hi)


def _sqrt_of_positive_part(x: Column) -> Column:
    if isinstance(x, np.ndarray):
        return np.sqrt(np.maximum(x, 0.0))
    return math.sqrt(max(x, 0.0))


def _feature_columns(
    t: int | np.ndarray,
    amt: Column,
    since: int | np.ndarray,
    agg: Mapping[str, Column],
    night_end_hour: int,
) -> list[Column]:
    """Every feature in schema order, for whole columns (arrays) or one transaction (Python numbers) alike.

    The one definition of the derived features: the arithmetic is IEEE double in both cases (aggregates as
    floats, ``x * x`` for squares, correctly rounded division and square root), so a row derived alone equals the
    same row derived in a batch, bit for bit.
    """
    cents = np.rint(amt * 100.0) if isinstance(amt, np.ndarray) else float(round(amt * 100.0))  # half to even
    day = t // SECONDS_PER_DAY
    hour = (t % SECONDS_PER_DAY) // HOUR
    tenure = t - since
    tenure = (np.maximum(tenure, 0) if isinstance(tenure, np.ndarray) else max(tenure, 0)) / SECONDS_PER_DAY
    values: dict[str, Column] = {
        "amount": amt,
        "hour_of_day": hour,
        # 1970-01-01 was a Thursday: day 0 is weekday 3 (Monday = 0).
        "is_weekend": (day + 3) % 7 >= 5,
        "is_night": hour < night_end_hour,
        "customer_tenure_days": tenure,
    }
    for d in _C_DAYS:
        count = agg[f"customer_{d}d_n"] + 1
        values[f"customer_tx_count_{d}d"] = count
        values[f"customer_avg_amount_{d}d"] = (agg[f"customer_{d}d_s"] + cents) / 100.0 / count
    n30, s30, q30 = agg["customer_30d_n"], agg["customer_30d_s"], agg["customer_30d_q"]
    n7, s7 = agg["customer_7d_n"], agg["customer_7d_s"]
    values["num_prev_tx_24h"] = agg["customer_1d_n"]
    values["avg_monthly_spend"] = s30 / 100.0
    # mean and population standard deviation (cents) of the 30-day window; 0 where undefined
    mean = _divided(s30, n30, n30 > 0, 0.0)
    std = _sqrt_of_positive_part(_divided(q30, n30, n30 > 1, 0.0) - _chosen(n30 > 1, mean * mean, 0.0))
    values["amount_to_customer_avg_30d"] = _divided(cents, mean, mean > 0, 1.0)
    values["amount_zscore_30d"] = _clipped(_divided(cents - mean, std, std > 1e-7, 0.0), -50.0, 50.0)
    # The baseline: the 30-day window without its last 7 days (both start on the hour and end on the minute, so
    # the difference is exactly the older part), which a compromise of the last days has not inflated yet.
    base_n = n30 - n7
    base_mean = _divided(s30 - s7, base_n, base_n > 0, 0.0)
    mean7 = _divided(s7, n7, n7 > 0, 0.0)
    values["amount_to_customer_avg_7d"] = _divided(cents, mean7, mean7 > 0, 1.0)
    values["customer_avg_7d_to_baseline"] = _chosen(mean7 > 0, _divided(mean7, base_mean, base_mean > 0, 1.0), 1.0)
    for d in _T_DAYS:
        tn = agg[f"terminal_{d}d_n"]
        values[f"terminal_tx_count_{d}d"] = tn
        values[f"terminal_fraud_rate_{d}d"] = _divided(agg[f"terminal_{d}d_f"], tn, tn > 0, 0.0)
    return [values[name] for name in schema.FEATURES]


def derive_matrix(
    seconds: np.ndarray,
    amount: np.ndarray,
    since_seconds: np.ndarray,
    aggregates: np.ndarray,
    night_end_hour: int = 6,
) -> np.ndarray:
    """The model inputs from the raw fields and the window aggregates, identically for every executor.

    Whole columns at a time (a few dozen numpy operations whatever the number of rows), so a history is
    vectorised; one row is derived with Python numbers instead (the same arithmetic, bit for bit, without numpy's
    per-call cost), which is what a served transaction needs.

    Args:
        seconds: Event times (int64 epoch seconds), shape (N,).
        amount: Amounts, shape (N,).
        since_seconds: Start of the customer relationship (int64 epoch seconds), shape (N,).
        aggregates: (N, len(AGGREGATES)) integers, columns in :data:`AGGREGATES` order.
        night_end_hour: Hours before this (UTC) count as night.

    Returns:
        (N, F) float64, columns in :data:`fraud_detection.data.schema.FEATURES` order.
    """
    t = np.asarray(seconds, dtype=np.int64)
    amt = np.asarray(amount, dtype=np.float64)
    since = np.asarray(since_seconds, dtype=np.int64)
    a = np.asarray(aggregates).astype(np.float64)
    if t.shape[0] == 1:
        row = a[0].tolist()
        one = _feature_columns(
            int(t[0]), float(amt[0]), int(since[0]), {n: row[i] for n, i in _A.items()}, night_end_hour
        )
        return np.array([one], dtype=np.float64)
    columns = _feature_columns(t, amt, since, {n: a[:, i] for n, i in _A.items()}, night_end_hour)
    out = np.empty((t.shape[0], len(schema.FEATURES)), dtype=np.float64)
    for i, column in enumerate(columns):
        out[:, i] = column
    return out


def derive_features(
    seconds: np.ndarray,
    amount: np.ndarray,
    since_seconds: np.ndarray,
    aggregates: Mapping[str, np.ndarray],
    night_end_hour: int = 6,
) -> dict[str, np.ndarray]:
    """:func:`derive_matrix` with the aggregates and the features by name.

    Args:
        seconds: Event times (int64 epoch seconds), shape (N,).
        amount: Amounts, shape (N,).
        since_seconds: Start of the customer relationship (int64 epoch seconds), shape (N,).
        aggregates: Every name of :data:`AGGREGATES` (e.g. ``customer_7d_s``, ``terminal_30d_f``) to int64 arrays.
        night_end_hour: Hours before this (UTC) count as night.

    Returns:
        Feature name to float64 array, for every name of :data:`fraud_detection.data.schema.FEATURES`.
    """
    stacked = np.column_stack([np.asarray(aggregates[name], dtype=np.int64) for name in AGGREGATES])
    matrix = derive_matrix(seconds, amount, since_seconds, stacked, night_end_hour)
    return {name: matrix[:, i] for i, name in enumerate(schema.FEATURES)}
