"""``fraud simulate`` and ``fraud features``."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from fraud_detection.store.base import ArtifactStore

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
    data: Annotated[
        str,
        typer.Option(
            help="Raw transactions: .csv or .parquet file, a directory of them, or s3://bucket/key-or-prefix (copied "
            "to a temporary directory through the store: FRAUD_S3_ENDPOINT and the AWS keys)."
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            help="Feature file (.parquet), or with --engine spark a directory of day partitions; an s3:// prefix "
            "gets them uploaded, _SUCCESS last (not atomic: docs/FEATURES.md)."
        ),
    ] = "data/features.parquet",
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
    from fraud_detection.store import staging

    def body() -> None:
        if engine not in engines.ENGINES:
            raise ValueError(f"--engine {engine!r}: use one of {', '.join(engines.ENGINES)}")
        if engine == "spark":
            engines.require_spark()  # before any copy
        # Everything about the output that can be refused is refused before any copy or computation.
        remote_out = _remote_output(output, engine)
        if remote_out is None and engine != "auto":
            _check_local_output(Path(output), engine)
        elif remote_out is not None and engine == "spark":
            staging.check_publishable(*remote_out)
        with tempfile.TemporaryDirectory(prefix="fraud-features-") as tmp:
            source = _local_input(data, Path(tmp)) if staging.is_remote(data) else Path(data)
            chosen = engines.choose_engine(engine, source, auto_share)
            if remote_out is None:
                _build_locally(source, Path(output), chosen, column_map, label_delay_days, spark_master)
                return
            store, prefix = remote_out
            if chosen == "spark":
                staging.check_publishable(store, prefix)
            elif not prefix.rstrip("/").endswith(".parquet"):
                raise ValueError(f"--output {output}: unknown suffix, use .parquet (or --engine spark for a prefix)")
            local = Path(tmp) / ("features" if chosen == "spark" else "features.parquet")
            _build_locally(source, local, chosen, column_map, label_delay_days, spark_master)
            if chosen == "spark":
                written = staging.publish_dir(store, local, prefix)
                LOG.info("uploaded %d files to %s (%s last)", written, store.uri(prefix), staging.MARKER)
            else:
                staging.stage_file(store, local, prefix.rstrip("/"))

    guarded(body, also=(engines.SparkUnavailableError, engines.SparkJobError))


def _store_of(location: str) -> tuple[ArtifactStore, str]:
    """The configured store holding ``location`` (an s3:// or az:// URI) and the key under its root."""
    from cli.common import settings_for
    from fraud_detection.store import staging
    from fraud_detection.store.uri import open_configured_store

    root, key = staging.split_location(location)
    return open_configured_store(settings_for(), root), key


def _local_input(data: str, tmp: Path) -> Path:
    """Copy ``--data`` (an object or a prefix in the store) into ``tmp`` and return the local copy."""
    from fraud_detection.store import staging

    store, key = _store_of(data)
    with step(f"copying {data} to a temporary directory"):
        try:
            return staging.stage_in(store, key, tmp)
        except KeyError as exc:
            raise ValueError(f"--data {data}: {exc.args[0] if exc.args else 'no such object or prefix'}") from exc


def _remote_output(output: str, engine: str) -> tuple[ArtifactStore, str] | None:
    """The store and destination key (a prefix with the Spark engine) of an s3:// or az:// ``--output``, or None."""
    from fraud_detection.store import staging

    if not staging.is_remote(output):
        return None
    store, key = _store_of(output)
    if not key.strip("/"):
        raise ValueError(f"--output {output}: give a key or prefix under the bucket, not the bucket itself")
    if engine == "memory" and not key.endswith(".parquet"):
        raise ValueError(f"--output {output}: unknown suffix, use .parquet (or --engine spark for a prefix)")
    return store, key.rstrip("/") + "/" if engine != "memory" else key


def _check_local_output(output: Path, engine: str) -> None:
    """Refuse a local ``--output`` the chosen engine cannot write (before any work)."""
    from fraud_detection.features import engine as engines

    if engine == "spark":
        engines.check_spark_output(output)
        check_writable_dir(output.parent, f"--output {output}")
    else:
        check_output(output, (".parquet",))


def _build_locally(
    source: Path, output: Path, engine: str, column_map: list[str] | None, label_delay_days: int, master: str
) -> None:
    """Build the features of a local input into a local output with the chosen engine (``memory`` or ``spark``)."""
    from fraud_detection.features import engine as engines
    from fraud_detection.features.offline import FeatureConfig, build_features

    config = FeatureConfig(label_delay_days=label_delay_days)
    _check_local_output(output, engine)
    if engine == "spark":
        engines.require_spark()
        from fraud_detection.features.spark import run_spark_features

        with step(f"building features on Spark ({master}) from {source}"):
            run_spark_features(source, output, schema.parse_column_map(column_map), config, master=master)
        return
    with step(f"reading {source}"):
        raw = schema.read_transactions(source, schema.parse_column_map(column_map))
    with step(f"building features for {len(raw):,} transactions"):
        frame = build_features(raw, config)
    schema.write_frame(frame, output)
    LOG.info("wrote %d feature rows to %s", len(frame), output)


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
