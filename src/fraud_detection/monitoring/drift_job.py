"""The drift job: drift of the latest payload-log window, realised quality from labels, report, retrain trigger.

One run compares the latest payload-log window with the reference, measures realised quality from delayed labels,
writes the Evidently report to the store, and can trigger retraining; the caller pushes the gauges.

``python -m monitoring.drift_job`` (the CronJob) and ``fraud drift`` both call :func:`run_drift_job`.
"""

from __future__ import annotations

import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from fraud_detection.data import schema
from fraud_detection.model.bundle import SCORE_COLUMN
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.monitoring.drift import DriftResult, compute_drift
from fraud_detection.monitoring.labels import QualityRow, estimated_precision, load_labels, realised_quality
from fraud_detection.store.base import ArtifactStore

LOG = logging.getLogger(__name__)
#: How far back logged predictions are joined with delayed labels.
LABEL_HISTORY = timedelta(days=60)


@dataclass(frozen=True)
class DriftJobConfig:
    """Parameters of one drift-job run.

    Attributes:
        model_name: Served model name.
        window_hours: Length of the payload-log window.
        min_rows: Smallest window judged for drift.
        drift_share: Share of drifted features that makes the dataset drifted.
        retrain_on_drift: Start retraining when dataset drift is found.
        ap_floor: Start retraining when realised AP (most mature window) falls below this.
        max_rows: Rows sampled from the window for the drift tests.
        identifier_key: HMAC key of the payload log's identifier hashes (labels join on it).
    """

    model_name: str = "fraud-detector"
    window_hours: float = 24.0
    min_rows: int = 200
    drift_share: float = 0.3
    retrain_on_drift: bool = True
    ap_floor: float = 0.3
    max_rows: int = 200_000
    identifier_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class VersionReport:
    """Drift and quality of one model version.

    Attributes:
        model_version: Version.
        drift: Drift of its window against its own bundle's reference sample.
        quality: Realised quality rows by maturity.
        estimated_precision: Precision estimated from scores (an estimate).
        report_key: Store key of the HTML report.
    """

    model_version: str
    drift: DriftResult
    quality: list[QualityRow] = field(default_factory=list)
    estimated_precision: float = float("nan")
    report_key: str | None = None


@dataclass(frozen=True)
class DriftJobResult:
    """Outcome of a run.

    Attributes:
        model_name: Model name.
        window_start: Window start.
        window_end: Window end.
        versions: Per-version reports (a production version with an empty window is still reported).
        retrain_reasons: Why retraining was (or would be) started; empty when not needed.
        retrain_started: Whether a retraining run was started.
        duration_seconds: Wall time.
    """

    model_name: str
    window_start: datetime
    window_end: datetime
    versions: list[VersionReport]
    retrain_reasons: list[str]
    retrain_started: bool
    duration_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "model_name": self.model_name,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "retrain_reasons": self.retrain_reasons,
            "retrain_started": self.retrain_started,
            "duration_seconds": self.duration_seconds,
            "versions": [
                {
                    "model_version": v.model_version,
                    "drift": v.drift.as_dict(),
                    "quality": [q.as_dict() for q in v.quality],
                    "estimated_precision": v.estimated_precision,
                    "report_key": v.report_key,
                }
                for v in self.versions
            ],
        }


