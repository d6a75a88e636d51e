"""The ``fraud`` command: a thin adapter from flags and files to :mod:`fraud_detection`."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pandas as pd
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fraud_detection import cli_monitoring, cli_pipeline, cli_rollout, schema
from fraud_detection.bundle import BundleIntegrityError
from fraud_detection.registry import RegistryError
from fraud_detection.settings import Settings
from fraud_detection.store import StoreError

LOG = logging.getLogger("fraud")
console = Console()
err_console = Console(stderr=True)
app = typer.Typer(
    name="fraud",
    help="Real-time payment fraud detection: simulate, train, evaluate, serve, monitor.",
    no_args_is_help=True,
)
models_app = typer.Typer(help="Model versions and aliases in the store.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(
    cli_pipeline.app, name="pipeline", help="Kubeflow training pipeline: compile, run locally, submit, schedule."
)
app.add_typer(cli_rollout.app, name="rollout", help="Canary rollout with Prometheus-gated promotion or rollback.")
# `fraud drift` and `fraud labels` are registered from cli_monitoring.
T = TypeVar("T")

EXPECTED_ERRORS = (
    schema.SchemaError,
    StoreError,
    RegistryError,
    BundleIntegrityError,
    ValueError,
    FileExistsError,
)

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Store: a directory or s3://bucket/prefix (default FRAUD_STORE_URI)."),
]
ColumnMapOpt = Annotated[
    list[str] | None, typer.Option("--column-map", help="Rename a source column: SRC=DST (repeatable).")
]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    """Configure logging for every command."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def guarded(fn: Callable[[], T], also: tuple[type[Exception], ...] = ()) -> T:
    """Run a command body; turn an expected error into a clear message and exit code 2.

    Args:
        fn: The command body.
        also: Further exception types a command group expects (e.g. a failed pipeline step).

    Returns:
        Its result.
    """
    expected: tuple[type[Exception], ...] = (*EXPECTED_ERRORS, *also)
    try:
        return fn()
    except expected as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc


@contextmanager
def step(description: str) -> Iterator[None]:
    """Show a spinner with elapsed time while a long step runs.

    Args:
        description: What is running.
    """
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=1)
        yield
        progress.update(task, completed=1, description=f"[green]✓[/] {description}")


def _settings(store: str | None = None) -> Settings:
    settings = Settings()
    return settings.model_copy(update={"store_uri": store}) if store else settings


def _load_features(data: Path, column_map: list[str] | None, label_delay_days: int) -> pd.DataFrame:
    """Read a features file as is, or raw transactions and build their features."""
    from fraud_detection.features import FeatureConfig, build_features

    if data.suffix == ".parquet" and data.is_file():
        import pyarrow.parquet as pq

        columns = set(pq.read_schema(data).names)
        if set(schema.FEATURES) <= columns:
            frame = pd.read_parquet(data)
            schema.validate_feature_frame(frame)
            return frame
    with step(f"reading {data}"):
        raw = schema.read_transactions(data, schema.parse_column_map(column_map), require_label=True)
    with step(f"building features for {len(raw):,} transactions"):
        return build_features(raw, FeatureConfig(label_delay_days=label_delay_days))


@app.command()
def simulate(
    output: Annotated[Path, typer.Option(help="Output file (.parquet or .csv).")] = Path("data/transactions.parquet"),
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 5_000,
    terminals: Annotated[int, typer.Option(min=1, help="Number of terminals.")] = 10_000,
    days: Annotated[int, typer.Option(min=1, help="Number of days.")] = 183,
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD).")] = "2018-04-01",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    drift_start_day: Annotated[int | None, typer.Option(help="Inject drift from this day index.")] = None,
    drift_amount_factor: Annotated[float, typer.Option(help="Amount inflation under drift.")] = 1.5,
    drift_hour_shift: Annotated[float, typer.Option(help="Hour-of-day shift under drift.")] = 4.0,
    drift_new_fraud_rate: Annotated[float, typer.Option(help="Rate of a new fraud pattern under drift.")] = 0.002,
) -> None:
    """Generate labelled transactions (Fraud Detection Handbook design)."""
    from fraud_detection.simulate import DriftConfig, SimulationConfig
    from fraud_detection.simulate import simulate as run_simulation

    def body() -> None:
        try:
            pd.Timestamp(start)
        except ValueError as exc:
            raise ValueError(f"--start {start!r} is not a date (expected YYYY-MM-DD)") from exc
        if output.suffix not in (".parquet", ".csv"):
            raise ValueError(f"--output {output}: use a .parquet or .csv file name")
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


