"""`fraud pipeline` commands (bodies import their adapters lazily, so the core CLI stays light).

``compile`` writes the Kubeflow YAML, ``run`` executes the whole DAG here through ``kfp.local``, ``submit`` and
``schedule`` talk to a Kubeflow Pipelines endpoint (``FRAUD_KFP_ENDPOINT``, ``FRAUD_KFP_TOKEN``,
``FRAUD_KFP_NAMESPACE``). Only this module and ``pipelines/`` import kfp.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fraud_detection.data.splits import TRAINING_SPLIT

if TYPE_CHECKING:
    from fraud_detection.settings import PipelineSettings
    from pipelines.local import StepEvent

LOG = logging.getLogger("fraud.pipeline")
app = typer.Typer(help="pipeline commands.", no_args_is_help=True)

DEFAULT_OUTPUT = Path("build/pipelines/fraud-training.yaml")
ImageOpt = Annotated[
    str | None,
    typer.Option(
        "--image", envvar="FRAUD_PIPELINE_IMAGE", help="Pipeline image of every task (default: the chart's image)."
    ),
]
SecretOpt = Annotated[
    str,
    typer.Option(help="Kubernetes Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; '' for none."),
]
ConfigMapOpt = Annotated[str, typer.Option(help="ConfigMap with the FRAUD_* settings (optional at run time); ''.")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", help="Pipeline argument NAME=VALUE (repeatable).")]
DataOpt = Annotated[str | None, typer.Option("--data", help="Raw transactions: a path or s3:// URI.")]
SourceVersionOpt = Annotated[
    str, typer.Option(help="Identity of the data at --data (snapshot id, digest): keys the data steps' cache.")
]
PackageOpt = Annotated[
    Path | None, typer.Option(help="A compiled pipeline YAML; default: compile one now (with --image).")
]
ExperimentOpt = Annotated[str, typer.Option(help="Kubeflow experiment.")]
ServiceAccountOpt = Annotated[
    str,
    typer.Option(
        help="ServiceAccount of the run's pods: manifests/ creates fraud-pipeline-runner with the rights to deploy; "
        "'' for KFP's default."
    ),
]

FEATURE_ENGINES = ("memory", "spark", "spark-operator")
FeatureEngineOpt = Annotated[
    str | None,
    typer.Option(
        "--feature-engine",
        help="Executor of the feature step: memory, spark (Spark local[*] in the step) or spark-operator (a "
        "SparkApplication on the Kubeflow Spark Operator; compiles with --spark-operator). Default: "
        "FRAUD_FEATURE_ENGINE, else the pipeline's default (memory).",
        show_default=False,
    ),
]
SparkOperatorOpt = Annotated[
    bool | None,
    typer.Option(
        "--spark-operator/--no-spark-operator",
        help="Compile the feature step's Spark Operator wiring (store Secret, the chart's Spark settings ConfigMap). "
        "Default: FRAUD_SPARK_OPERATOR, on with --feature-engine spark-operator.",
        show_default=False,
    ),
]

_SYMBOLS = {"running": "▶", "succeeded": "✓", "cached": "↺", "skipped": "-", "failed": "✗"}


def _guard(fn: Callable[[], None]) -> None:
    """Run a command body; report expected errors (and a failed step) in one line with exit code 2."""
    from cli.common import guarded
    from pipelines.local import PipelineRunError

    guarded(fn, (PipelineRunError,))


def _build_options(
    image: str | None, secret_name: str, config_map: str, spark_operator: bool = False
) -> dict[str, Any]:
    """Compile options: the flags, and the heavy steps' node pool (FRAUD_TRAINING_NODE_SELECTOR/_TOLERATION)."""
    from cli.common import settings_for
    from pipelines.training import NodePool

    settings = settings_for()
    options: dict[str, Any] = {
        "secret_name": secret_name or None,
        "config_map_name": config_map or None,
        "node_pool": NodePool.parse(settings.training_node_selector, settings.training_toleration),
    }
    if image:
        options["image"] = image
    if spark_operator:
        options["spark_operator"] = True
    return options


