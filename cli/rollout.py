"""`fraud rollout` commands (bodies import their adapters lazily, so the core CLI stays light).

``start`` puts a version beside the stable one as a canary, ``analyse`` compares them from Prometheus (and with
``--apply`` promotes, rolls back or records the wait), ``run`` does both until a decision, ``promote`` and
``rollback`` are the manual overrides, and ``status`` shows where a rollout stands.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from fraud_detection.model.registry import ModelRegistry
    from fraud_detection.rollout.analysis import RolloutDecision, Thresholds
    from fraud_detection.rollout.kube import InferenceServiceClient
    from fraud_detection.rollout.prometheus import PrometheusClient
    from fraud_detection.settings import RolloutSettings

app = typer.Typer(help="rollout commands.", no_args_is_help=True)
T = TypeVar("T")

NamespaceOpt = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Namespace of the InferenceService (FRAUD_SERVING_NAMESPACE).")
]
NameOpt = Annotated[str | None, typer.Option("--name", help="InferenceService name (FRAUD_INFERENCE_SERVICE).")]
StoreOpt = Annotated[
    str | None, typer.Option("--store", help="Store: a directory or s3://bucket/prefix (default FRAUD_STORE_URI).")
]
PrometheusOpt = Annotated[
    str | None, typer.Option("--prometheus-url", help="Prometheus base URL (default FRAUD_PROMETHEUS_URL).")
]
WindowOpt = Annotated[str, typer.Option("--window", help="Analysis window, e.g. 10m, 30s, 1h.")]
MetricsNamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "--metrics-namespace",
        help="Match the metrics' namespace label (the Prometheus Operator adds it). Default: the serving "
        "namespace; pass '' for a Prometheus whose series have no namespace label.",
    ),
]
WaitOpt = Annotated[
    float, typer.Option("--wait-seconds", min=0, help="How long a rollback waits for the restored revision.")
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded with the decision).")]
JsonOutOpt = Annotated[Path | None, typer.Option("--output-json", help="Also write the decision or record as JSON.")]


def _guarded(body: Callable[[], T]) -> T:
    """Run a command body like the core CLI does: expected errors become a message and exit code 2."""
    from cli.common import guarded
    from fraud_detection.rollout.errors import PrometheusError, RolloutError

    return guarded(body, (RolloutError, PrometheusError))


def settings_for(store: str | None, namespace: str | None, name: str | None) -> RolloutSettings:
    """The rollout settings, with the command's flags (when given) in place of the ``FRAUD_*`` values."""
    from fraud_detection.settings import RolloutSettings

    settings = RolloutSettings()
    update: dict[str, Any] = {}
    if store:
        update["store_uri"] = store
    if namespace:
        update["serving_namespace"] = namespace
    if name:
        update["inference_service"] = name
    return settings.model_copy(update=update) if update else settings


def _registry(settings: RolloutSettings) -> ModelRegistry:
    from fraud_detection.model.registry import open_registry

    return open_registry(settings)


def _isvc(settings: RolloutSettings) -> InferenceServiceClient:
    from fraud_detection.rollout.kube import InferenceServiceClient

    return InferenceServiceClient.connect(settings.serving_namespace, settings.inference_service)


def _thresholds(**overrides: float | None) -> Thresholds:
    from fraud_detection.rollout.analysis import Thresholds

    return Thresholds(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


def _show(decision: RolloutDecision) -> None:
    from rich.table import Table

    from cli.common import console

    colour = {"promote": "green", "rollback": "red", "inconclusive": "yellow"}[decision.decision.value]
    table = Table(
        title=f"canary {decision.canary_version} vs stable {decision.stable_version}"
        + (f" over {decision.window}" if decision.window else "")
    )
    for col in ("check", "outcome", "value", "threshold", "reason"):
        table.add_column(col)
    for check in decision.checks:
        style = {"pass": "green", "fail": "red", "insufficient": "yellow"}[check.outcome.value]
        table.add_row(
            check.name,
            f"[{style}]{check.outcome.value}[/]",
            "n/a" if check.value is None else f"{check.value:.4g}",
            f"{check.threshold:.4g}",
            check.reason,
        )
    if decision.checks:
        console.print(table)
    console.print(f"decision: [bold {colour}]{decision.decision.value}[/]")
    for reason in decision.reasons[:3] if decision.checks else decision.reasons:
        console.print(f"  - {reason}")


def _write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str))


