"""``fraud drift`` and ``fraud labels`` (bodies import their adapters lazily, so the core CLI stays light)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import pandas as pd

    from fraud_detection.settings import DriftSettings
    from fraud_detection.store.base import ArtifactStore

LOG = logging.getLogger("fraud")
labels_app = typer.Typer(help="Delayed labels (chargebacks).", no_args_is_help=True)


def drift(
    baseline_data: Annotated[
        Path | None, typer.Option(help="Baseline raw or feature file (compare two files).")
    ] = None,
    new_data: Annotated[Path | None, typer.Option(help="New raw or feature file (compare two files).")] = None,
    store: Annotated[str | None, typer.Option("--store", help="Store (default FRAUD_STORE_URI).")] = None,
    window_hours: Annotated[float | None, typer.Option(min=0.01, help="Payload-log window (job mode).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the Evidently HTML report here (file mode).")] = None,
    output_json: Annotated[Path | None, typer.Option(help="Write the result as JSON.")] = None,
    pushgateway_url: Annotated[
        str | None, typer.Option(help="Push gauges here (default FRAUD_PUSHGATEWAY_URL).")
    ] = None,
) -> None:
    """Detect drift: two files directly, or (without files) the drift job on the payload log of the store."""
    from cli.common import check_outputs, guarded
    from fraud_detection.store.files import write_json

    def body() -> None:
        if (baseline_data is None) != (new_data is None):
            raise ValueError("give both --baseline-data and --new-data, or neither (job mode on the payload log)")
        check_outputs(("--output-json", output_json), ("--report", report))
        if baseline_data is not None and new_data is not None:
            from fraud_detection.monitoring.drift_job import compare_files, read_frame

            result = compare_files(read_frame(baseline_data), read_frame(new_data), report_path=report)
            summary = result.as_dict()
            LOG.info(
                "dataset drift: %s (%.0f%% of features: %s)",
                result.dataset_drifted,
                100 * result.drifted_share,
                ", ".join(summary["drifted_features"]) or "none",
            )
        else:
            from fraud_detection.monitoring.drift_job import NothingToMonitorError
            from monitoring.drift_job import run_from_settings

            try:
                job = run_from_settings(store=store, window_hours=window_hours, pushgateway_url=pushgateway_url)
            except NothingToMonitorError as exc:
                typer.echo(f"nothing to monitor: {exc}", err=True)
                return
            summary = job.as_dict()
            if job.skipped:
                typer.echo(
                    f"warning: skipped {len(job.skipped)} bad object(s), computed on the rest: "
                    + "; ".join(f"{o.kind} {o.key}" for o in job.skipped[:5]),
                    err=True,
                )
        if output_json is not None:
            write_json(output_json, summary)
        typer.echo(json.dumps(summary, indent=2, default=str))

    guarded(body)


@labels_app.command("ingest")
def labels_ingest(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet with transaction_id, is_fraud, reported_at.")],
    store: Annotated[str | None, typer.Option("--store", help="Store (default FRAUD_STORE_URI).")] = None,
    online: Annotated[
        str | None,
        typer.Option(
            "--online",
            help="Also apply them to the online feature store's terminal fraud counts (default FRAUD_ONLINE_STORE; "
            "none: not applied).",
        ),
    ] = None,
) -> None:
    """Store delayed labels for the drift job; with an online store, add them to the terminals' fraud counts too."""
    from cli.common import guarded
    from cli.online import apply_labels
    from fraud_detection.monitoring.labels import ingest_labels, label_changes, load_labels, read_label_file
    from fraud_detection.settings import DriftSettings
    from fraud_detection.store.uri import open_configured_store

    def body() -> None:
        labels = read_label_file(file)
        settings = DriftSettings()
        # --store puts everything there; else the labels go beside the payload log.
        log_store = open_configured_store(settings, store or settings.payload_log_uri)
        corrected, overridden = label_changes(load_labels(log_store, on_skip=lambda key, reason: None), labels)
        key = ingest_labels(log_store, labels)
        typer.echo(key)
        _report_changes(corrected, overridden)
        _report_unknown_ids(log_store, labels, settings)
        applied = apply_labels(labels, online, required=False)
        if applied is not None:
            outcome, uri = applied
            typer.echo(
                f"online store {uri}: {outcome.applied} applied, {outcome.unchanged} unchanged, "
                f"{outcome.unknown} unknown transactions"
            )

    guarded(body)


def _report_changes(corrected: list[str], overridden: list[str]) -> None:
    """Tell which labels change an earlier stored label of the same id (the latest ``reported_at`` wins)."""
    from fraud_detection.monitoring.labels import EXAMPLES

    if corrected:
        typer.echo(
            f"note: {len(corrected)} label(s) correct an earlier stored label of the same id (the latest "
            "reported_at wins), e.g. " + ", ".join(corrected[:EXAMPLES]),
            err=True,
        )
    if overridden:
        typer.echo(
            f"warning: {len(overridden)} label(s) differ from a later stored report of the same id and take no "
            "effect (the latest reported_at wins), e.g. " + ", ".join(overridden[:EXAMPLES]),
            err=True,
        )


def _report_unknown_ids(store: ArtifactStore, labels: pd.DataFrame, settings: DriftSettings) -> None:
    """Tell how many labels match no prediction logged over the label history (they cannot count in quality)."""
    from datetime import UTC, datetime

    from fraud_detection.monitoring.drift_job import LABEL_HISTORY
    from fraud_detection.monitoring.labels import EXAMPLES, unknown_ids
    from fraud_detection.monitoring.payload_columns import TRANSACTION_KEY
    from fraud_detection.monitoring.payload_reader import read_payload_log

    end = datetime.now(UTC)
    try:
        log = read_payload_log(store, settings.model_name, end - LABEL_HISTORY, end)
    except Exception as exc:
        typer.echo(f"warning: labels not checked against the payload log: {' '.join(str(exc).split())}", err=True)
        return
    known = set(log[TRANSACTION_KEY].dropna().astype(str)) if TRANSACTION_KEY in log.columns else set()
    key = settings.identifier_key.get_secret_value().encode() if settings.identifier_key else None
    unknown = unknown_ids(labels, known, key)
    if unknown:
        typer.echo(
            f"warning: {len(unknown)} of {len(labels)} label(s) match no prediction of {settings.model_name} logged "
            f"in the last {LABEL_HISTORY.days} days (stored, but not counted in realised quality), e.g. "
            + ", ".join(unknown[:EXAMPLES]),
            err=True,
        )


def register(app: typer.Typer) -> None:
    """Add the monitoring commands (``drift``, ``labels``) to the main app.

    Args:
        app: The ``fraud`` Typer app.
    """
    app.command("drift")(drift)
    app.add_typer(labels_app, name="labels")
