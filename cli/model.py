"""``fraud train``, ``evaluate``, ``backtest`` and ``fraud models``."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
from fraud_detection.data.window import HoldoutSplit
from fraud_detection.model.registry import open_registry
from fraud_detection.settings import PipelineSettings

if TYPE_CHECKING:
    from fraud_detection.data.sampling import SampleSpec
    from fraud_detection.model.selection import Folds, SelectedParams

LOG = logging.getLogger("fraud")
models_app = typer.Typer(help="Model versions and aliases in the store.", no_args_is_help=True)


def train_cmd(
    data: Annotated[Path, typer.Option(help="Raw transactions or a features file.")],
    output: Annotated[Path | None, typer.Option(help="Write the bundle here instead of registering it.")] = None,
    model: Annotated[str, typer.Option(help="rf (the default), hgb or logreg.")] = "rf",
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
    params: Annotated[
        Path | None,
        typer.Option(
            help="Hyperparameters chosen by `fraud backtest --select --params-out FILE` (JSON); they override "
            "--max-iter. Its model type must be --model's."
        ),
    ] = None,
    sample_legit: Annotated[
        float,
        typer.Option(
            max=1.0,
            help="Train on every fraud and this share of the legitimate transactions, weighted by its inverse "
            "(calibration and threshold stay those of all the data); needs a features Parquet file or directory.",
        ),
    ] = 1.0,
    max_rows: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Keep at most this many legitimate training rows (the rate is derived from the row counts), so "
            "training memory is bounded whatever the history's size; needs a features Parquet file or directory.",
        ),
    ] = None,
    max_frauds: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Keep at most this many training frauds too (a deterministic sample, weighted by its inverse "
            "rate), so training memory stays flat however many frauds the history holds; default every fraud.",
        ),
    ] = None,
) -> None:
    """Train, evaluate on held-out days and write a bundle (or register it in the store behind the gate)."""

    def body() -> None:
        check_outputs(("--output", output), ("--report-dir", report_dir), directory=True)
        selected = _read_params(params, model) if params is not None else None
        if not 0.0 < sample_legit <= 1.0:
            raise ValueError(f"--sample-legit must be in (0, 1], got {sample_legit}")
        from fraud_detection.data.sampling import SampleSpec

        settings = settings_for(store)
        frame, sampling = _training_data(
            data,
            column_map,
            SampleSpec(legit_rate=sample_legit, max_rows=max_rows, max_frauds=max_frauds),
            test_days=test_days,
            delay_days=delay_days,
            train_days=train_days,
        )
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
            sampling=sampling,
            params=selected,
        )

    guarded(body)


def _read_params(path: Path, model: str) -> SelectedParams:
    """The ``--params`` file, checked against ``--model`` before any work."""
    from fraud_detection.model.selection import parse_params

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--params {path}: cannot read it ({exc.__class__.__name__}: {exc})") from exc
    selected = parse_params(text, source=f"--params {path}")
    if selected.model_type != model:
        raise ValueError(
            f"--params {path} holds parameters for {selected.model_type}, but --model is {model}; "
            f"pass --model {selected.model_type}"
        )
    return selected


def _training_data(
    data: Path,
    column_map: list[str] | None,
    spec: SampleSpec,
    *,
    test_days: int,
    delay_days: int,
    train_days: int,
) -> tuple[pd.DataFrame | HoldoutSplit, dict[str, float] | None]:
    """The whole feature frame, or (sampling, or a feature directory) the split read in bounded memory."""
    from fraud_detection.data.feature_dataset import is_feature_dataset
    from fraud_detection.data.sampled_split import read_sampled_holdout

    dataset = is_feature_dataset(data)
    if spec.samples and not dataset:
        raise ValueError(
            "--sample-legit, --max-rows and --max-frauds need a features Parquet file or directory "
            f"(`fraud features`); {data} is not one"
        )
    if not dataset or (not spec.samples and data.is_file()):
        return load_features(data, column_map, delay_days), None
    caps = f"legitimate rate {spec.legit_rate:g}, max rows {spec.max_rows}, max frauds {spec.max_frauds}"
    with step(f"reading the training window of {data} ({caps})"):
        held = read_sampled_holdout(data, spec, test_days=test_days, delay_days=delay_days, train_days=train_days)
    return held.split, held.sample.description() if spec.samples else None


def _train_and_maybe_register(
    settings: PipelineSettings,
    frame: pd.DataFrame | HoldoutSplit,
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
    sampling: dict[str, float] | None = None,
    params: SelectedParams | None = None,
) -> None:
    from fraud_detection.model.candidate import train_bundle
    from fraud_detection.model.promotion import gate_and_register
    from fraud_detection.model.train import TrainConfig

    config = TrainConfig(model_type=model, review_cost=review_cost, max_iter=max_iter)  # type: ignore[arg-type]
    if params is not None:
        config = params.apply(config)
    registry = None if output is not None else open_registry(settings)
    if registry is not None:
        # Reach the store before training: a dead, hung or misconfigured store fails now, not after the training.
        with step(f"checking the store {registry.store.uri()}"):
            registry.get_alias("production")
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = output or Path(tmp) / "bundle"
        rows = len(frame.train) + len(frame.test) if isinstance(frame, HoldoutSplit) else len(frame)
        with step(f"training {model} on {rows:,} rows"):
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
                sampling=sampling,
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
    model: Annotated[list[str] | None, typer.Option(help="rf (the default), hgb or logreg (repeatable).")] = None,
    train_days: Annotated[int, typer.Option(min=1)] = BACKTEST_SPLIT.train,
    delay_days: Annotated[int, typer.Option(min=0)] = BACKTEST_SPLIT.delay,
    test_days: Annotated[int, typer.Option(min=1)] = BACKTEST_SPLIT.test,
    folds: Annotated[int, typer.Option(min=1)] = 4,
    start: Annotated[str, typer.Option(help="First training day of the first fold.")] = "2018-07-25",
    step_days: Annotated[int, typer.Option(min=1)] = 7,
    review_cost: Annotated[float, typer.Option(min=0)] = 10.0,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Native threads (OpenMP, BLAS) per training fit; default: the CPUs available to this process. "
            "Use fewer on a machine shared with other jobs.",
        ),
    ] = None,
    output_json: Annotated[Path | None, typer.Option(help="Write per-fold and mean/std metrics as JSON.")] = None,
    select: Annotated[
        bool,
        typer.Option(
            "--select",
            help="Choose hyperparameters first by a grid search on validation folds that precede the test folds "
            "(the Handbook's prequential grid search), then backtest the chosen and the default parameters on the "
            "test folds. One --model: hgb or rf.",
        ),
    ] = False,
    metric: Annotated[
        str, typer.Option(help="--select: metric maximised, average_precision or card_precision_at_100.")
    ] = "average_precision",
    grid: Annotated[
        list[str] | None,
        typer.Option(
            help="--select: NAME=V1,V2 (repeatable) replaces the default grid, e.g. learning_rate=0.03,0.1; "
            "null for no limit (max_depth)."
        ),
    ] = None,
    validation_start: Annotated[
        str | None,
        typer.Option(
            help="--select: first training day of the first validation fold; default: the test folds moved back "
            "by (folds - 1) x step + delay + test days."
        ),
    ] = None,
    params_out: Annotated[
        Path | None, typer.Option(help="--select: write the chosen parameters as JSON (for fraud train --params).")
    ] = None,
) -> None:
    """Prequential backtest (train, delay, test windows over rolling folds), with training time per fold."""
    from fraud_detection.model.backtest import backtest, summarise
    from fraud_detection.model.selection import Folds
    from fraud_detection.model.train import DEFAULT_MODEL_TYPE, MODEL_TYPES, TrainConfig, fit_and_score_fn
    from fraud_detection.store.files import write_json

    def body() -> None:
        models = model or [DEFAULT_MODEL_TYPE]
        unknown = [m for m in models if m not in MODEL_TYPES]
        if unknown:
            raise ValueError(f"--model {unknown[0]!r}: choose from {', '.join(MODEL_TYPES)}")
        check_outputs(("--output-json", output_json), ("--params-out", params_out))
        if select:
            _select_cmd(
                data,
                column_map,
                models,
                folds=Folds.starting(
                    start,
                    folds=folds,
                    step_days=step_days,
                    train_days=train_days,
                    delay_days=delay_days,
                    test_days=test_days,
                ),
                validation_start=validation_start,
                metric=metric,
                grid=grid,
                review_cost=review_cost,
                threads=threads,
                output_json=output_json,
                params_out=params_out,
            )
            return
        if params_out is not None or grid or validation_start is not None:
            raise ValueError("--params-out, --grid and --validation-start need --select")
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
                        threads=threads,
                        progress=advance(progress, task),
                    )
                )
        table = Table(
            title=f"prequential backtest: {folds} folds from {start}, {train_days}/{delay_days}/{test_days} days"
        )
        console.print(_frame_table(table, "model", summarise(results)))
        if output_json is not None:
            payload = results[0].as_dict() if len(results) == 1 else {r.model_type: r.as_dict() for r in results}
            write_json(output_json, payload)
            LOG.info("wrote %s", output_json)

    guarded(body)


def _select_cmd(
    data: Path,
    column_map: list[str] | None,
    models: list[str],
    *,
    folds: Folds,
    validation_start: str | None,
    metric: str,
    grid: list[str] | None,
    review_cost: float,
    threads: int | None,
    output_json: Path | None,
    params_out: Path | None,
) -> None:
    """``fraud backtest --select``: the grid search on validation folds, then the test folds."""
    import dataclasses

    from fraud_detection.model.selection import (
        SELECTION_METRICS,
        Folds,
        check_disjoint,
        grid_points,
        model_type_of,
        params_document,
        select_and_test,
    )
    from fraud_detection.model.train import TrainConfig
    from fraud_detection.store.files import write_json

    if len(models) != 1:
        raise ValueError(f"--select tunes one model at a time; got --model {' --model '.join(models)}")
    model_type = model_type_of(models[0])
    if metric not in SELECTION_METRICS:
        raise ValueError(f"--metric {metric!r}: choose from {', '.join(SELECTION_METRICS)}")
    spec = _parse_grid(grid) if grid else None
    points = grid_points(model_type, spec)
    validation = (
        folds.validation()
        if validation_start is None
        else dataclasses.replace(folds, start=Folds.starting(validation_start).start)
    )
    check_disjoint(validation, folds)
    frame = load_features(data, column_map, folds.delay_days)
    base = TrainConfig(model_type=model_type, review_cost=review_cost)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err_console
    ) as progress:
        task = progress.add_task(
            f"select {model_type}: {len(points)} grid points x {folds.folds} folds, then the test folds",
            total=(len(points) + 2) * folds.folds,
        )
        report = select_and_test(
            frame,
            base,
            folds,
            validation=validation,
            grid=spec,
            metric=metric,
            threads=threads,
            progress=advance(progress, task),
        )
    selection = report.selection
    table = Table(
        title=f"{model_type} grid on {validation.folds} validation folds from {validation.start.date()} "
        f"(chosen by mean {metric}; {selection.n_fits} fits in {selection.wall_seconds:.0f} s wall, "
        f"{selection.cpu_seconds:.0f} s CPU)"
    )
    names = list(selection.grid[0].params)
    metrics = {
        "AP": "average_precision",
        "AUC": "roc_auc",
        "CP@100": "card_precision_at_100",
        "s/fold": "train_seconds",
    }
    for col in ["", *names, *metrics]:
        table.add_column(col, justify="right")
    for i, point in enumerate(selection.grid):
        cells = [f"{point.mean[m]:.3f} ± {point.std[m]:.3f}" for m in metrics.values()]
        table.add_row("*" if i == selection.best else "", *(str(point.params[n]) for n in names), *cells)
    console.print(table)
    comparison = report.comparison()
    table = Table(title=f"default vs chosen {selection.params}: validation and test folds from {folds.start.date()}")
    console.print(_frame_table(table, "config / folds", comparison))
    if output_json is not None:
        write_json(output_json, report.as_dict())
        LOG.info("wrote %s", output_json)
    if params_out is not None:
        write_json(params_out, params_document(selection))
        LOG.info("wrote the chosen parameters to %s (fraud train --params %s)", params_out, params_out)


def _parse_grid(items: list[str]) -> dict[str, list[int | float | None]]:
    """``NAME=V1,V2`` options into a grid; values are JSON numbers or null."""
    spec: dict[str, list[int | float | None]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise ValueError(f"--grid {item!r}: expected NAME=V1,V2")
        parsed: list[int | float | None] = []
        for text in values.split(","):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"--grid {name}: {text!r} is not a number or null")
            parsed.append(value)
        spec[name.strip()] = parsed
    return spec


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


def _frame_table(table: Table, index_name: str, frame: pd.DataFrame) -> Table:
    """Fill a rich table with a frame of preformatted cells: its index as the first column, then its columns."""
    table.add_column(index_name)
    for col in frame.columns:
        table.add_column(str(col), justify="right")
    for name, row in frame.iterrows():
        table.add_row(str(name), *row.tolist())
    return table
