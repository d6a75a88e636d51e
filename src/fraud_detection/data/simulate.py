"""Seeded, vectorised transaction simulator after the Fraud Detection Handbook (Le Borgne et al.).

Customers and terminals sit on a 100x100 grid; each customer uses the terminals within a radius. Each customer has
a mean amount ~ U(5, 100) (sd = mean / 2) and a Poisson number of transactions a day with mean ~ U(0, 4); times of
day ~ N(12 h, 20000 s). Three fraud scenarios: (1) every amount over 220 is fraud; (2) each day a share of the
terminals (2 in 10,000) is compromised for 28 days and all their transactions are fraud; (3) each day a share of the
customers (3 in 5,000) have leaked credentials for 14 days and a third of their transactions get 5x the amount and
are fraud. The daily counts of (2) and (3) scale with the population, so from the default size (5,000 customers,
10,000 terminals) up the fraud rate does not depend on it; below it the handbook's fixed counts (2 terminals and 3
customers a day) are a floor, so small sets (tests) keep every scenario.

The simulation runs day by day (:func:`iter_days`): a day needs only the customer and terminal profiles and the
compromised sets still active, each day has its own random stream, so memory does not grow with the number of days.
:func:`simulate` concatenates the days in memory; :func:`write_partitions` writes each day as a Parquet partition
(``day=YYYY-MM-DD/part-0.parquet``) as it goes.

Optionally, drift is injected from a given day (amount inflation, a shifted hour profile, a new fraud pattern).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path

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
#: Marks a complete partitioned output (written last; readers skip names starting with ``_``).
SUCCESS_FILE = "_SUCCESS"
#: The file of each day partition.
PART_FILE = "part-0.parquet"
#: Customers per neighbour query (bounds the temporary Python lists of the radius search).
_NEIGHBOUR_CHUNK = 4_096


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
        terminal_compromise_rate: Scenario 2: share of the terminals compromised each day (the handbook's 2 a day
            at 10,000 terminals). The day's count is ``rate * n_terminals`` spread over the days, its fractional
            part carried to the next (0.5 a day: one terminal every other day).
        min_compromised_terminals_per_day: Floor of the day's scenario 2 count (the handbook's fixed count).
        terminal_compromise_days: How long a compromised terminal stays compromised.
        customer_compromise_rate: Scenario 3: share of the customers whose credentials leak each day (the
            handbook's 3 a day at 5,000 customers), counted like the terminals.
        min_compromised_customers_per_day: Floor of the day's scenario 3 count (the handbook's fixed count).
        customer_compromise_days: How long leaked credentials are used.
        drift: Optional drift injection.
    """

    n_customers: int = 5_000
    n_terminals: int = 10_000
    n_days: int = 183
    start_date: str = "2018-04-01"
    seed: int = 0
    radius: float = 5.0
    terminal_compromise_rate: float = 2 / 10_000
    min_compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    customer_compromise_rate: float = 3 / 5_000
    min_compromised_customers_per_day: int = 3
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
        for name in ("terminal_compromise_rate", "customer_compromise_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in (
            "terminal_compromise_days",
            "customer_compromise_days",
            "min_compromised_terminals_per_day",
            "min_compromised_customers_per_day",
        ):
            if not 0 <= getattr(self, name) <= MAX_DAYS:
                raise ValueError(f"{name} must be between 0 and {MAX_DAYS:,}, got {getattr(self, name)}")
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


@dataclass(frozen=True)
class SimulationSummary:
    """What a partitioned run wrote (also the content of its ``_SUCCESS`` file).

    Attributes:
        transactions: Rows written.
        frauds: Rows labelled fraud.
        days: Day partitions written.
    """

    transactions: int
    frauds: int
    days: int

    @property
    def fraud_rate(self) -> float:
        """Share of fraud among the rows (0 without rows)."""
        return self.frauds / self.transactions if self.transactions else 0.0