@app.command()
def features(
    data: Annotated[Path, typer.Option(help="Raw transactions (.csv or .parquet).")],
    output: Annotated[Path, typer.Option(help="Feature file (.parquet).")] = Path("data/features.parquet"),
    column_map: ColumnMapOpt = None,
    label_delay_days: Annotated[int, typer.Option(min=0, help="Label delay for terminal risk features.")] = 7,
) -> None:
    """Build point-in-time features from raw transactions."""
    from fraud_detection.features import FeatureConfig, build_features

    def body() -> None:
        with step(f"reading {data}"):
            raw = schema.read_transactions(data, schema.parse_column_map(column_map))
        with step(f"building features for {len(raw):,} transactions"):
            frame = build_features(raw, FeatureConfig(label_delay_days=label_delay_days))
        schema.write_frame(frame, output)
        LOG.info("wrote %d feature rows to %s", len(frame), output)

    guarded(body)


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Option(help="Raw transactions or a features file.")],
    output: Annotated[Path | None, typer.Option(help="Write the bundle here instead of registering it.")] = None,
    model: Annotated[str, typer.Option(help="hgb, logreg or rf.")] = "hgb",
    column_map: ColumnMapOpt = None,
    store: StoreOpt = None,
    test_days: Annotated[int, typer.Option(min=1, help="Held-out test days.")] = 14,
    delay_days: Annotated[int, typer.Option(min=0, help="Label delay between training and test.")] = 7,
    train_days: Annotated[int, typer.Option(min=2, help="Most recent days of training data.")] = 28,
    review_cost: Annotated[float | None, typer.Option(min=0, help="Cost of a false alert.")] = None,
    min_ap_gain: Annotated[float, typer.Option(help="AP gain needed over production to register.")] = 0.0,
    max_cp_loss: Annotated[float, typer.Option(help="CP@100 loss tolerated against production.")] = 0.0,
    report_dir: Annotated[Path | None, typer.Option(help="Write ROC/PR curves here.")] = None,
    max_iter: Annotated[int, typer.Option(min=1, help="Boosting iterations (hgb).")] = 300,
) -> None:
    """Train, evaluate on held-out days and write a bundle (or register it in the store behind the gate)."""

    def body() -> None:
        settings = _settings(store)
        frame = _load_features(data, column_map, delay_days)
        _train_and_maybe_register(
            settings,
            frame,
            output=output,
            model=model,
            test_days=test_days,
            delay_days=delay_days,
            train_days=train_days,
            review_cost=settings.review_cost if review_cost is None else review_cost,
            min_ap_gain=min_ap_gain,
            max_cp_loss=max_cp_loss,
            report_dir=report_dir,
            source=str(data),
            max_iter=max_iter,
        )

    guarded(body)


def _train_and_maybe_register(
    settings: Settings,
    frame: pd.DataFrame,
    *,
    output: Path | None,
    model: str,
    test_days: int,
    delay_days: int,
    review_cost: float,
    train_days: int = 28,
    min_ap_gain: float,
    max_cp_loss: float,
    report_dir: Path | None,
    source: str,
    max_iter: int = 300,
) -> None:
    from fraud_detection.train import TrainConfig
    from fraud_detection.workflow import gate_and_register, train_bundle

    config = TrainConfig(model_type=model, review_cost=review_cost, max_iter=max_iter)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = output or Path(tmp) / "bundle"
        with step(f"training {model} on {len(frame):,} rows"):
            meta, split = train_bundle(
                frame,
                bundle_dir,
                config=config,
                model_name=settings.model_name,
                test_days=test_days,
                delay_days=delay_days,
                train_days=train_days,
                source=source,
                report_dir=report_dir,
            )
        _metrics_table(f"{meta['model_type']} {meta['version']} on the held-out window", meta["metrics"])
        if output is not None:
            LOG.info("bundle written to %s", output)
            return
        registry = settings.open_registry()
        with step("gating against production and registering"):
            result = gate_and_register(
                registry,
                bundle_dir,
                split.test,
                min_ap_gain=min_ap_gain,
                max_cp_loss=max_cp_loss,
                cache_dir=Path(settings.cache_dir),
            )
        if result.registered:
            LOG.info("registered %s as production in %s", result.version, registry.store.uri())
        else:
            LOG.info("not registered: production stays %s", result.production_version)


