"""The training workflow's steps, shared by the CLI and the Kubeflow components.

Each step takes and returns plain values or files, so a KFP component is a thin I/O adapter around one call.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraud_detection import schema
from fraud_detection.bundle import (
    TrainingLineage,
    data_fingerprint,
    load_bundle,
    reference_sample,
    write_bundle,
)
from fraud_detection.evaluate import GateDecision, compute_metrics, plot_curves, promotion_gate
from fraud_detection.registry import ModelRegistry
from fraud_detection.store import atomic_file
from fraud_detection.train import TrainConfig, TrainResult, score, train

LOG = logging.getLogger(__name__)


def training_window(
    frame: pd.DataFrame,
    *,
    window_end: str = "",
    window_days: int = 0,
    train_days: int = 28,
    test_days: int = 14,
    delay_days: int = 7,
    min_rows: int = 1_000,
) -> pd.DataFrame:
    """Cut the data window and check it can train and test a model.

    Args:
        frame: Validated raw transactions.
        window_end: Exclusive end of the window (ISO date/time, UTC); empty for the day after the last event.
        window_days: Days in the window before ``window_end``; 0 for all the data.
        train_days: Most recent days the training step will train on (0 for all before the delay window).
        test_days: Held-out test days the training step will use.
        delay_days: Label delay between training and test.
        min_rows: Fewest transactions accepted in the window.

    Returns:
        The transactions of the window.

    Raises:
        SchemaError: The window is too small, too short, or lacks fraud or legitimate rows; the message says which.
    """
    times = frame[schema.EVENT_TIME]
    if window_end or window_days:
        end = pd.Timestamp(window_end) if window_end else times.max().floor("D") + pd.Timedelta(days=1)
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        start = end - pd.Timedelta(days=window_days) if window_days else times.min()
        frame = frame[(times >= start) & (times < end)].reset_index(drop=True)
    if len(frame) < min_rows:
        raise schema.SchemaError(f"the data window holds {len(frame)} transaction(s); min_rows is {min_rows}")
    try:
        split = holdout_split(frame, test_days, delay_days, train_days or None)
    except ValueError as exc:
        raise schema.SchemaError(str(exc)) from exc
    for name, part in (("training", split.train), ("test", split.test)):
        if part[schema.LABEL].nunique() < 2:
            raise schema.SchemaError(f"column {schema.LABEL!r}: the {name} window needs both fraud and legitimate rows")
    return frame


@dataclass(frozen=True)
class HoldoutSplit:
    """Train and test frames separated by a delay window.

    Attributes:
        train: Rows before the delay window.
        test: The last ``test_days`` days, without cards with fraud known by each test day.
    """

    train: pd.DataFrame
    test: pd.DataFrame


def holdout_split(
    features: pd.DataFrame, test_days: int = 14, delay_days: int = 7, train_days: int | None = 28
) -> HoldoutSplit:
    """Hold out the latest days as a test set, after a delay window never trained on.

    Args:
        features: Labelled feature frame.
        test_days: Days in the test window.
        delay_days: Days between training and test.
        train_days: Days of training data before the delay window (the most recent ones); None for all.

    Returns:
        The split.

    Raises:
        ValueError: The data spans too few days.
    """
    from fraud_detection.evaluate import train_delay_test_split

    first = features[schema.EVENT_TIME].min().floor("D")
    last = features[schema.EVENT_TIME].max().floor("D")
    total_days = int((last - first).days) + 1
    available = total_days - delay_days - test_days
    if available < 2:
        raise ValueError(
            f"the data spans {total_days} day(s); training needs at least {delay_days + test_days + 2} "
            f"(delay {delay_days} + test {test_days} + 2 training days)"
        )
    days = available if train_days is None else min(train_days, available)
    start = first + pd.Timedelta(days=available - days)
    split = train_delay_test_split(features, start, days, delay_days, test_days)
    return HoldoutSplit(train=split.train, test=split.test)


def train_bundle(
    features: pd.DataFrame,
    out_dir: Path,
    *,
    config: TrainConfig,
    model_name: str,
    test_days: int = 14,
    delay_days: int = 7,
    train_days: int | None = 28,
    source: str = "",
    report_dir: Path | None = None,
) -> tuple[dict[str, Any], HoldoutSplit]:
    """Train on the older data, evaluate on the held-out window, write a bundle (and curves).

    Args:
        features: Labelled feature frame.
        out_dir: Bundle directory to write.
        config: Training parameters.
        model_name: Served model name.
        test_days: Held-out test days.
        delay_days: Delay between training and test (the label delay).
        train_days: Most recent days of training data before the delay window (None for all).
        source: Description of the raw data for lineage.
        report_dir: Where to write ROC/PR curves (skipped when None).

    Returns:
        (metadata as a dict, the split used).
    """
    split = holdout_split(features, test_days, delay_days, train_days)
    result: TrainResult = train(split.train, config)
    test_scores = score(result.model, split.test)
    metrics = compute_metrics(split.test, test_scores, result.threshold, config.review_cost)
    LOG.info("test metrics: %s", _round(metrics.as_dict()))
    if report_dir is not None and split.test[schema.LABEL].nunique() == 2:
        plot_curves(split.test[schema.LABEL].to_numpy(), test_scores, Path(report_dir), title=config.model_type)
    train_scores = score(result.model, split.train)
    times = split.train[schema.EVENT_TIME]
    meta = write_bundle(
        Path(out_dir),
        model=result.model,
        model_name=model_name,
        model_type=config.model_type,
        threshold=result.threshold,
        review_cost=config.review_cost,
        calibration={"a": result.model.a, "b": result.model.b},
        training=TrainingLineage(
            data_fingerprint=data_fingerprint(split.train),
            n_rows=len(split.train),
            n_fraud=int(split.train[schema.LABEL].sum()),
            start=times.min().isoformat(),
            end=times.max().isoformat(),
            label_delay_days=delay_days,
            source=source,
        ),
        reference=reference_sample(split.train, train_scores),
        metrics=metrics.as_dict(),
        validation_metrics=result.validation.as_dict(),
        params=asdict(config),
    )
    return meta.model_dump(), split


@dataclass(frozen=True)
class Comparison:
    """A candidate and production scored on the same labelled rows, and the promotion gate's decision.

    Attributes:
        version: The candidate's version id.
        threshold: The candidate's decision threshold.
        scores: The candidate's scores of the rows.
        candidate: Candidate metrics.
        production: Production metrics on the same rows (None without a production model).
        production_version: Production's version (None without one).
        decision: The gate's decision.
    """

    version: str
    threshold: float
    scores: np.ndarray
    candidate: dict[str, float]
    production: dict[str, float] | None
    production_version: str | None
    decision: GateDecision


def compare_with_production(
    registry: ModelRegistry,
    bundle_dir: Path,
    test: pd.DataFrame,
    *,
    cache_dir: Path,
    alias: str = "production",
    min_ap_gain: float = 0.0,
    max_cp_loss: float = 0.0,
) -> Comparison:
    """Score the candidate and the model behind ``alias`` on the same rows and apply the promotion gate.

    Args:
        registry: The model registry.
        bundle_dir: Candidate bundle.
        test: Labelled test feature frame.
        cache_dir: Local cache for the production bundle.
        alias: The incumbent's alias.
        min_ap_gain: Required AP improvement over production.
        max_cp_loss: Tolerated CP@100 loss.

    Returns:
        Both models' metrics and the decision.
    """
    candidate = load_bundle(bundle_dir)
    meta = candidate.metadata
    scores = score(candidate.model, test)
    cand = compute_metrics(test, scores, meta.threshold, meta.review_cost).as_dict()
    prod: dict[str, float] | None = None
    production_version: str | None = None
    if registry.get_alias(alias) is not None:
        incumbent = registry.load(alias, cache_dir)
        inc = incumbent.metadata
        prod = compute_metrics(test, score(incumbent.model, test), inc.threshold, inc.review_cost).as_dict()
        production_version = inc.version  # the version these metrics belong to, even if the alias moved since
    decision = promotion_gate(cand, prod, min_ap_gain=min_ap_gain, max_cp_loss=max_cp_loss)
    for reason in decision.reasons:
        LOG.info("gate: %s", reason)
    return Comparison(meta.version, meta.threshold, scores, cand, prod, production_version, decision)


@dataclass(frozen=True)
class CandidateReport:
    """What the evaluation step shows: the comparison, loggable metrics, curves and an HTML page.

    Attributes:
        comparison: Candidate vs production and the gate's decision.
        metrics: The finite candidate metrics, and production's prefixed ``production_``.
        roc: ROC curve thinned for the Kubeflow UI: (false-positive rates, true-positive rates, thresholds).
        confusion: Confusion matrix at the candidate's threshold, rows and columns (legitimate, fraud).
        html: Self-contained HTML report with the verdict, metrics side by side and the ROC and PR curves.
    """

    comparison: Comparison
    metrics: dict[str, float]
    roc: tuple[list[float], list[float], list[float]]
    confusion: list[list[int]]
    html: str


def report_candidate(
    registry: ModelRegistry,
    bundle_dir: Path,
    test: pd.DataFrame,
    *,
    work_dir: Path,
    min_ap_gain: float = 0.0,
    max_cp_loss: float = 0.0,
) -> CandidateReport:
    """Compare the candidate with production and build the evaluation step's metrics, curves and report.

    Args:
        registry: The model registry.
        bundle_dir: Candidate bundle.
        test: Labelled test feature frame.
        work_dir: Scratch directory (production bundle cache, curve images).
        min_ap_gain: Required AP improvement over production.
        max_cp_loss: Tolerated CP@100 loss.

    Returns:
        The report.
    """
    from sklearn.metrics import confusion_matrix

    from fraud_detection.evaluation_report import evaluation_html, roc_points

    c = compare_with_production(
        registry, bundle_dir, test, cache_dir=work_dir / "cache", min_ap_gain=min_ap_gain, max_cp_loss=max_cp_loss
    )
    labels = test[schema.LABEL].to_numpy()
    images = {k: p.read_bytes() for k, p in plot_curves(labels, c.scores, work_dir / "png", c.version).items()}
    named = [*c.candidate.items(), *((f"production_{k}", v) for k, v in (c.production or {}).items())]
    return CandidateReport(
        comparison=c,
        metrics={k: float(v) for k, v in named if np.isfinite(v)},
        roc=roc_points(labels, c.scores),
        confusion=confusion_matrix(labels, c.scores >= c.threshold, labels=[0, 1]).tolist(),
        html=evaluation_html(c.version, c.decision.reasons, c.decision.promote, c.candidate, c.production, images),
    )


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of gating and registering a candidate.

    Attributes:
        registered: Whether the candidate was published and became production.
        version: The candidate's version id.
        production_version: Production after this step (candidate or the unchanged incumbent).
        decision: The gate's decision.
        candidate_metrics: Candidate metrics on the test frame.
        production_metrics: Incumbent metrics on the same frame (None without one).
        storage_uri: The published version's location in the store (KServe's ``storageUri``); empty when not
            registered.
    """

    registered: bool
    version: str
    production_version: str | None
    decision: GateDecision
    candidate_metrics: dict[str, float]
    production_metrics: dict[str, float] | None
    storage_uri: str = ""