@app.command("start")
def start(
    model_version: Annotated[str, typer.Option("--model-version", help="Version to run as the canary.")],
    percent: Annotated[int, typer.Option("--percent", min=1, max=99, help="Canary share of the traffic.")] = 10,
    namespace: NamespaceOpt = None,
    name: NameOpt = None,
    store: StoreOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a canary that is already running.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the JSON patch, change nothing.")] = False,
) -> None:
    """Run a registered version as a canary beside the stable one (the store alias `canary` moves to it)."""
    from cli.common import console, step
    from fraud_detection.rollout.canary import start_canary

    def body() -> None:
        settings = settings_for(store, namespace, name)
        registry = _registry(settings)
        isvc = _isvc(settings)
        with step(f"starting canary {model_version} at {percent} % on {isvc.namespace}/{isvc.name}"):
            result = start_canary(isvc, model_version, percent=percent, registry=registry, force=force, dry_run=dry_run)
        if dry_run:
            console.print_json(json.dumps(result.patch))
        else:
            console.print(f"canary {result.canary_version} at {result.percent} %, stable {result.stable_version}")

    _guarded(body)


@app.command("analyse")
def analyse_cmd(
    window: WindowOpt = "10m",
    prometheus_url: PrometheusOpt = None,
    stable_version: Annotated[
        str | None, typer.Option(help="Stable version (default: from the cluster/store).")
    ] = None,
    canary_version: Annotated[
        str | None, typer.Option(help="Canary version (default: from the cluster/store).")
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Carry the decision out and record it (store and annotations).")
    ] = False,
    no_cluster: Annotated[
        bool,
        typer.Option("--no-cluster", help="Do not touch Kubernetes (versions must then be given or in the store)."),
    ] = False,
    namespace: NamespaceOpt = None,
    name: NameOpt = None,
    store: StoreOpt = None,
    metrics_namespace: MetricsNamespaceOpt = None,
    wait_seconds: WaitOpt = 300.0,
    output_json: JsonOutOpt = None,
    min_requests: Annotated[int | None, typer.Option(min=0, help="Requests each version needs.")] = None,
    min_scored_rows: Annotated[int | None, typer.Option(min=0, help="Scored rows each version needs.")] = None,
    max_error_rate_ratio: Annotated[float | None, typer.Option(min=0)] = None,
    max_error_rate_increase: Annotated[float | None, typer.Option(min=0, help="Absolute, 0.01 = 1 point.")] = None,
    max_p99_latency_ratio: Annotated[float | None, typer.Option(min=0)] = None,
    max_p99_latency_increase_seconds: Annotated[float | None, typer.Option(min=0)] = None,
    max_score_ks: Annotated[float | None, typer.Option(min=0, max=1, help="Max CDF difference of the scores.")] = None,
    max_score_psi: Annotated[float | None, typer.Option(min=0, help="PSI of the scores.")] = None,
    max_alert_rate_ratio: Annotated[float | None, typer.Option(min=0)] = None,
    max_alert_rate_increase: Annotated[float | None, typer.Option(min=0)] = None,
    max_firing_alerts: Annotated[int | None, typer.Option(min=0)] = None,
) -> None:
    """Compare canary with stable from Prometheus; decide promote, rollback or inconclusive (wait)."""
    from cli.common import step
    from fraud_detection.rollout.analysis import parse_duration
    from fraud_detection.rollout.canary import analyse, apply_decision, resolve_versions
    from fraud_detection.rollout.patches import read_state

    def body() -> None:
        settings = settings_for(store, namespace, name)
        thresholds = _thresholds(
            min_requests=min_requests,
            min_scored_rows=min_scored_rows,
            max_error_rate_ratio=max_error_rate_ratio,
            max_error_rate_increase=max_error_rate_increase,
            max_p99_latency_ratio=max_p99_latency_ratio,
            max_p99_latency_increase_seconds=max_p99_latency_increase_seconds,
            max_score_ks=max_score_ks,
            max_score_psi=max_score_psi,
            max_alert_rate_ratio=max_alert_rate_ratio,
            max_alert_rate_increase=max_alert_rate_increase,
            max_firing_alerts=max_firing_alerts,
        )
        parse_duration(window)
        if apply and no_cluster:
            raise ValueError("--apply changes the InferenceService: it cannot be combined with --no-cluster")
        prometheus = _prometheus(settings, prometheus_url)
        registry = _registry(settings)
        isvc = None if no_cluster else _isvc(settings)
        state = read_state(isvc.get()) if isvc is not None else None
        stable, canary = resolve_versions(state, registry, stable_version=stable_version, canary_version=canary_version)
        label_ns = settings.serving_namespace if metrics_namespace is None else (metrics_namespace or None)
        with step(f"analysing canary {canary} against stable {stable} over {window}"):
            decision = analyse(
                prometheus,
                model_name=settings.model_name,
                stable_version=stable,
                canary_version=canary,
                window=window,
                thresholds=thresholds,
                namespace=label_ns,
            )
        _show(decision)
        payload: dict[str, Any] = decision.to_dict()
        if apply:
            with step(f"applying {decision.decision.value}"):
                payload = apply_decision(
                    decision,
                    isvc=isvc,
                    registry=registry,
                    store=registry.store,
                    wait_seconds=wait_seconds,
                    extra={"prometheus_url": prometheus.url},
                )
        _write_json(output_json, payload)

    _guarded(body)