def _feature_engine(
    engine: str | None,
    spark_operator: bool | None,
    settings: PipelineSettings,
    *,
    package: Path | None = None,
    params: list[str] | None = None,
) -> tuple[str | None, bool]:
    """The feature step's executor and whether to compile the Spark Operator wiring, refusing bad combinations.

    Args:
        engine: ``--feature-engine`` (None: ``FRAUD_FEATURE_ENGINE``, else the pipeline's default).
        spark_operator: ``--spark-operator``/``--no-spark-operator`` (None: ``FRAUD_SPARK_OPERATOR``, or on with
            the ``spark-operator`` engine).
        settings: The command's settings.
        package: ``--package`` (a compiled pipeline: compile options do not apply to it).
        params: ``--param`` pairs.

    Returns:
        The engine (None: leave the run parameter alone) and the wiring flag.

    Raises:
        ValueError: An unknown engine, the engine given twice, ``spark-operator`` without the wiring, a compile
            option with ``--package``, or a package compiled without the wiring run on the Spark Operator.
    """
    origin = "--feature-engine" if engine is not None else "FRAUD_FEATURE_ENGINE"
    chosen = engine if engine is not None else settings.feature_engine
    if chosen is not None and chosen not in FEATURE_ENGINES:
        raise ValueError(f"{origin} {chosen!r}: use one of {', '.join(FEATURE_ENGINES)}")
    if engine is not None and any(p.partition("=")[0].strip() == "feature_engine" for p in params or []):
        raise ValueError("--feature-engine and --param feature_engine=...: give the feature engine once")
    wiring = settings.spark_operator if spark_operator is None else spark_operator
    if chosen == "spark-operator":
        if spark_operator is False:
            raise ValueError(f"{origin} spark-operator needs the Spark Operator wiring: drop --no-spark-operator")
        wiring = True
    if package is not None:
        if spark_operator:
            raise ValueError(
                "--spark-operator is a compile option and --package is already compiled: "
                "compile it with `fraud pipeline compile --spark-operator`, or drop --package"
            )
        if chosen == "spark-operator" and not _has_spark_wiring(package):
            raise ValueError(
                f"--package {package}: compiled without the Spark Operator wiring, so {origin} spark-operator "
                "cannot run on it (compile it with `fraud pipeline compile --spark-operator`)"
            )
    return chosen, wiring


def _has_spark_wiring(package: Path) -> bool:
    """Whether a compiled pipeline mounts the Spark settings ConfigMap into the feature step."""
    import yaml

    from pipelines.training import SPARK_CONFIG_MAP_NAME

    if not package.is_file():
        return True  # reported by _package
    try:
        documents = [d for d in yaml.safe_load_all(package.read_text()) if isinstance(d, dict)]
    except yaml.YAMLError as exc:
        raise ValueError(f"--package {package}: not a compiled pipeline ({' '.join(str(exc).split())})") from exc
    executors = [
        d.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {}) for d in documents
    ]
    features: dict[str, Any] = next((e["exec-build-features"] for e in executors if "exec-build-features" in e), {})
    return any(v.get("configMapName") == SPARK_CONFIG_MAP_NAME for v in features.get("configMapAsVolume", []))


@contextmanager
def _package(package: Path | None, options: dict[str, Any]) -> Iterator[Path]:
    """The given package, or one compiled into a temporary file for the duration of the block."""
    if package is not None:
        if not package.is_file():
            raise ValueError(f"--package {package}: no such file")
        yield package
        return
    from pipelines.training import compile_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        yield compile_pipeline(Path(tmp) / "fraud-training.yaml", **options)


@app.command("compile")
def compile_cmd(
    output: Annotated[Path, typer.Option(help="Destination YAML.")] = DEFAULT_OUTPUT,
    image: ImageOpt = None,
    secret_name: SecretOpt = "fraud-s3-credentials",
    config_map: ConfigMapOpt = "fraud-detection-pipeline",
    feature_engine: FeatureEngineOpt = None,
    spark_operator: SparkOperatorOpt = None,
) -> None:
    """Compile the fraud-training pipeline to Kubeflow Pipelines YAML (--feature-engine: the runs' default)."""

    def body() -> None:
        from cli.common import settings_for
        from pipelines.training import compile_pipeline

        engine, wiring = _feature_engine(feature_engine, spark_operator, settings_for())
        options = _build_options(image, secret_name, config_map, wiring)
        compile_pipeline(output, defaults={"feature_engine": engine} if engine else None, **options)
        LOG.info(
            "compiled %s (feature engine %s%s)",
            output,
            engine or "memory",
            ", Spark Operator wiring" if wiring else "",
        )

    _guard(body)