def run_drift_job(
    store: ArtifactStore,
    config: DriftJobConfig,
    *,
    read_window: Callable[[ArtifactStore, str, datetime, datetime], pd.DataFrame],
    now: datetime | None = None,
    cache_dir: Path | None = None,
    retrain: Callable[[list[str]], bool] | None = None,
    log_store: ArtifactStore | None = None,
) -> DriftJobResult:
    """Run the drift job once.

    Args:
        store: Where the bundles live (and, without ``log_store``, the payload log, labels and reports).
        config: Job parameters.
        read_window: Reads the payload log of a model between two times (``payload_log.read_payload_log``).
        now: End of the window (default: the current time).
        cache_dir: Local cache for bundles.
        retrain: Starts retraining with the reasons; returns whether a run was started. None: log only.
        log_store: Where the payload log, labels and reports live, when apart from the model store.

    Returns:
        The result.
    """
    started = time.monotonic()
    logs = log_store or store
    end = now or datetime.now(UTC)
    start = end - timedelta(hours=config.window_hours)
    registry = ModelRegistry(store, config.model_name)
    production = registry.get_alias("production")
    labels = load_labels(logs)
    # With labels, realised quality needs the last LABEL_HISTORY of predictions: read the log once and take the
    # drift window from it.
    label_start = min(start, end - LABEL_HISTORY) if len(labels) else start
    label_window = read_window(logs, config.model_name, label_start, end)
    window = label_window[label_window["scored_at"] >= start] if label_start < start else label_window
    LOG.info("payload log %s..%s: %d rows", start.isoformat(), end.isoformat(), len(window))
    versions = sorted(set(window["model_version"].astype(str))) if len(window) else []
    if production is not None and production["version"] not in versions:
        versions.append(str(production["version"]))
    if not versions:
        raise LookupError(f"no production model for {config.model_name} in {store.uri()} and no logged predictions")
    cache = cache_dir or Path(tempfile.mkdtemp(prefix="fraud-drift-"))
    reports = []
    for version in versions:
        bundle = registry.load(version, cache)
        current = window[window["model_version"].astype(str) == version] if len(window) else window
        stamp = f"{end:%Y%m%dT%H%M%SZ}"
        with tempfile.TemporaryDirectory() as tmp:
            html = Path(tmp) / "report.html"
            drift = compute_drift(
                bundle.reference,
                current,
                min_rows=config.min_rows,
                drift_share=config.drift_share,
                max_rows=config.max_rows,
                report_path=html,
            )
            key = None
            if html.exists():
                key = f"reports/drift/{config.model_name}/{stamp}-{version}.html"
                logs.write_bytes(key, html.read_bytes())
        preds = label_window[label_window["model_version"].astype(str) == version] if len(label_window) else window
        quality = realised_quality(preds, labels, end, identifier_key=config.identifier_key) if len(labels) else []
        estimate = estimated_precision(current).get(version, float("nan")) if len(current) else float("nan")
        reports.append(VersionReport(version, drift, quality, estimate, key))
    reasons = _retrain_reasons(reports, config)
    started_run = False
    for reason in reasons:
        LOG.warning("retrain trigger: %s", reason)
    if reasons and retrain is not None:
        started_run = retrain(reasons)
    elif reasons:
        LOG.warning("retraining not configured (no Kubeflow endpoint): start it by hand with `fraud pipeline submit`")
    result = DriftJobResult(config.model_name, start, end, reports, reasons, started_run, time.monotonic() - started)
    logs.write_bytes(
        f"reports/drift/{config.model_name}/{end:%Y%m%dT%H%M%SZ}.json",
        json.dumps(result.as_dict(), indent=2, default=str).encode(),
    )
    return result


def _retrain_reasons(reports: list[VersionReport], config: DriftJobConfig) -> list[str]:
    reasons = []
    for report in reports:
        if config.retrain_on_drift and report.drift.dataset_drifted:
            drifted = [f.column for f in report.drift.features if f.drifted]
            reasons.append(
                f"{report.model_version}: dataset drift ({report.drift.drifted_share:.0%} of features: "
                f"{', '.join(drifted)})"
            )
        mature = [q for q in report.quality if q.maturity != "all" and not math.isnan(q.average_precision)]
        if mature:
            most = max(mature, key=lambda q: int(q.maturity.rstrip("d")))
            if most.average_precision < config.ap_floor:
                reasons.append(
                    f"{report.model_version}: realised AP {most.average_precision:.3f} over {most.maturity}-mature "
                    f"labels is below the floor {config.ap_floor}"
                )
    return reasons


def compare_files(
    baseline: pd.DataFrame,
    new: pd.DataFrame,
    *,
    min_rows: int = 200,
    drift_share: float = 0.3,
    report_path: Path | None,
) -> DriftResult:
    """Compare two raw-transaction or feature frames directly (the original ``--baseline-data/--new-data`` shape).

    Raw transactions are turned into features first; a score column is compared when both have one.

    Args:
        baseline: Baseline frame.
        new: New frame.
        min_rows: Smallest frame judged.
        drift_share: Share of drifted features that makes the dataset drifted.
        report_path: HTML report destination.

    Returns:
        The drift result.
    """
    from fraud_detection.features.offline import build_features

    frames = []
    for frame in (baseline, new):
        if set(schema.FEATURES) <= set(frame.columns):
            frames.append(frame)
        else:
            frames.append(build_features(schema.validate_transactions(frame)))
    return compute_drift(
        frames[0],
        frames[1],
        min_rows=min_rows,
        drift_share=drift_share,
        report_path=report_path,
        score_column=SCORE_COLUMN,
    )


def read_frame(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file (raw transactions keep contract names via the handbook mapping).

    Args:
        path: The file.

    Returns:
        The frame.
    """
    path = Path(path)
    if not path.exists():
        raise schema.SchemaError(f"input {path}: no such file")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(io.StringIO(path.read_text()))
    return df.rename(columns={k: v for k, v in schema.HANDBOOK_COLUMN_MAP.items() if k in df.columns})