def _metrics_table(title: str, metrics: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command("evaluate")
def evaluate_cmd(
    data: Annotated[Path, typer.Option(help="Labelled raw transactions or features.")],
    bundle: Annotated[Path | None, typer.Option(help="Bundle directory.")] = None,
    model_ref: Annotated[str, typer.Option("--model", help="Version or alias in the store.")] = "production",
    store: StoreOpt = None,
    column_map: ColumnMapOpt = None,
    plots: Annotated[Path | None, typer.Option(help="Write ROC and PR curves (PNG) here.")] = None,
    output_json: Annotated[Path | None, typer.Option(help="Write the metrics as JSON.")] = None,
) -> None:
    """Evaluate a bundle (or a stored version/alias) on labelled data."""
    from fraud_detection.evaluate import compute_metrics, plot_curves
    from fraud_detection.workflow import write_json

    def body() -> None:
        settings = _settings(store)
        if bundle is not None:
            from fraud_detection.bundle import load_bundle

            loaded = load_bundle(bundle)
        else:
            loaded = settings.open_registry().load(model_ref, Path(settings.cache_dir))
        frame = _load_features(data, column_map, loaded.metadata.training.label_delay_days)
        from fraud_detection.train import score

        with step(f"scoring {len(frame):,} rows"):
            scores = score(loaded.model, frame)
        metrics = compute_metrics(frame, scores, loaded.metadata.threshold, loaded.metadata.review_cost)
        _metrics_table(f"{loaded.metadata.version} on {data}", metrics.as_dict())
        if plots is not None:
            paths = plot_curves(frame[schema.LABEL].to_numpy(), scores, plots, title=loaded.metadata.version)
            LOG.info("curves: %s", ", ".join(map(str, paths.values())))
        if output_json is not None:
            write_json(output_json, metrics.as_dict())

    guarded(body)


@app.command("backtest")
def backtest_cmd(
    data: Annotated[Path, typer.Option(help="Labelled raw transactions or features.")],
    column_map: ColumnMapOpt = None,
    model: Annotated[list[str] | None, typer.Option(help="hgb, logreg or rf (repeatable).")] = None,
    train_days: Annotated[int, typer.Option(min=1)] = 7,
    delay_days: Annotated[int, typer.Option(min=0)] = 7,
    test_days: Annotated[int, typer.Option(min=1)] = 7,
    folds: Annotated[int, typer.Option(min=1)] = 4,
    start: Annotated[str, typer.Option(help="First training day of the first fold.")] = "2018-07-25",
    step_days: Annotated[int, typer.Option(min=1)] = 7,
    review_cost: Annotated[float, typer.Option(min=0)] = 10.0,
    output_json: Annotated[Path | None, typer.Option(help="Write per-fold and mean/std metrics as JSON.")] = None,
) -> None:
    """Prequential backtest (train, delay, test windows over rolling folds)."""
    from fraud_detection.evaluate import backtest, summarise
    from fraud_detection.train import MODEL_TYPES, TrainConfig, fit_and_score_fn
    from fraud_detection.workflow import write_json

    def body() -> None:
        models = model or ["hgb"]
        unknown = [m for m in models if m not in MODEL_TYPES]
        if unknown:
            raise ValueError(f"--model {unknown[0]!r}: choose from {', '.join(MODEL_TYPES)}")
        frame = _load_features(data, column_map, delay_days)
        results = []
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=err_console,
        ) as progress:
            for name in models:
                task = progress.add_task(f"backtest {name}", total=folds)
                results.append(
                    backtest(
                        frame,
                        fit_and_score_fn(TrainConfig(model_type=name, review_cost=review_cost)),  # type: ignore[arg-type]
                        model_type=name,
                        start=start,
                        train_days=train_days,
                        delay_days=delay_days,
                        test_days=test_days,
                        folds=folds,
                        step_days=step_days,
                        review_cost=review_cost,
                        progress=_advance(progress, task),
                    )
                )
        table = Table(
            title=f"prequential backtest: {folds} folds from {start}, {train_days}/{delay_days}/{test_days} days"
        )
        summary = summarise(results)
        table.add_column("model")
        for col in summary.columns:
            table.add_column(str(col), justify="right")
        for model_name, row in summary.iterrows():
            table.add_row(str(model_name), *row.tolist())
        console.print(table)
        if output_json is not None:
            payload = results[0].as_dict() if len(results) == 1 else {r.model_type: r.as_dict() for r in results}
            write_json(output_json, payload)
            LOG.info("wrote %s", output_json)

    guarded(body)


