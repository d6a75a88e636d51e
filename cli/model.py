"""``fraud train``, ``evaluate``, ``backtest`` and ``fraud models``."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.common import (
    ColumnMapOpt,
    StoreOpt,
    advance,
    check_outputs,
    console,
    err_console,
    guarded,
    load_features,
    settings_for,
    step,
)
from fraud_detection.data import schema
from fraud_detection.data.splits import BACKTEST_SPLIT, TRAINING_SPLIT
from fraud_detection.model.registry import open_registry
from fraud_detection.settings import PipelineSettings

LOG = logging.getLogger("fraud")
models_app = typer.Typer(help="Model versions and aliases in the store.", no_args_is_help=True)


def train_cmd(
    data: Annotated[Path, typer.Option(help="Raw transactions or a features file.")],
    output: Annotated[Path | None, typer.Option(help="Write the bundle here instead of registering it.")] = None,
    model: Annotated[str, typer.Option(help="hgb, logreg or rf.")] = "hgb",
    column_map: ColumnMapOpt = None,
    store: StoreOpt = None,
    test_days: Annotated[int, typer.Option(min=1, help="Held-out test days.")] = TRAINING_SPLIT.test,
    delay_days: Annotated[
        int, typer.Option(min=0, help="Label delay between training and test.")
    ] = TRAINING_SPLIT.delay,
    train_days: Annotated[int, typer.Option(min=2, help="Most recent days of training data.")] = TRAINING_SPLIT.train,
    review_cost: Annotated[float | None, typer.Option(min=0, help="Cost of a false alert.")] = None,
    min_ap_gain: Annotated[float, typer.Option(help="AP gain needed over production to register.")] = 0.0,
    max_cp_loss: Annotated[float, typer.Option(help="CP@100 loss tolerated against production.")] = 0.0,
    report_dir: Annotated[Path | None, typer.Option(help="Write ROC/PR curves here.")] = None,
    max_iter: Annotated[int, typer.Option(min=1, help="Boosting iterations (hgb).")] = 300,
) -> None:
    """Train, evaluate on held-out days and write a bundle (or register it in the store behind the gate)."""

    def body() -> None:
        check_outputs(("--output", output), ("--report-dir", report_dir), directory=True)
        settings = settings_for(store)
        frame = load_features(data, column_map, delay_days)
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
    settings: PipelineSettings,
    frame: pd.DataFrame,
    *,
    output: Path | None,
    model: str,
    test_days: int,
    delay_days: int,
    review_cost: float,
    train_days: int = TRAINING_SPLIT.train,
    min_ap_gain: float,
    max_cp_loss: float,
    report_dir: Path | None,
    source: str,
    max_iter: int = 300,
) -> None:
    from fraud_detection.model.candidate import train_bundle
    from fraud_detection.model.promotion import gate_and_register
    from fraud_detection.model.train import TrainConfig

    config = TrainConfig(model_type=model, review_cost=review_cost, max_iter=max_iter)  # type: ignore[arg-type]
    registry = None if output is not None else open_registry(settings)
    if registry is not None:
        # Reach the store before training: a dead, hung or misconfigured store fails now, not after the training.
        with step(f"checking the store {registry.store.uri()}"):
            registry.get_alias("production")
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
        if registry is None:  # --output: write the bundle, register nothing
            if settings.signing_key is not None:
                from fraud_detection.model.bundle import load_signing_key, sign_bundle

                sign_bundle(bundle_dir, load_signing_key(settings.signing_key.get_secret_value()))
                LOG.info("bundle written to %s, signed", bundle_dir)
            else:
                LOG.info("bundle written to %s, unsigned (no FRAUD_SIGNING_KEY)", bundle_dir)
            return
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
    from fraud_detection.model.curves import plot_curves
    from fraud_detection.model.metrics import compute_metrics
    from fraud_detection.store.files import write_json

    def body() -> None:
        check_outputs(("--plots", plots), directory=True)
        check_outputs(("--output-json", output_json))
        settings = settings_for(store)
        if bundle is not None:
            from fraud_detection.model.bundle import BundleTrust, load_bundle

            trust = BundleTrust.from_config(settings.verify_key, settings.trust_unsigned, remote=False)
            loaded = load_bundle(bundle, trust=trust)
        else:
            loaded = open_registry(settings).load(model_ref, Path(settings.cache_dir))
        frame = load_features(data, column_map, loaded.metadata.training.label_delay_days)
        from fraud_detection.model.train import score

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


def backtest_cmd(
    data: Annotated[Path, typer.Option(help="Labelled raw transactions or features.")],
    column_map: ColumnMapOpt = None,
    model: Annotated[list[str] | None, typer.Option(help="hgb, logreg or rf (repeatable).")] = None,
    train_days: Annotated[int, typer.Option(min=1)] = BACKTEST_SPLIT.train,
    delay_days: Annotated[int, typer.Option(min=0)] = BACKTEST_SPLIT.delay,
    test_days: Annotated[int, typer.Option(min=1)] = BACKTEST_SPLIT.test,
    folds: Annotated[int, typer.Option(min=1)] = 4,
    start: Annotated[str, typer.Option(help="First training day of the first fold.")] = "2018-07-25",
    step_days: Annotated[int, typer.Option(min=1)] = 7,
    review_cost: Annotated[float, typer.Option(min=0)] = 10.0,
    output_json: Annotated[Path | None, typer.Option(help="Write per-fold and mean/std metrics as JSON.")] = None,
) -> None:
    """Prequential backtest (train, delay, test windows over rolling folds)."""
    from fraud_detection.model.backtest import backtest, summarise
    from fraud_detection.model.train import MODEL_TYPES, TrainConfig, fit_and_score_fn
    from fraud_detection.store.files import write_json

    def body() -> None:
        models = model or ["hgb"]
        unknown = [m for m in models if m not in MODEL_TYPES]
        if unknown:
            raise ValueError(f"--model {unknown[0]!r}: choose from {', '.join(MODEL_TYPES)}")
        check_outputs(("--output-json", output_json))
        frame = load_features(data, column_map, delay_days)
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
                        progress=advance(progress, task),
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


@models_app.command("list")
def models_list(store: StoreOpt = None) -> None:
    """List versions and aliases."""

    def body() -> None:
        settings = settings_for(store)
        registry = open_registry(settings)
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
        settings = settings_for(store)
        meta = open_registry(settings).metadata(ref)
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
        settings = settings_for(store)
        record = open_registry(settings).set_alias(alias, version)
        console.print_json(json.dumps(record))

    guarded(body)


def register(app: typer.Typer) -> None:
    """Add ``fraud train``, ``evaluate``, ``backtest`` and ``fraud models``.

    Args:
        app: The ``fraud`` command.
    """
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("backtest")(backtest_cmd)
    app.add_typer(models_app, name="models")
