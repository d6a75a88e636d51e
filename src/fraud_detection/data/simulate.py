"""Seeded, vectorised transaction simulator after the Fraud Detection Handbook (Le Borgne et al.).

Customers and terminals sit on a 100x100 grid; each customer uses the terminals within a radius. Each customer has
a mean amount ~ U(5, 100) (sd = mean / 2) and a Poisson number of transactions a day with mean ~ U(0, 4); times of
day ~ N(12 h, 20000 s). Three fraud scenarios: (1) every amount over 220 is fraud; (2) each day a few random
terminals are compromised for 28 days and all their transactions are fraud; (3) each day a few customers have
leaked credentials for 14 days and a third of their transactions get 5x the amount and are fraud.

Optionally, drift is injected from a given day (amount inflation, a shifted hour profile, a new fraud pattern).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fraud_detection.data import schema

LOG = logging.getLogger(__name__)
SECONDS_PER_DAY = 86_400
#: Bounds of the simulator's parameters (the CLI flags use the same): beyond them a run is absurd or never ends.
MAX_CUSTOMERS = 1_000_000
MAX_TERMINALS = 1_000_000
MAX_DAYS = 3_660
MAX_AMOUNT_FACTOR = 100.0
MAX_HOUR_SHIFT = 24.0
MAX_SEED = 2**32 - 1
#: Simulated days lie in [FIRST_DATE, LAST_DATE] (timestamps every consumer can hold).
FIRST_DATE = "1970-01-01"
LAST_DATE = "2099-12-31"


@dataclass(frozen=True)
class DriftConfig:
    """Drift injected from ``start_day`` (0-based day index) on.

    Attributes:
        start_day: First day with drift.
        amount_factor: Multiplier on legitimate amounts (1.0 = no inflation).
        hour_shift_hours: Shift of the mean time of day, in hours (0 = no shift).
        new_fraud_rate: Share of transactions turned into a new fraud pattern (small amounts at night at a set of
            newly compromised terminals); 0 disables it.
    """

    start_day: int
    amount_factor: float = 1.0
    hour_shift_hours: float = 0.0
    new_fraud_rate: float = 0.0

    def __post_init__(self) -> None:
        """Reject drift that cannot be simulated (negative amounts, a rate above 1)."""
        if self.start_day < 0:
            raise ValueError(f"drift start day must be 0 or more, got {self.start_day}")
        if not 0 < self.amount_factor <= MAX_AMOUNT_FACTOR:
            raise ValueError(f"drift amount factor must be in (0, {MAX_AMOUNT_FACTOR:g}], got {self.amount_factor}")
        if not -MAX_HOUR_SHIFT <= self.hour_shift_hours <= MAX_HOUR_SHIFT:
            raise ValueError(
                f"drift hour shift must be in [-{MAX_HOUR_SHIFT:g}, {MAX_HOUR_SHIFT:g}] hours, "
                f"got {self.hour_shift_hours}"
            )
        if not 0 <= self.new_fraud_rate <= 1:
            raise ValueError(f"drift new fraud rate must be in [0, 1], got {self.new_fraud_rate}")


@dataclass(frozen=True)
class SimulationConfig:
    """Simulator parameters; the defaults follow the handbook.

    Attributes:
        n_customers: Number of customers (cards).
        n_terminals: Number of terminals.
        n_days: Number of simulated days.
        start_date: First day, ISO date (UTC).
        seed: Random seed; the same config gives the same data.
        radius: Customers use the terminals within this distance on the 100x100 grid.
        compromised_terminals_per_day: Scenario 2 terminals drawn each day.
        terminal_compromise_days: How long a compromised terminal stays compromised.
        compromised_customers_per_day: Scenario 3 customers drawn each day.
        customer_compromise_days: How long leaked credentials are used.
        drift: Optional drift injection.
    """

    n_customers: int = 5_000
    n_terminals: int = 10_000
    n_days: int = 183
    start_date: str = "2018-04-01"
    seed: int = 0
    radius: float = 5.0
    compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    compromised_customers_per_day: int = 3
    customer_compromise_days: int = 14
    drift: DriftConfig | None = field(default=None)

    def __post_init__(self) -> None:
        """Reject sizes, dates and seeds that cannot be simulated (or would run for ever); messages name them."""
        for name, most in (("n_customers", MAX_CUSTOMERS), ("n_terminals", MAX_TERMINALS), ("n_days", MAX_DAYS)):
            value = getattr(self, name)
            if not 1 <= value <= most:
                raise ValueError(f"{name} must be between 1 and {most:,}, got {value:,}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")
        if not self.radius > 0:
            raise ValueError(f"radius must be positive, got {self.radius}")
        try:
            first = pd.Timestamp(self.start_date)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"start date {self.start_date!r} is not a date (expected YYYY-MM-DD)") from exc
        if first is pd.NaT:
            raise ValueError(f"start date {self.start_date!r} is not a date (expected YYYY-MM-DD)")
        if first.tzinfo is not None:
            first = first.tz_convert(None)
        last = first + pd.Timedelta(days=self.n_days - 1)
        if first < pd.Timestamp(FIRST_DATE) or last > pd.Timestamp(LAST_DATE):
            raise ValueError(
                f"simulated days {first:%Y-%m-%d}..{last:%Y-%m-%d} must lie within {FIRST_DATE}..{LAST_DATE}"
            )
        if self.drift is not None and self.drift.start_day >= self.n_days:
            raise ValueError(f"drift start day {self.drift.start_day} is past the last day (index {self.n_days - 1})")


def simulate(config: SimulationConfig | None = None) -> pd.DataFrame:
    """Generate a labelled transaction frame satisfying :mod:`fraud_detection.data.schema`.

    Args:
        config: Simulation parameters; defaults to the handbook's size.

    Returns:
        Transactions sorted by event time with ``transaction_id``, ``event_time``, ``customer_id``, ``terminal_id``,
        ``amount``, ``customer_since``, ``is_fraud`` and ``fraud_scenario`` (0 legitimate, 1-3 handbook scenarios,
        4 injected drift pattern).
    """
    cfg = config or SimulationConfig()
    rng = np.random.default_rng(cfg.seed)
    n_c, n_t, n_d = cfg.n_customers, cfg.n_terminals, cfg.n_days

    cust_xy = rng.uniform(0, 100, size=(n_c, 2))
    mean_amount = rng.uniform(5, 100, size=n_c)
    std_amount = mean_amount / 2
    tx_per_day = rng.uniform(0, 4, size=n_c)
    term_xy = rng.uniform(0, 100, size=(n_t, 2))
    start = pd.Timestamp(cfg.start_date, tz="UTC")
    tenure_days = rng.integers(30, 3_650, size=n_c)

    # Terminals within the radius of each customer, as a flat (CSR) array.
    from scipy.spatial import cKDTree  # lazy: the CLI imports this module for its bounds

    neighbours = cKDTree(term_xy).query_ball_point(cust_xy, r=cfg.radius)
    n_avail = np.fromiter((len(n) for n in neighbours), dtype=np.int64, count=n_c)
    flat_terminals = np.fromiter((t for n in neighbours for t in n), dtype=np.int64, count=int(n_avail.sum()))
    offsets = np.concatenate(([0], np.cumsum(n_avail)[:-1]))

    # Number of transactions per customer and day, then one row per transaction.
    counts = rng.poisson(np.repeat(tx_per_day[:, None], n_d, axis=1))
    counts[n_avail == 0, :] = 0
    flat_counts = counts.ravel()
    cust = np.repeat(np.repeat(np.arange(n_c), n_d), flat_counts)
    day = np.repeat(np.tile(np.arange(n_d), n_c), flat_counts)
    n = cust.size

    mean_time = np.full(n, SECONDS_PER_DAY / 2)
    drift = cfg.drift
    drifted = day >= drift.start_day if drift is not None else np.zeros(n, dtype=bool)
    if drift is not None and drift.hour_shift_hours:
        mean_time[drifted] += drift.hour_shift_hours * 3_600
    time_in_day = rng.normal(mean_time, 20_000)
    keep = (time_in_day > 0) & (time_in_day < SECONDS_PER_DAY)
    cust, day, time_in_day, drifted = cust[keep], day[keep], time_in_day[keep], drifted[keep]
    n = cust.size

    amount = rng.normal(mean_amount[cust], std_amount[cust])
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean_amount[cust[negative]])
    amount = np.round(amount, 2)
    pick = np.floor(rng.uniform(size=n) * n_avail[cust]).astype(np.int64)
    terminal = flat_terminals[offsets[cust] + pick]

    scenario = np.zeros(n, dtype=np.int8)
    # Scenario 1: amounts over 220.
    scenario[amount > 220] = 1
    # Scenario 2: compromised terminals, all their transactions for the next 28 days.
    term_comp = np.zeros((n_t, n_d), dtype=bool)
    for d in range(n_d):
        for t in rng.choice(n_t, size=min(cfg.compromised_terminals_per_day, n_t), replace=False):
            term_comp[t, d : d + cfg.terminal_compromise_days] = True
    scenario[(scenario == 0) & term_comp[terminal, day]] = 2
    # Scenario 3: leaked credentials; a third of the customer's transactions get 5x the amount.
    cust_comp = np.zeros((n_c, n_d), dtype=bool)
    for d in range(n_d):
        for c in rng.choice(n_c, size=min(cfg.compromised_customers_per_day, n_c), replace=False):
            cust_comp[c, d : d + cfg.customer_compromise_days] = True
    leaked = cust_comp[cust, day] & (rng.uniform(size=n) < 1 / 3)
    amount[leaked] = np.round(amount[leaked] * 5, 2)
    scenario[leaked & (scenario == 0)] = 3

    if drift is not None:
        _inject_drift(drift, rng, amount, scenario, drifted, terminal, time_in_day, n_t)

    event_time = start + pd.to_timedelta(day * SECONDS_PER_DAY + np.floor(time_in_day).astype(np.int64), unit="s")
    order = np.argsort(event_time.asi8, kind="stable")
    df = pd.DataFrame(
        {
            schema.TRANSACTION_ID: np.arange(n, dtype=np.int64),
            schema.EVENT_TIME: event_time[order],
            schema.CUSTOMER_ID: cust[order],
            schema.TERMINAL_ID: terminal[order],
            schema.AMOUNT: amount[order],
            schema.CUSTOMER_SINCE: (start - pd.to_timedelta(tenure_days, unit="D"))[cust[order]],
            schema.LABEL: (scenario[order] > 0).astype(np.int8),
            "fraud_scenario": scenario[order],
        }
    )
    LOG.info(
        "simulated %d transactions, %d customers, %d terminals, %d days, fraud rate %.4f",
        n,
        n_c,
        n_t,
        n_d,
        float(df[schema.LABEL].mean()) if n else 0.0,
    )
    return df


def _inject_drift(
    drift: DriftConfig,
    rng: np.random.Generator,
    amount: np.ndarray,
    scenario: np.ndarray,
    drifted: np.ndarray,
    terminal: np.ndarray,
    time_in_day: np.ndarray,
    n_terminals: int,
) -> None:
    """Apply the drift options in place to the rows flagged ``drifted``."""
    if drift.amount_factor != 1.0:
        inflate = drifted & (scenario == 0)
        amount[inflate] = np.round(amount[inflate] * drift.amount_factor, 2)
    if drift.new_fraud_rate > 0:
        # A new pattern: small night-time payments at a set of newly compromised terminals (card testing).
        hot = rng.choice(n_terminals, size=max(1, n_terminals // 50), replace=False)
        candidates = drifted & (scenario == 0) & np.isin(terminal, hot)
        chosen = candidates & (rng.uniform(size=amount.size) < drift.new_fraud_rate * 50)
        amount[chosen] = np.round(rng.uniform(0.5, 3.0, size=int(chosen.sum())), 2)
        time_in_day[chosen] = rng.uniform(0, 5 * 3_600, size=int(chosen.sum()))
        scenario[chosen] = 4
