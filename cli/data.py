"""``fraud simulate`` and ``fraud features``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from cli.common import ColumnMapOpt, guarded, step
from fraud_detection.data import schema
from fraud_detection.data.simulate import (
    FIRST_DATE,
    LAST_DATE,
    MAX_AMOUNT_FACTOR,
    MAX_CUSTOMERS,
    MAX_DAYS,
    MAX_HOUR_SHIFT,
    MAX_SEED,
    MAX_TERMINALS,
)

LOG = logging.getLogger("fraud")


def simulate(
    output: Annotated[Path, typer.Option(help="Output file (.parquet or .csv).")] = Path("data/transactions.parquet"),
    customers: Annotated[int, typer.Option(min=1, max=MAX_CUSTOMERS, help="Number of customers.")] = 5_000,
    terminals: Annotated[int, typer.Option(min=1, max=MAX_TERMINALS, help="Number of terminals.")] = 10_000,
    days: Annotated[int, typer.Option(min=1, max=MAX_DAYS, help="Number of days.")] = 183,
    start: Annotated[str, typer.Option(help=f"First day (YYYY-MM-DD, {FIRST_DATE}..{LAST_DATE}).")] = "2018-04-01",
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Random seed.")] = 0,
    drift_start_day: Annotated[
        int | None, typer.Option(min=0, max=MAX_DAYS - 1, help="Inject drift from this day index (below --days).")
    ] = None,
    drift_amount_factor: Annotated[
        float, typer.Option(min=0.01, max=MAX_AMOUNT_FACTOR, help="Amount inflation under drift.")
    ] = 1.5,
    drift_hour_shift: Annotated[
        float, typer.Option(min=-MAX_HOUR_SHIFT, max=MAX_HOUR_SHIFT, help="Hour-of-day shift under drift.")
    ] = 4.0,
    drift_new_fraud_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Rate of a new fraud pattern under drift.")
    ] = 0.002,
) -> None:
    """Generate labelled transactions (Fraud Detection Handbook design)."""
    from fraud_detection.data.simulate import DriftConfig, SimulationConfig
    from fraud_detection.data.simulate import simulate as run_simulation

    def body() -> None:
        try:
            pd.Timestamp(start)
        except ValueError as exc:
            raise ValueError(f"--start {start!r} is not a date (expected YYYY-MM-DD)") from exc
        check_output(output, (".parquet", ".csv"))
        drift = (
            DriftConfig(drift_start_day, drift_amount_factor, drift_hour_shift, drift_new_fraud_rate)
            if drift_start_day is not None
            else None
        )
        cfg = SimulationConfig(customers, terminals, days, start, seed, drift=drift)
        with step(f"simulating {customers:,} customers, {terminals:,} terminals, {days} days"):
            df = run_simulation(cfg)
        schema.write_frame(df, output)
        LOG.info("wrote %d transactions (fraud rate %.4f) to %s", len(df), df[schema.LABEL].mean(), output)

    guarded(body)


def features(
    data: Annotated[Path, typer.Option(help="Raw transactions (.csv or .parquet).")],
    output: Annotated[Path, typer.Option(help="Feature file (.parquet).")] = Path("data/features.parquet"),
    column_map: ColumnMapOpt = None,
    label_delay_days: Annotated[int, typer.Option(min=0, help="Label delay for terminal risk features.")] = 7,
) -> None:
    """Build point-in-time features from raw transactions."""
    from fraud_detection.features.offline import FeatureConfig, build_features

    def body() -> None:
        check_output(output, (".parquet",))
        with step(f"reading {data}"):
            raw = schema.read_transactions(data, schema.parse_column_map(column_map))
        with step(f"building features for {len(raw):,} transactions"):
            frame = build_features(raw, FeatureConfig(label_delay_days=label_delay_days))
        schema.write_frame(frame, output)
        LOG.info("wrote %d feature rows to %s", len(frame), output)

    guarded(body)


def check_output(output: Path, suffixes: tuple[str, ...]) -> None:
    """Refuse an output file name whose suffix is not one written (before any work is done).

    Args:
        output: The ``--output`` path.
        suffixes: Accepted suffixes.

    Raises:
        ValueError: An unknown suffix, or a directory.
    """
    if output.suffix not in suffixes:
        raise ValueError(
            f"--output {output}: unknown suffix {output.suffix or '(none)'!r}, use {' or '.join(suffixes)}"
        )
    if output.is_dir():
        raise ValueError(f"--output {output}: is a directory, give a file name")


def register(app: typer.Typer) -> None:
    """Add ``fraud simulate`` and ``fraud features``.

    Args:
        app: The ``fraud`` command.
    """
    app.command()(simulate)
    app.command()(features)
