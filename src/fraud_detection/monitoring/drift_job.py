"""The drift job: drift of the latest payload-log window, realised quality from labels, report, retrain trigger.

One run compares the latest payload-log window with the reference, measures realised quality from delayed labels,
writes the Evidently report to the store, and can trigger retraining; the caller pushes the gauges.

``python -m monitoring.drift_job`` (the CronJob) and ``fraud drift`` both call :func:`run_drift_job`.
"""

from __future__ import annotations

import inspect
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
from typing import Any, cast

import pandas as pd

from fraud_detection.data import schema
from fraud_detection.model.bundle import SCORE_COLUMN, BundleIntegrityError
from fraud_detection.model.registry import ModelRegistry, RegistryError
from fraud_detection.monitoring.drift import DriftResult, compute_drift
from fraud_detection.monitoring.labels import QualityRow, estimated_precision, load_labels, realised_quality
from fraud_detection.store.base import ArtifactStore

LOG = logging.getLogger(__name__)
#: How far back logged predictions are joined with delayed labels.
LABEL_HISTORY = timedelta(days=60)
#: Largest magnitude a logged feature or score may have; beyond it (or non-finite, or outside the feature's contract
#: range) the row is dropped from the run and counted: a 1e308 amount answered 200 must not break every later run.
MAX_ABS_VALUE = 1e12
#: Payload-log columns a row needs to be analysed.
_ROW_COLUMNS: tuple[str, ...] = ("scored_at", "model_version")


class NothingToMonitorError(LookupError):
    """No production model and no logged predictions: nothing to analyse (a clean exit, not a failure)."""