@dataclass(frozen=True)
class _Population:
    """What every day needs: the customer and terminal profiles (fixed for the whole run)."""

    mean_amount: np.ndarray
    std_amount: np.ndarray
    tx_per_day: np.ndarray
    since_ns: np.ndarray  # customer_since, epoch nanoseconds
    n_avail: np.ndarray  # terminals within the radius, per customer
    offsets: np.ndarray  # start of each customer's terminals in `terminals`
    terminals: np.ndarray  # flat (CSR) terminal ids, int32
    drift_terminals: np.ndarray  # drift's newly compromised terminals (empty without that drift)


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream per purpose (0: profiles, 1: day d, 2: drift), so days can run one by one."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _population(cfg: SimulationConfig) -> _Population:
    rng = _rng(cfg.seed, 0)
    n_c, n_t = cfg.n_customers, cfg.n_terminals
    cust_xy = rng.uniform(0, 100, size=(n_c, 2))
    mean_amount = rng.uniform(5, 100, size=n_c)
    tx_per_day = rng.uniform(0, 4, size=n_c)
    term_xy = rng.uniform(0, 100, size=(n_t, 2))
    tenure_days = rng.integers(30, 3_650, size=n_c)
    start_ns = pd.Timestamp(cfg.start_date, tz="UTC").value
    since_ns = start_ns - tenure_days.astype(np.int64) * SECONDS_PER_DAY * 10**9

    # Terminals within the radius of each customer, as a flat (CSR) int32 array, queried in chunks of customers.
    from scipy.spatial import cKDTree  # lazy: the CLI imports this module for its bounds

    tree = cKDTree(term_xy)
    n_avail = np.asarray(tree.query_ball_point(cust_xy, r=cfg.radius, return_length=True), dtype=np.int64)
    ends = np.cumsum(n_avail)
    offsets = ends - n_avail
    terminals = np.empty(int(ends[-1]) if n_c else 0, dtype=np.int32)
    for lo in range(0, n_c, _NEIGHBOUR_CHUNK):
        hi = min(lo + _NEIGHBOUR_CHUNK, n_c)
        found = tree.query_ball_point(cust_xy[lo:hi], r=cfg.radius, return_sorted=True)
        size = int(ends[hi - 1] - offsets[lo])
        terminals[offsets[lo] : ends[hi - 1]] = np.fromiter(chain.from_iterable(found), dtype=np.int32, count=size)

    drift = cfg.drift
    drift_terminals = np.empty(0, dtype=np.int64)
    if drift is not None and drift.new_fraud_rate > 0:
        drift_terminals = _rng(cfg.seed, 2).choice(n_t, size=max(1, n_t // 50), replace=False)
    return _Population(mean_amount, mean_amount / 2, tx_per_day, since_ns, n_avail, offsets, terminals, drift_terminals)


def daily_count(rate: float, population: int, day: int, minimum: int = 0) -> int:
    """How many of ``population`` are compromised on ``day``: ``rate * population`` a day, fractions carried.

    Args:
        rate: Share of the population compromised a day.
        population: Its size.
        day: 0-based day index.
        minimum: Floor of the count.

    Returns:
        ``floor((day + 1) * x) - floor(day * x)`` with ``x = rate * population`` (so the counts of days
        ``0..d`` sum to ``floor((d + 1) * x)``), at least ``minimum``, at most ``population``.
    """
    per_day = round(rate * population, 9)  # 2 / 10_000 * 10_000 is 2, not 1.9999999999999998
    return min(population, max(minimum, math.floor((day + 1) * per_day) - math.floor(day * per_day)))


def iter_days(config: SimulationConfig | None = None) -> Iterator[pd.DataFrame]:
    """Simulate one day at a time; memory holds the profiles and the active compromised sets, not past days.

    Args:
        config: Simulation parameters; defaults to the handbook's size.

    Yields:
        One frame per day (possibly empty), in order, with the columns of :func:`simulate`; transaction ids
        continue from day to day.
    """
    cfg = config or SimulationConfig()
    pop = _population(cfg)
    start_ns = pd.Timestamp(cfg.start_date, tz="UTC").value
    compromised_terminals: deque[np.ndarray] = deque(maxlen=cfg.terminal_compromise_days)
    compromised_customers: deque[np.ndarray] = deque(maxlen=cfg.customer_compromise_days)
    next_id = 0
    for day in range(cfg.n_days):
        rng = _rng(cfg.seed, 1, day)
        k_t = daily_count(cfg.terminal_compromise_rate, cfg.n_terminals, day, cfg.min_compromised_terminals_per_day)
        compromised_terminals.append(rng.choice(cfg.n_terminals, size=k_t, replace=False))
        k_c = daily_count(cfg.customer_compromise_rate, cfg.n_customers, day, cfg.min_compromised_customers_per_day)
        compromised_customers.append(rng.choice(cfg.n_customers, size=k_c, replace=False))
        frame = _simulate_day(
            cfg,
            pop,
            rng,
            day,
            start_ns + day * SECONDS_PER_DAY * 10**9,
            np.concatenate(tuple(compromised_terminals)) if compromised_terminals else np.empty(0, np.int64),
            np.concatenate(tuple(compromised_customers)) if compromised_customers else np.empty(0, np.int64),
            next_id,
        )
        next_id += len(frame)
        yield frame


def _simulate_day(
    cfg: SimulationConfig,
    pop: _Population,
    rng: np.random.Generator,
    day: int,
    day_start_ns: int,
    compromised_terminals: np.ndarray,
    compromised_customers: np.ndarray,
    first_id: int,
) -> pd.DataFrame:
    """One day's transactions, sorted by time, ids from ``first_id``."""
    counts = rng.poisson(pop.tx_per_day)
    counts[pop.n_avail == 0] = 0
    cust = np.repeat(np.arange(cfg.n_customers), counts)

    drift = cfg.drift
    drifted = drift is not None and day >= drift.start_day
    mean_time = SECONDS_PER_DAY / 2
    if drift is not None and drifted:
        mean_time += drift.hour_shift_hours * 3_600
    time_in_day = rng.normal(mean_time, 20_000, size=cust.size)
    keep = (time_in_day > 0) & (time_in_day < SECONDS_PER_DAY)
    cust, time_in_day = cust[keep], time_in_day[keep]
    n = cust.size

    amount = rng.normal(pop.mean_amount[cust], pop.std_amount[cust])
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * pop.mean_amount[cust[negative]])
    amount = np.round(amount, 2)
    pick = np.floor(rng.uniform(size=n) * pop.n_avail[cust]).astype(np.int64)
    terminal = pop.terminals[pop.offsets[cust] + pick].astype(np.int64)

    scenario = np.zeros(n, dtype=np.int8)
    # Scenario 1: amounts over 220.
    scenario[amount > 220] = 1
    # Scenario 2: compromised terminals, all their transactions while compromised.
    scenario[(scenario == 0) & np.isin(terminal, compromised_terminals)] = 2
    # Scenario 3: leaked credentials; a third of the customer's transactions get 5x the amount.
    leaked = np.isin(cust, compromised_customers) & (rng.uniform(size=n) < 1 / 3)
    amount[leaked] = np.round(amount[leaked] * 5, 2)
    scenario[leaked & (scenario == 0)] = 3

    if drift is not None and drifted:
        _inject_drift(drift, rng, amount, scenario, terminal, time_in_day, pop.drift_terminals)

    order = np.argsort(time_in_day, kind="stable")
    event_ns = day_start_ns + np.floor(time_in_day[order]).astype(np.int64) * 10**9
    cust = cust[order]
    scenario = scenario[order]
    return pd.DataFrame(
        {
            schema.TRANSACTION_ID: np.arange(first_id, first_id + n, dtype=np.int64),
            schema.EVENT_TIME: _utc(event_ns),
            schema.CUSTOMER_ID: cust,
            schema.TERMINAL_ID: terminal[order],
            schema.AMOUNT: amount[order],
            schema.CUSTOMER_SINCE: _utc(pop.since_ns[cust]),
            schema.LABEL: (scenario > 0).astype(np.int8),
            "fraud_scenario": scenario,
        }
    )


def _utc(ns: np.ndarray) -> pd.DatetimeIndex:
    """Epoch nanoseconds as UTC timestamps (without the slow generic parser)."""
    return pd.DatetimeIndex(ns.astype("datetime64[ns]")).tz_localize("UTC")


def simulate(config: SimulationConfig | None = None) -> pd.DataFrame:
    """Generate a labelled transaction frame satisfying :mod:`fraud_detection.data.schema`, in memory.

    The same days as :func:`write_partitions` writes, concatenated: use that one for large runs.

    Args:
        config: Simulation parameters; defaults to the handbook's size.

    Returns:
        Transactions sorted by event time with ``transaction_id``, ``event_time``, ``customer_id``, ``terminal_id``,
        ``amount``, ``customer_since``, ``is_fraud`` and ``fraud_scenario`` (0 legitimate, 1-3 handbook scenarios,
        4 injected drift pattern).
    """
    cfg = config or SimulationConfig()
    df = pd.concat(list(iter_days(cfg)), ignore_index=True)
    LOG.info(
        "simulated %d transactions, %d customers, %d terminals, %d days, fraud rate %.4f",
        len(df),
        cfg.n_customers,
        cfg.n_terminals,
        cfg.n_days,
        float(df[schema.LABEL].mean()) if len(df) else 0.0,
    )
    return df


def check_partition_output(output: Path) -> None:
    """Refuse, before any work, a partitioned output that would overwrite something else.

    Accepted: a path that does not exist, an empty directory, or the complete output of an earlier run (it holds
    ``_SUCCESS``; it is replaced as a whole once the new run is complete).

    Args:
        output: The output directory.

    Raises:
        ValueError: ``output`` is a file, or a directory holding files not written by a complete run.
    """
    if not output.exists():
        return
    if not output.is_dir():
        raise ValueError(f"--output {output}: is a file, give a directory (or a .parquet/.csv file name)")
    if any(output.iterdir()) and not (output / SUCCESS_FILE).is_file():
        raise ValueError(
            f"--output {output}: the directory is not empty and holds no {SUCCESS_FILE} of a complete simulation; "
            "give a new or empty directory"
        )


def write_partitions(
    config: SimulationConfig,
    output: str | Path,
    on_day: Callable[[int, int], None] | None = None,
) -> SimulationSummary:
    """Simulate day by day and write each day as ``<output>/day=YYYY-MM-DD/part-0.parquet`` as it goes.

    Memory holds one day at a time. Nothing partial is ever at ``output``: the days go to a hidden sibling
    directory (``.<name>.partial-<hex>``, removed on failure), ``_SUCCESS`` (the summary, as JSON) is written last,
    and the directory is then renamed onto ``output`` (replacing an earlier complete run). The rows, concatenated
    in path order, equal :func:`simulate` for the same config; :func:`schema.read_transactions` reads the directory.

    Args:
        config: Simulation parameters.
        output: The output directory (see :func:`check_partition_output`).
        on_day: Called after each day is written with (day index, rows of the day).

    Returns:
        The summary of what was written.

    Raises:
        ValueError: The output cannot be used (see :func:`check_partition_output`).
        OSError: Writing failed (nothing is left behind).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = Path(output)
    check_partition_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.partial-{uuid.uuid4().hex}")
    old = output.with_name(f".{output.name}.old-{uuid.uuid4().hex}")
    rows = frauds = 0
    start = pd.Timestamp(config.start_date)
    try:
        tmp.mkdir()
        for index, frame in enumerate(iter_days(config)):
            part = tmp / f"day={start + pd.Timedelta(days=index):%Y-%m-%d}"
            part.mkdir()
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), part / PART_FILE)
            rows += len(frame)
            frauds += int(frame[schema.LABEL].sum())
            if on_day is not None:
                on_day(index, len(frame))
        summary = SimulationSummary(rows, frauds, config.n_days)
        (tmp / SUCCESS_FILE).write_text(
            json.dumps({**asdict(summary), "fraud_rate": summary.fraud_rate, "config": asdict(config)}, indent=2)
        )
        check_partition_output(output)  # still nothing else there
        if output.exists():
            output.rename(old)
        try:
            tmp.rename(output)
        except BaseException:
            if old.exists():
                old.rename(output)  # the earlier complete run stays
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    LOG.info(
        "simulated %d transactions over %d days into %s, fraud rate %.4f",
        rows,
        config.n_days,
        output,
        summary.fraud_rate,
    )
    return summary


def _inject_drift(
    drift: DriftConfig,
    rng: np.random.Generator,
    amount: np.ndarray,
    scenario: np.ndarray,
    terminal: np.ndarray,
    time_in_day: np.ndarray,
    hot_terminals: np.ndarray,
) -> None:
    """Apply the drift options in place to a drifted day's rows."""
    if drift.amount_factor != 1.0:
        inflate = scenario == 0
        amount[inflate] = np.round(amount[inflate] * drift.amount_factor, 2)
    if drift.new_fraud_rate > 0:
        # A new pattern: small night-time payments at a set of newly compromised terminals (card testing).
        candidates = (scenario == 0) & np.isin(terminal, hot_terminals)
        chosen = candidates & (rng.uniform(size=amount.size) < drift.new_fraud_rate * 50)
        amount[chosen] = np.round(rng.uniform(0.5, 3.0, size=int(chosen.sum())), 2)
        time_in_day[chosen] = rng.uniform(0, 5 * 3_600, size=int(chosen.sum()))
        scenario[chosen] = 4