def _prometheus(settings: RolloutSettings, url: str | None) -> PrometheusClient:
    from fraud_detection.rollout.prometheus import PrometheusClient

    target = url or settings.prometheus_url
    if not target:
        raise ValueError("no Prometheus URL: pass --prometheus-url or set FRAUD_PROMETHEUS_URL")
    token = settings.prometheus_bearer_token.get_secret_value() if settings.prometheus_bearer_token else None
    return PrometheusClient(target, bearer_token=token)


@app.command("run")
def run_cmd(
    model_version: Annotated[str, typer.Option("--model-version", help="Version to roll out.")],
    percent: Annotated[int, typer.Option("--percent", min=1, max=99, help="Canary share of the traffic.")] = 10,
    window: WindowOpt = "10m",
    max_analyses: Annotated[
        int, typer.Option("--max-analyses", min=1, help="Analyses (one per window) before giving up as inconclusive.")
    ] = 6,
    prometheus_url: PrometheusOpt = None,
    namespace: NamespaceOpt = None,
    name: NameOpt = None,
    store: StoreOpt = None,
    metrics_namespace: MetricsNamespaceOpt = None,
    wait_seconds: WaitOpt = 300.0,
    min_requests: Annotated[int | None, typer.Option(min=0, help="Requests each version needs.")] = None,
) -> None:
    """Start a canary, analyse it once per window, and promote or roll back on the first clear decision.

    Exits 3, leaving the canary running, when every analysis was inconclusive (too little traffic).
    """
    import time

    from cli.common import console, step
    from fraud_detection.rollout.analysis import Decision, parse_duration
    from fraud_detection.rollout.canary import analyse, apply_decision, start_canary

    def body() -> int:
        settings = settings_for(store, namespace, name)
        seconds = parse_duration(window)
        prometheus = _prometheus(settings, prometheus_url)
        registry = _registry(settings)
        isvc = _isvc(settings)
        thresholds = _thresholds(min_requests=min_requests)
        label_ns = settings.serving_namespace if metrics_namespace is None else (metrics_namespace or None)
        with step(f"starting canary {model_version} at {percent} %"):
            started = start_canary(isvc, model_version, percent=percent, registry=registry)
        for attempt in range(1, max_analyses + 1):
            with step(f"waiting one window ({window}) of canary traffic, analysis {attempt}/{max_analyses}"):
                time.sleep(seconds)
            decision = analyse(
                prometheus,
                model_name=settings.model_name,
                stable_version=started.stable_version,
                canary_version=started.canary_version,
                window=window,
                thresholds=thresholds,
                namespace=label_ns,
            )
            _show(decision)
            with step(f"applying {decision.decision.value}"):
                apply_decision(
                    decision,
                    isvc=isvc,
                    registry=registry,
                    store=registry.store,
                    wait_seconds=wait_seconds,
                    extra={"prometheus_url": prometheus.url, "attempt": attempt},
                )
            if decision.decision is not Decision.INCONCLUSIVE:
                return 0
        console.print(f"[yellow]still inconclusive after {max_analyses} analyses: the canary keeps running[/]")
        return 3

    code = _guarded(body)
    if code:
        raise typer.Exit(code=code)