def _fingerprint(source: str) -> str:
    """Digest of a local file or directory's contents (the cache key of the data steps); '' for s3://."""
    path = Path(source)
    if source.startswith("s3://") or not path.exists():
        return ""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        digest.update(file.name.encode())
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _log_event(event: StepEvent) -> None:
    symbol = _SYMBOLS[event.status]
    took = f" ({event.seconds:.1f} s)" if event.status in ("succeeded", "failed") and event.seconds else ""
    detail = f": {event.detail}" if event.detail else ""
    level = logging.ERROR if event.status == "failed" else logging.INFO
    LOG.log(level, "%s %s %s%s%s", symbol, event.step, event.status, took, detail)


@app.command("run")
def run_cmd(
    data: Annotated[
        str | None, typer.Option(help="Raw transactions: .csv/.parquet file or Parquet directory, or s3:// URI.")
    ] = None,
    customers: Annotated[int | None, typer.Option(min=1, help="Simulated customers (default 5,000).")] = None,
    terminals: Annotated[int | None, typer.Option(min=1, help="Simulated terminals (default 10,000).")] = None,
    days: Annotated[int | None, typer.Option(min=1, help="Simulated days (default 183).")] = None,
    store: Annotated[str | None, typer.Option(help="Model store: directory or s3://bucket/prefix.")] = None,
    work_dir: Annotated[Path, typer.Option(help="Runs, task cache and logs.")] = Path(".fraud/pipeline"),
    model: Annotated[str, typer.Option(help="rf (the default), hgb or logreg.")] = "rf",
    max_iter: Annotated[int, typer.Option(min=1, help="Boosting iterations (hgb).")] = 300,
    train_days: Annotated[
        int, typer.Option(min=0, help="Most recent days to train on (0: all).")
    ] = TRAINING_SPLIT.train,
    test_days: Annotated[int, typer.Option(min=1, help="Held-out test days.")] = TRAINING_SPLIT.test,
    delay_days: Annotated[
        int, typer.Option(min=0, help="Label delay between training and test.")
    ] = TRAINING_SPLIT.delay,
    min_ap_gain: Annotated[float, typer.Option(help="AP gain over production needed to promote.")] = 0.0,
    max_cp_loss: Annotated[float, typer.Option(help="CP@100 loss tolerated against production.")] = 0.0,
    column_map: Annotated[str, typer.Option(help="Column renames SRC=DST,SRC=DST.")] = "",
    cache: Annotated[bool, typer.Option(help="Reuse the data steps' outputs when their inputs are unchanged.")] = True,
    simulate: SimulateOpt = False,
    feature_engine: FeatureEngineOpt = None,
) -> None:
    """Run the whole training DAG here through kfp.local, printing each step; register only a better model."""

    def body() -> None:
        from cli.common import console, settings_for
        from fraud_detection.model.registry import open_registry
        from pipelines.local import run_local

        if data is not None and any(v is not None for v in (customers, terminals, days)):
            raise ValueError("--data and --customers/--terminals/--days are exclusive: read data or simulate it")
        settings = settings_for()
        engine, _ = _feature_engine(feature_engine, None, settings)
        if engine == "spark-operator":
            origin = "--feature-engine" if feature_engine else "FRAUD_FEATURE_ENGINE"
            raise ValueError(
                f"{origin} spark-operator runs only on Kubeflow (`fraud pipeline submit`): a local run has no "
                "cluster wiring; use memory or spark here"
            )
        sizes = any(v is not None for v in (customers, terminals, days))
        source = _training_source(data, simulate or sizes, settings.training_data if not sizes else None)
        store_uri = store or settings.store_uri
        if "://" not in store_uri:
            store_uri = str(Path(store_uri).resolve())
        arguments: dict[str, Any] = {
            "n_customers": customers or 5_000,
            "n_terminals": terminals or 10_000,
            "n_days": days or 183,
            "model_type": model,
            "max_iter": max_iter,
            "train_days": train_days,
            "test_days": test_days,
            "delay_days": delay_days,
            "min_ap_gain": min_ap_gain,
            "max_cp_loss": max_cp_loss,
            "column_map": column_map,
            "review_cost": settings.review_cost,
            "store_uri": store_uri,
            "model_name": settings.model_name,
        }
        if engine:
            arguments["feature_engine"] = engine
        if source == PAYLOAD_LOG:
            arguments |= {"data_source": source, "source_version": _source_version(source, "")}
            if days is None:
                arguments["n_days"] = 183  # days of scoring history read
        elif source is not None:
            if not source.startswith("s3://") and not Path(source).exists():
                raise ValueError(f"--data {source}: no such file or directory")
            resolved = source if source.startswith("s3://") else str(Path(source).resolve())
            arguments |= {"data_source": resolved, "source_version": _fingerprint(source)}
        LOG.info("running fraud-training locally (store %s, work dir %s)", store_uri, work_dir)
        result = run_local(arguments, work_dir, enable_caching=cache, on_event=_log_event)
        production = open_registry(settings, store_uri).get_alias("production")
        current = production["version"] if production else "none"
        if result.promoted:
            LOG.info("promoted %s: it is production now (store %s)", result.candidate_version, store_uri)
            deploy = result.outputs.get("deploy-model", {}).get("Output", "not run")
            LOG.info("canary deployment: %s", deploy)
        else:
            LOG.info("not promoted: %s; production stays %s", result.candidate_version, current)
        for reason in result.reasons:
            LOG.info("gate: %s", reason)
        console.print(_metrics_table(result.candidate_version, result.metrics))
        LOG.info("report %s; log %s; %.1f s", result.report_path, result.log_path, result.seconds)

    _guard(body)


