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


def _columns(names: list[str]) -> np.ndarray:
    return np.array([schema.FEATURES.index(n) for n in names], dtype=np.intp)


def _aggregate_columns(windows: tuple[WindowSpec, ...], aggregate: str) -> np.ndarray:
    return np.array([AGGREGATES.index(f"{w.name}_{aggregate}") for w in windows], dtype=np.intp)


_C_DAYS = [w.days for w in CUSTOMER_WINDOWS]
_T_DAYS = [w.days for w in TERMINAL_WINDOWS]
_A_CN, _A_CS = _aggregate_columns(CUSTOMER_WINDOWS, "n"), _aggregate_columns(CUSTOMER_WINDOWS, "s")
_A_TN, _A_TF = _aggregate_columns(TERMINAL_WINDOWS, "n"), _aggregate_columns(TERMINAL_WINDOWS, "f")
_A_30 = np.array([AGGREGATES.index(f"customer_30d_{a}") for a in CUSTOMER_AGGREGATES], dtype=np.intp)
_A_7 = np.array([AGGREGATES.index(f"customer_7d_{a}") for a in CUSTOMER_AGGREGATES], dtype=np.intp)
_A_N1 = AGGREGATES.index("customer_1d_n")
_F_RAW = [schema.FEATURES.index(n) for n in ("amount", "hour_of_day", "is_weekend", "is_night")]
_F_TENURE = schema.FEATURES.index("customer_tenure_days")
_F_CCOUNT = _columns([f"customer_tx_count_{d}d" for d in _C_DAYS])
_F_CAVG = _columns([f"customer_avg_amount_{d}d" for d in _C_DAYS])
_F_PREV_24H = schema.FEATURES.index("num_prev_tx_24h")
_F_MONTHLY_SPEND = schema.FEATURES.index("avg_monthly_spend")
_F_RATIO = schema.FEATURES.index("amount_to_customer_avg_30d")
_F_ZSCORE = schema.FEATURES.index("amount_zscore_30d")
_F_TCOUNT = _columns([f"terminal_tx_count_{d}d" for d in _T_DAYS])
_F_TRATE = _columns([f"terminal_fraud_rate_{d}d" for d in _T_DAYS])
_F_RATIO_7D = schema.FEATURES.index("amount_to_customer_avg_7d")
_F_AVG7_BASE = schema.FEATURES.index("customer_avg_7d_to_baseline")


def _mean_std(n: np.ndarray, s: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation (cents) from a count, a sum and a sum of squares; 0 where undefined."""
    rows = n.shape[0]
    mean = np.divide(s, n, out=np.zeros(rows), where=n > 0)
    var = np.divide(q, n, out=np.zeros(rows), where=n > 1)
    var -= np.where(n > 1, mean**2, 0.0)
    return mean, np.sqrt(np.maximum(var, 0.0))


def _ratio(num: np.ndarray, den: np.ndarray, default: float) -> np.ndarray:
    return np.divide(num, den, out=np.full(num.shape[0], default), where=den > 0)


def _zscore(cents: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    z = np.divide(cents - mean, std, out=np.zeros(cents.shape[0]), where=std > 1e-7)
    return np.minimum(np.maximum(z, -50.0), 50.0)


def derive_matrix(
    seconds: np.ndarray,
    amount: np.ndarray,
    since_seconds: np.ndarray,
    aggregates: np.ndarray,
    night_end_hour: int = 6,
) -> np.ndarray:
    """The model inputs from the raw fields and the window aggregates, identically for every executor.

    Whole columns at a time (a few dozen numpy operations whatever the number of rows), so one row costs tens of
    microseconds and a history is vectorised.

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
    cents = np.rint(amt * 100.0)  # amount_cents, as float
    a = np.asarray(aggregates).astype(np.float64)
    n_rows = t.shape[0]
    day = t // SECONDS_PER_DAY
    hour = (t % SECONDS_PER_DAY) // HOUR
    out = np.empty((n_rows, len(schema.FEATURES)), dtype=np.float64)
    amount_col, hour_col, weekend_col, night_col = _F_RAW
    out[:, amount_col] = amt
    out[:, hour_col] = hour
    # 1970-01-01 was a Thursday: day 0 is weekday 3 (Monday = 0).
    out[:, weekend_col] = (day + 3) % 7 >= 5
    out[:, night_col] = hour < night_end_hour
    out[:, _F_TENURE] = np.maximum(t - np.asarray(since_seconds, dtype=np.int64), 0) / SECONDS_PER_DAY
    count = a[:, _A_CN] + 1
    out[:, _F_CCOUNT] = count
    out[:, _F_CAVG] = (a[:, _A_CS] + cents[:, None]) / 100.0 / count
    n30, s30, q30 = a[:, _A_30].T
    n7, s7, _ = a[:, _A_7].T
    out[:, _F_PREV_24H] = a[:, _A_N1]
    out[:, _F_MONTHLY_SPEND] = s30 / 100.0
    mean_cents, std_cents = _mean_std(n30, s30, q30)
    out[:, _F_RATIO] = _ratio(cents, mean_cents, 1.0)
    out[:, _F_ZSCORE] = _zscore(cents, mean_cents, std_cents)
    # The baseline: the 30-day window without its last 7 days (both start on the hour and end on the minute, so
    # the difference is exactly the older part), which a compromise of the last days has not inflated yet.
    base_mean = _ratio(s30 - s7, n30 - n7, 0.0)
    mean7 = _ratio(s7, n7, 0.0)
    out[:, _F_RATIO_7D] = _ratio(cents, mean7, 1.0)
    out[:, _F_AVG7_BASE] = np.where(mean7 > 0, _ratio(mean7, base_mean, 1.0), 1.0)
    tn = a[:, _A_TN]
    out[:, _F_TCOUNT] = tn
    out[:, _F_TRATE] = np.divide(a[:, _A_TF], tn, out=np.zeros_like(tn), where=tn > 0)
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