def _manual(
    decision_name: str,
    reason: str,
    namespace: str | None,
    name: str | None,
    store: str | None,
    wait_seconds: float,
    output_json: Path | None,
) -> None:
    from cli.common import step
    from fraud_detection.rollout.analysis import Decision
    from fraud_detection.rollout.canary import apply_decision, manual_decision, resolve_versions
    from fraud_detection.rollout.patches import read_state

    def body() -> None:
        settings = settings_for(store, namespace, name)
        registry = _registry(settings)
        isvc = _isvc(settings)
        state = read_state(isvc.get())
        if decision_name == "promote" and not state.canary_running:
            raise ValueError(f"no canary runs on {isvc.namespace}/{isvc.name}: nothing to promote")
        stable, canary = resolve_versions(state, registry)
        decision = manual_decision(
            Decision(decision_name),
            model_name=settings.model_name,
            stable_version=stable,
            canary_version=canary,
            reason=reason,
        )
        with step(f"{decision_name}: canary {canary}, stable {stable}"):
            record = apply_decision(
                decision, isvc=isvc, registry=registry, store=registry.store, wait_seconds=wait_seconds
            )
        _show(decision)
        _write_json(output_json, record)

    _guarded(body)


@app.command("promote")
def promote_cmd(
    reason: ReasonOpt = "promoted by hand",
    namespace: NamespaceOpt = None,
    name: NameOpt = None,
    store: StoreOpt = None,
    output_json: JsonOutOpt = None,
) -> None:
    """Promote the running canary to 100 % without an analysis (recorded as a manual decision)."""
    _manual("promote", reason, namespace, name, store, 0.0, output_json)


@app.command("rollback")
def rollback_cmd(
    reason: ReasonOpt = "rolled back by hand",
    namespace: NamespaceOpt = None,
    name: NameOpt = None,
    store: StoreOpt = None,
    wait_seconds: WaitOpt = 300.0,
    output_json: JsonOutOpt = None,
) -> None:
    """Put the stable version back at 100 % (also finishes a rollback whose traffic is still pinned)."""
    _manual("rollback", reason, namespace, name, store, wait_seconds, output_json)


@app.command("status")
def status_cmd(
    namespace: NamespaceOpt = None,
    name: NameOpt = None,
    store: StoreOpt = None,
    no_cluster: Annotated[bool, typer.Option("--no-cluster", help="Show only the store's side.")] = False,
) -> None:
    """Show the InferenceService's versions and traffic, the store aliases and the latest decision."""
    from cli.common import console
    from fraud_detection.rollout.patches import read_state
    from fraud_detection.rollout.records import latest_records

    def body() -> None:
        settings = settings_for(store, namespace, name)
        registry = _registry(settings)
        out: dict[str, Any] = {
            "aliases": {a: (registry.get_alias(a) or {}).get("version") for a in ("production", "canary")}
        }
        if not no_cluster:
            out["inference_service"] = read_state(_isvc(settings).get()).to_dict()
        records = latest_records(registry.store, settings.model_name, limit=1)
        if records:
            last = records[0]
            out["latest_decision"] = {
                k: last.get(k)
                for k in (
                    "decision",
                    "source",
                    "decided_at",
                    "stable_version",
                    "canary_version",
                    "reasons",
                    "completed",
                    "error",
                    "record_key",
                )
            }
        console.print_json(json.dumps(out, default=str))

    _guarded(body)