@dataclass(frozen=True)
class SkippedObject:
    """An object a run could not use and skipped.

    Attributes:
        kind: ``payload_log`` (a partition object), ``labels`` (a label object) or ``model_version`` (logged rows of
            a version not in the registry, or of a non-production version whose bundle is incomplete, tampered or
            wrongly signed: never unpickled).
        key: The store key, or the version.
        reason: Why, in one line.
    """

    kind: str
    key: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """Plain dict."""
        return {"kind": self.kind, "key": self.key, "reason": self.reason}


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
        skipped: Objects skipped because they could not be read or used (each also logged with its key).
        dropped_rows: Payload-log rows dropped for a non-finite or out-of-range feature or score.
    """

    model_name: str
    window_start: datetime
    window_end: datetime
    versions: list[VersionReport]
    retrain_reasons: list[str]
    retrain_started: bool
    duration_seconds: float
    skipped: list[SkippedObject] = field(default_factory=list)
    dropped_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "model_name": self.model_name,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "retrain_reasons": self.retrain_reasons,
            "retrain_started": self.retrain_started,
            "duration_seconds": self.duration_seconds,
            "skipped": [o.as_dict() for o in self.skipped],
            "dropped_rows": self.dropped_rows,
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
        read_window: Reads the payload log of a model between two times (``payload_reader.read_payload_log``).
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
    skipped: list[SkippedObject] = []

    def skip(kind: str, key: str, reason: str) -> None:
        LOG.warning("skipped %s object %s: %s", kind, key, reason)
        skipped.append(SkippedObject(kind, key, reason))

    labels = load_labels(logs, on_skip=lambda key, reason: skip("labels", key, reason))
    # With labels, realised quality needs the last LABEL_HISTORY of predictions: read the log once and take the
    # drift window from it.
    label_start = min(start, end - LABEL_HISTORY) if len(labels) else start
    label_window = _read_log(read_window, logs, config.model_name, label_start, end, skip)
    label_window, dropped = _drop_bad_rows(label_window)
    window = label_window[label_window["scored_at"] >= start] if label_start < start else label_window
    LOG.info("payload log %s..%s: %d rows", start.isoformat(), end.isoformat(), len(window))
    versions = sorted(set(window["model_version"].astype(str))) if len(window) else []
    if production is not None and production["version"] not in versions:
        versions.append(str(production["version"]))
    if not versions:
        raise NothingToMonitorError(
            f"no production model for {config.model_name} in {store.uri()} and no logged predictions"
        )
    known = set(registry.versions())
    cache = cache_dir or Path(tempfile.mkdtemp(prefix="fraud-drift-"))
    reports = []
    for version in versions:
        if version not in known:
            rows = int((window["model_version"].astype(str) == version).sum()) if len(window) else 0
            skip("model_version", version, f"{rows} logged row(s) of a version not in the registry")
            continue
        try:
            bundle = registry.load(version, cache)
        except (BundleIntegrityError, RegistryError, KeyError, ValueError) as exc:
            if production is not None and version == str(production["version"]):
                raise  # the served model itself is broken or forged: fail the run, visibly
            rows = int((window["model_version"].astype(str) == version).sum()) if len(window) else 0
            skip("model_version", version, f"{rows} logged row(s) of a version that cannot be loaded: {_one_line(exc)}")
            continue
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
    result = DriftJobResult(
        config.model_name,
        start,
        end,
        reports,
        reasons,
        started_run,
        time.monotonic() - started,
        skipped=skipped,
        dropped_rows=dropped,
    )
    logs.write_bytes(
        f"reports/drift/{config.model_name}/{end:%Y%m%dT%H%M%SZ}.json",
        json.dumps(result.as_dict(), indent=2, default=str).encode(),
    )
    return result


class _OneObject:
    """A read-only view of one object of a store, so that a reader of many objects can be run on each alone.

    Duck-typed (what a payload-log reader calls: ``list``, ``read_bytes``, ``uri``); a Parquet object is checked
    for its magic bytes before any reader parses it, so a truncated or empty object fails with its key. A failure of
    the store itself is kept in ``store_error``: that fails the run (the data is not bad, the store is unreachable).
    """

    def __init__(self, store: ArtifactStore, key: str) -> None:
        self._store = store
        self._key = key
        self.store_error: Exception | None = None

    def read_bytes(self, key: str) -> bytes:
        if key != self._key:
            raise KeyError(key)
        try:
            data = self._store.read_bytes(key)
        except KeyError:
            raise
        except Exception as exc:
            self.store_error = exc
            raise
        if key.endswith(".parquet"):
            schema.check_parquet_bytes(data, key)
        return data

    def list(self, prefix: str) -> list[str]:
        return [self._key] if self._key and self._key.startswith(prefix) else []

    def uri(self, key: str = "") -> str:
        return self._store.uri(key)


def _read_log(
    read_window: Callable[..., pd.DataFrame],
    store: ArtifactStore,
    model_name: str,
    start: datetime,
    end: datetime,
    skip: Callable[[str, str, str], None],
) -> pd.DataFrame:
    """Read the payload log object by object with ``read_window``; an object that fails is skipped and named.

    A reader that skips bad objects itself (an ``on_skip`` parameter, or the keys in ``attrs["skipped_keys"]``) has
    its skips counted the same way. A failing store still fails the run.
    """
    from fraud_detection.monitoring.payload_columns import PAYLOAD_PREFIX

    reported: dict[str, str] = {}
    kwargs: dict[str, Any] = {}
    try:
        if "on_skip" in inspect.signature(read_window).parameters:
            kwargs["on_skip"] = lambda key, reason: reported.setdefault(key, _one_line(reason))
    except (TypeError, ValueError):  # no signature (a builtin or C callable)
        pass
    frames = []
    for key in store.list(f"{PAYLOAD_PREFIX}/{model_name}/"):
        view = _OneObject(store, key)
        try:
            frame = read_window(cast(ArtifactStore, view), model_name, start, end, **kwargs)
            missing = [c for c in _ROW_COLUMNS if c not in frame.columns]
            if missing and len(frame):
                raise schema.SchemaError(f"missing column(s): {', '.join(missing)}")
        except Exception as exc:
            if view.store_error is not None:
                raise
            reported[key] = _one_line(exc)
            continue
        for bad in frame.attrs.get("skipped_keys", []):
            reported.setdefault(str(bad), "unreadable (see the payload-log warning)")
        if len(frame):
            frames.append(frame)
    for key, reason in reported.items():
        skip("payload_log", key, reason)
    if not frames:
        empty = read_window(cast(ArtifactStore, _OneObject(store, "")), model_name, start, end)
        empty.attrs.clear()
        return empty
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame.attrs.clear()
    order = [c for c in ("scored_at", "request_id", "row") if c in frame.columns]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def _one_line(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _drop_bad_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop rows with a non-finite, out-of-range or absurdly large feature or score; log and count them."""
    if frame.empty:
        return frame, 0
    bad = pd.Series(False, index=frame.index)
    reasons = {}
    specs = {spec.name: spec for spec in schema.FEATURE_SPECS}
    for column in (*schema.FEATURES, SCORE_COLUMN):
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        col_bad = ~values.between(-MAX_ABS_VALUE, MAX_ABS_VALUE)  # NaN and +-inf are not between
        spec = specs.get(column)
        low, high = (spec.min_value, spec.max_value) if spec is not None else (0.0, 1.0)
        if low is not None:
            col_bad |= values < low
        if high is not None:
            col_bad |= values > high
        if col_bad.any():
            reasons[column] = int(col_bad.sum())
            bad |= col_bad
    dropped = int(bad.sum())
    if dropped:
        LOG.warning(
            "dropped %d payload-log row(s) with a non-finite or out-of-range value (%s)",
            dropped,
            ", ".join(f"{c}: {n}" for c, n in reasons.items()),
        )
        frame = frame[~bad].reset_index(drop=True)
    return frame, dropped


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