def _metrics_table(version: str, metrics: dict[str, float]) -> Any:
    from dataclasses import fields

    from rich.table import Table

    from fraud_detection.model.metrics import FraudMetrics

    def fmt(key: str, value: float | None) -> str:
        return "" if value is None else f"{value:.0f}" if key.startswith("n_") else f"{value:.4f}"

    table = Table(title=f"candidate {version} vs production, same held-out rows")
    for column in ("metric", "candidate", "production"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key in (f.name for f in fields(FraudMetrics)):
        if key in metrics:
            table.add_row(key, fmt(key, metrics[key]), fmt(key, metrics.get(f"production_{key}")))
    return table


def _kfp_client(settings: PipelineSettings) -> Any:
    from pipelines.kubeflow import make_configured_client

    return make_configured_client(settings)


SimulateOpt = Annotated[
    bool, typer.Option("--simulate", help="Train on simulated transactions (never the default: say so).")
]
PAYLOAD_LOG = "payload-log"


def _training_source(data: str | None, simulate: bool, configured: str | None) -> str | None:
    """What a run trains on: --data, else FRAUD_TRAINING_DATA, else simulation only when asked for.

    Args:
        data: ``--data``.
        simulate: ``--simulate`` (or simulation sizes) was given.
        configured: The ``FRAUD_TRAINING_DATA`` setting.

    Returns:
        The data source, or None to simulate.

    Raises:
        ValueError: Nothing to train on was given or configured, or both data and simulation were asked for.
    """
    if data and simulate:
        raise ValueError("--data and --simulate are exclusive: read data or simulate it")
    if data or simulate:
        return data or None
    if configured:
        return configured
    raise ValueError(
        "no training data: give --data (a path, an s3:// URI, or payload-log for what the server scored plus the "
        "labels), set FRAUD_TRAINING_DATA, or pass --simulate to train on simulated transactions"
    )


def _source_version(source: str | None, given: str) -> str:
    """The data steps' cache key: given, a digest of local data, or the time for the ever-growing payload log."""
    if given or source is None:
        return given
    if source == PAYLOAD_LOG:
        from datetime import UTC, datetime

        return f"read-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    return ""


def _run_params(package: Path, data: str | None, source_version: str, params: list[str] | None) -> dict[str, Any]:
    from pipelines.kubeflow import parse_params

    arguments: dict[str, Any] = {}
    if data:
        arguments["data_source"] = data
    if source_version:
        arguments["source_version"] = source_version
    return arguments | parse_params(params or [], package)


@app.command("submit")
def submit_cmd(
    data: DataOpt = None,
    source_version: SourceVersionOpt = "",
    param: ParamOpt = None,
    package: PackageOpt = None,
    image: ImageOpt = None,
    secret_name: SecretOpt = "fraud-s3-credentials",
    config_map: ConfigMapOpt = "fraud-detection-pipeline",
    experiment: ExperimentOpt = "fraud-detection",
    run_name: Annotated[str | None, typer.Option(help="Run display name (default: fraud-training-<time>).")] = None,
    service_account: ServiceAccountOpt = "fraud-pipeline-runner",
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish; exit non-zero unless it succeeded.")] = False,
    timeout_minutes: Annotated[int, typer.Option(min=1, help="How long --wait waits.")] = 120,
    simulate: SimulateOpt = False,
    feature_engine: FeatureEngineOpt = None,
    spark_operator: SparkOperatorOpt = None,
) -> None:
    """Upload the pipeline to Kubeflow (a version per distinct package) and start a run."""

    def body() -> None:
        from datetime import UTC, datetime

        from cli.common import settings_for
        from pipelines.kubeflow import submit

        settings = settings_for()
        engine, wiring = _feature_engine(feature_engine, spark_operator, settings, package=package, params=param)
        source = _training_source(data, simulate, settings.training_data)
        client = _kfp_client(settings)
        with _package(package, _build_options(image, secret_name, config_map, wiring)) as path:
            params = _run_params(path, source, _source_version(source, source_version), param)
            run_id = submit(
                client,
                path,
                params=params | ({"feature_engine": engine} if engine else {}),
                run_name=run_name or f"fraud-training-{datetime.now(UTC):%Y%m%d-%H%M%S}",
                experiment=experiment,
                namespace=settings.kfp_namespace,
                service_account=service_account or None,
            )
        LOG.info("submitted run %s", run_id)
        if wait:
            run = client.wait_for_run_completion(run_id, timeout=timeout_minutes * 60)
            state = str(getattr(run, "state", "UNKNOWN"))
            LOG.info("run %s finished: %s", run_id, state)
            if state != "SUCCEEDED":
                raise ValueError(f"run {run_id} ended in state {state}")

    _guard(body)


@app.command("schedule")
def schedule_cmd(
    data: DataOpt = None,
    source_version: SourceVersionOpt = "",
    param: ParamOpt = None,
    cron: Annotated[
        str, typer.Option(help="KFP cron, 6 fields with seconds first; Mondays 05:00 UTC.")
    ] = "0 0 5 * * 1",
    name: Annotated[str, typer.Option(help="Recurring run name (one per name).")] = "fraud-training-weekly",
    cache: Annotated[
        bool | None,
        typer.Option(
            "--cache/--no-cache",
            help="Cache the data steps; default: off with --data (new data each week at the same URI), else on.",
        ),
    ] = None,
    package: PackageOpt = None,
    image: ImageOpt = None,
    secret_name: SecretOpt = "fraud-s3-credentials",
    config_map: ConfigMapOpt = "fraud-detection-pipeline",
    experiment: ExperimentOpt = "fraud-detection",
    service_account: ServiceAccountOpt = "fraud-pipeline-runner",
    simulate: SimulateOpt = False,
    feature_engine: FeatureEngineOpt = None,
    spark_operator: SparkOperatorOpt = None,
) -> None:
    """Create or update the weekly recurring training run (idempotent: one recurring run per name)."""

    def body() -> None:
        from cli.common import settings_for
        from pipelines.kubeflow import check_cron, schedule

        normalised = check_cron(cron)
        settings = settings_for()
        engine, wiring = _feature_engine(feature_engine, spark_operator, settings, package=package, params=param)
        source = _training_source(data, simulate, settings.training_data)
        client = _kfp_client(settings)
        with _package(package, _build_options(image, secret_name, config_map, wiring)) as path:
            # A recurring run keeps its parameters: no read-time cache key (caching is off with a data source).
            params = _run_params(path, source, source_version, param)
            params |= {"feature_engine": engine} if engine else {}
            result = schedule(
                client,
                path,
                params=params,
                name=name,
                cron=normalised,
                experiment=experiment,
                namespace=settings.kfp_namespace,
                # True would force caching on every task (training included): keep the compiled settings instead.
                enable_caching=None if (not params.get("data_source") if cache is None else cache) else False,
                service_account=service_account or None,
            )
        LOG.info("recurring run %s %s (%s)", name, result.action, result.recurring_run_id)

    _guard(body)