def _advance(progress: Progress, task: Any) -> Callable[[int], None]:
    def advance(_fold: int) -> None:
        progress.advance(task)

    return advance


@models_app.command("list")
def models_list(store: StoreOpt = None) -> None:
    """List versions and aliases."""

    def body() -> None:
        settings = _settings(store)
        registry = settings.open_registry()
        aliases = {a: (registry.get_alias(a) or {}).get("version") for a in ("production", "canary")}
        table = Table(title=f"{settings.model_name} in {registry.store.uri()}")
        for col in ("version", "model", "aliases", "AP", "CP@100", "threshold"):
            table.add_column(col)
        for version in registry.versions():
            meta = registry.metadata(version)
            tags = ",".join(a for a, v in aliases.items() if v == version)
            table.add_row(
                version,
                meta.model_type,
                tags,
                f"{meta.metrics.get('average_precision', float('nan')):.4f}",
                f"{meta.metrics.get('card_precision_at_100', float('nan')):.4f}",
                f"{meta.threshold:.4f}",
            )
        console.print(table)

    guarded(body)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="Version or alias.")] = "production", store: StoreOpt = None
) -> None:
    """Show a version's metadata as JSON."""

    def body() -> None:
        settings = _settings(store)
        meta = settings.open_registry().metadata(ref)
        console.print_json(meta.model_dump_json())

    guarded(body)


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Version to point the alias at.")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "production",
    store: StoreOpt = None,
) -> None:
    """Point an alias (production, canary) at a version."""

    def body() -> None:
        settings = _settings(store)
        record = settings.open_registry().set_alias(alias, version)
        console.print_json(json.dumps(record))

    guarded(body)


@app.command()
def demo(
    store: StoreOpt = None,
    work_dir: Annotated[Path, typer.Option(help="Where pipeline runs, logs and reports go.")] = Path(".fraud"),
    rows: Annotated[int, typer.Option(min=100, help="Transactions replayed through the model server.")] = 5_000,
) -> None:
    """End to end on the embedded defaults: the training pipeline (kfp.local), then serve, score and monitor."""
    from fraud_detection.cli_pipeline import run_cmd
    from fraud_detection.demo import serve_and_monitor

    settings = _settings(store)
    store_uri = settings.store_uri if "://" in settings.store_uri else str(Path(settings.store_uri).resolve())
    run_cmd(store=store_uri, work_dir=work_dir / "pipeline")

    def body() -> None:
        with step("serving the production model, replaying drifted traffic, running the drift job"):
            outcome = serve_and_monitor(store_uri, work_dir / "demo", rows)
        traffic, drift = outcome["traffic"], outcome["drift"]
        table = Table(title="laptop end to end: serve and monitor")
        table.add_column("what")
        table.add_column("result")
        table.add_row("scored", f"{traffic.rows:,} transactions in {traffic.requests} v2 REST requests")
        table.add_row("flagged", f"{traffic.flagged:,} ({traffic.caught} of {traffic.true_fraud} frauds caught)")
        seed = traffic.seed_response["predictions"][0]
        table.add_row("original project's v1 body", json.dumps({k: seed[k] for k in ("fraud_score", "is_fraud")}))
        codes = next(o for o in traffic.explained["outputs"] if o["name"] == "reason_codes")["data"][0]
        table.add_row(
            "reason codes (largest amount)",
            ", ".join(f"{c['feature']} {c['contribution']:+.3f}" for c in json.loads(codes)),
        )
        for version in drift.versions:
            d = version.drift
            drifted = [f.column for f in d.features if f.drifted]
            table.add_row(
                f"drift of {version.model_version}",
                "window too small"
                if d.too_small
                else f"{d.drifted_share:.0%} of features drifted (dataset drift {d.dataset_drifted}): "
                + ", ".join(drifted),
            )
            if version.report_key:
                table.add_row("Evidently report", f"{store_uri}/{version.report_key}")
        for reason in drift.retrain_reasons:
            table.add_row("retrain trigger", reason)
        console.print(table)

    guarded(body)


cli_monitoring.register(app)


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(app())
