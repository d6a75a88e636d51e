"""``fraud simulate`` and ``fraud features``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from cli.common import ColumnMapOpt, check_writable_dir, guarded, step
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
    SimulationConfig,
)

LOG = logging.getLogger("fraud")


def simulate(
    output: Annotated[
        Path,
        typer.Option(
            help="Output: a .parquet or .csv file (built in memory), or a directory (no suffix) that gets one Parquet "
            "partition per day, day=YYYY-MM-DD/part-0.parquet, written as it goes (bounded memory; _SUCCESS last)."
        ),
    ] = Path("data/transactions.parquet"),
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
    from fraud_detection.data.simulate import DriftConfig, check_partition_output
    from fraud_detection.data.simulate import simulate as run_simulation

    def body() -> None:
        try:
            pd.Timestamp(start)
        except ValueError as exc:
            raise ValueError(f"--start {start!r} is not a date (expected YYYY-MM-DD)") from exc
        partitioned = output.suffix == "" or output.is_dir()
        if partitioned:
            check_partition_output(output)
            check_writable_dir(output.parent, f"--output {output}")
        else:
            check_output(output, (".parquet", ".csv"))
        drift = (
            DriftConfig(drift_start_day, drift_amount_factor, drift_hour_shift, drift_new_fraud_rate)
            if drift_start_day is not None
            else None
        )
        cfg = SimulationConfig(customers, terminals, days, start, seed, drift=drift)
        if partitioned:
            _simulate_partitions(cfg, output)
            return
        with step(f"simulating {customers:,} customers, {terminals:,} terminals, {days} days"):
            df = run_simulation(cfg)
        schema.write_frame(df, output)
        LOG.info("wrote %d transactions (fraud rate %.4f) to %s", len(df), df[schema.LABEL].mean(), output)

    guarded(body)


def _simulate_partitions(cfg: SimulationConfig, output: Path) -> None:
    """Stream the simulation into day partitions under ``output``, with a progress bar over the days."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from cli.common import err_console
    from fraud_detection.data.simulate import write_partitions

    rows = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("days, {task.fields[rows]:,} tx"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    ) as progress:
        task = progress.add_task("simulating", total=cfg.n_days, rows=0)

        def on_day(_day: int, day_rows: int) -> None:
            nonlocal rows
            rows += day_rows
            progress.update(task, advance=1, rows=rows)

        summary = write_partitions(cfg, output, on_day=on_day)
    LOG.info(
        "wrote %d transactions (fraud rate %.4f) to %s, one partition per day",
        summary.transactions,
        summary.fraud_rate,
        output,
    )


def features(
    data: Annotated[Path, typer.Option(help="Raw transactions (.csv or .parquet).")],
    output: Annotated[Path, typer.Option(help="Feature file (.parquet).")] = Path("data/features.parquet"),
    column_map: ColumnMapOpt = None,
    label_delay_days: Annotated[int, typer.Option(min=0, help="Label delay for terminal risk features.")] = 7,
    engine: Annotated[
        str,
        typer.Option(
            help="memory (numpy, one machine), spark (local Spark; --output becomes a directory of day=YYYY-MM-DD "
            "Parquet partitions) or auto (spark when the in-memory run would need more than --auto-share of RAM)."
        ),
    ] = "memory",
    auto_share: Annotated[
        float, typer.Option(min=0.001, max=1.0, envvar="FRAUD_SPARK_AUTO_SHARE", help="RAM share for --engine auto.")
    ] = 0.25,
    spark_master: Annotated[str, typer.Option(help="Spark master for --engine spark.")] = "local[*]",
) -> None:
    """Build point-in-time features from raw transactions (in memory, or on Spark: docs/FEATURES.md, "On Spark")."""
    from fraud_detection.features import engine as engines
    from fraud_detection.features.offline import FeatureConfig, build_features

    def body() -> None:
        if engines.choose_engine(engine, data, auto_share) == "spark":
            engines.check_spark_output(output)
            check_writable_dir(output.parent, f"--output {output}")
            engines.require_spark()
            from fraud_detection.features.spark import run_spark_features

            config = FeatureConfig(label_delay_days=label_delay_days)
            with step(f"building features on Spark ({spark_master}) from {data}"):
                run_spark_features(data, output, schema.parse_column_map(column_map), config, master=spark_master)
            return
        check_output(output, (".parquet",))
        with step(f"reading {data}"):
            raw = schema.read_transactions(data, schema.parse_column_map(column_map))
        with step(f"building features for {len(raw):,} transactions"):
            frame = build_features(raw, FeatureConfig(label_delay_days=label_delay_days))
        schema.write_frame(frame, output)
        LOG.info("wrote %d feature rows to %s", len(frame), output)

    guarded(body, also=(engines.SparkUnavailableError, engines.SparkJobError))


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
    check_writable_dir(output.parent, f"--output {output}")


def register(app: typer.Typer) -> None:
    """Add ``fraud simulate`` and ``fraud features``.

    Args:
        app: The ``fraud`` command.
    """
    app.command()(simulate)
    app.command()(features)