def gate_and_register(
    registry: ModelRegistry,
    bundle_dir: Path,
    test: pd.DataFrame,
    *,
    min_ap_gain: float = 0.0,
    max_cp_loss: float = 0.0,
    cache_dir: Path,
    alias: str = "production",
) -> RegistrationResult:
    """Compare the candidate with production on the same test frame; publish and move the alias if it wins.

    Args:
        registry: The model registry.
        bundle_dir: Candidate bundle.
        test: Labelled test feature frame.
        min_ap_gain: Required AP improvement over production.
        max_cp_loss: Tolerated CP@100 loss.
        cache_dir: Local cache for the production bundle.
        alias: Alias to move when the candidate wins.

    Returns:
        What happened and why.
    """
    c = compare_with_production(
        registry, bundle_dir, test, cache_dir=cache_dir, alias=alias, min_ap_gain=min_ap_gain, max_cp_loss=max_cp_loss
    )
    if not c.decision.promote:
        return RegistrationResult(False, c.version, c.production_version, c.decision, c.candidate, c.production)
    registry.publish(Path(bundle_dir))
    registry.set_alias(alias, c.version)
    uri = registry.store.uri(registry.version_prefix(c.version)).rstrip("/")
    return RegistrationResult(True, c.version, c.version, c.decision, c.candidate, c.production, uri)


def _round(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) if np.isfinite(v) else v for k, v in values.items()}


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write JSON atomically.

    Args:
        path: Destination.
        payload: JSON-serialisable dict.

    Returns:
        The path.
    """
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str))
    return path
