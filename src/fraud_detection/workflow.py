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
from fraud_detection.evaluate import FraudMetrics, GateDecision, compute_metrics, plot_curves, promotion_gate
from fraud_detection.registry import ModelRegistry
from fraud_detection.store import atomic_file
from fraud_detection.train import TrainConfig, TrainResult, score, train

LOG = logging.getLogger(__name__)


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


def evaluate_bundle(bundle_dir: Path, test: pd.DataFrame) -> FraudMetrics:
    """Score a labelled frame with a bundle at its own threshold.

    Args:
        bundle_dir: Bundle directory.
        test: Labelled feature frame.

    Returns:
        The metrics.
    """
    bundle = load_bundle(bundle_dir)
    scores = score(bundle.model, test)
    return compute_metrics(test, scores, bundle.metadata.threshold, bundle.metadata.review_cost)


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
    """

    registered: bool
    version: str
    production_version: str | None
    decision: GateDecision
    candidate_metrics: dict[str, float]
    production_metrics: dict[str, float] | None


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
    candidate = load_bundle(bundle_dir)
    cand_metrics = compute_metrics(
        test, score(candidate.model, test), candidate.metadata.threshold, candidate.metadata.review_cost
    ).as_dict()
    prod_metrics: dict[str, float] | None = None
    current = registry.get_alias(alias)
    if current is not None:
        prod = registry.load(alias, cache_dir)
        prod_metrics = compute_metrics(
            test, score(prod.model, test), prod.metadata.threshold, prod.metadata.review_cost
        ).as_dict()
    decision = promotion_gate(cand_metrics, prod_metrics, min_ap_gain=min_ap_gain, max_cp_loss=max_cp_loss)
    version = candidate.metadata.version
    for reason in decision.reasons:
        LOG.info("gate: %s", reason)
    if not decision.promote:
        return RegistrationResult(
            False, version, current["version"] if current else None, decision, cand_metrics, prod_metrics
        )
    registry.publish(Path(bundle_dir))
    registry.set_alias(alias, version)
    return RegistrationResult(True, version, version, decision, cand_metrics, prod_metrics)


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
