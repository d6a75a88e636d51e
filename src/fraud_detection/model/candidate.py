"""Train a candidate on a window and write it as a bundle."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from fraud_detection.data import schema
from fraud_detection.data.splits import TRAINING_SPLIT
from fraud_detection.data.window import HoldoutSplit, holdout_split
from fraud_detection.model.bundle import TrainingLineage, data_fingerprint, reference_sample, write_bundle
from fraud_detection.model.curves import plot_curves
from fraud_detection.model.metrics import compute_metrics, rounded
from fraud_detection.model.train import TrainConfig, TrainResult, sample_weights, score, scorer_for, train

LOG = logging.getLogger(__name__)
#: Rows of the drift reference sample (:func:`~fraud_detection.model.bundle.reference_sample`'s default).
REFERENCE_ROWS = 5_000


def train_bundle(
    features: pd.DataFrame | HoldoutSplit,
    out_dir: Path,
    *,
    config: TrainConfig,
    model_name: str,
    test_days: int = TRAINING_SPLIT.test,
    delay_days: int = TRAINING_SPLIT.delay,
    train_days: int | None = TRAINING_SPLIT.train,
    source: str = "",
    report_dir: Path | None = None,
    sampling: dict[str, float] | None = None,
) -> tuple[dict[str, Any], HoldoutSplit]:
    """Train on the older data, evaluate on the held-out window, write a bundle (and curves).

    Args:
        features: Labelled feature frame, or a split already made (e.g. read in bounded memory by
            :func:`fraud_detection.data.sampled_split.read_sampled_holdout`, whose training rows carry weights; the
            day arguments are then ignored). With weights, the drift reference sample is drawn in proportion to
            them, so it stands for the unsampled population.
        out_dir: Bundle directory to write.
        config: Training parameters.
        model_name: Served model name.
        test_days: Held-out test days.
        delay_days: Delay between training and test (the label delay).
        train_days: Most recent days of training data before the delay window (None for all).
        source: Description of the raw data for lineage.
        report_dir: Where to write ROC/PR curves (skipped when None).
        sampling: How the training rows were sampled, recorded with the parameters (e.g. the legitimate rate).

    Returns:
        (metadata as a dict, the split used).
    """
    split = (
        features if isinstance(features, HoldoutSplit) else holdout_split(features, test_days, delay_days, train_days)
    )
    result: TrainResult = train(split.train, config)
    scorer = scorer_for(result.model, result.threshold)  # the served engine, compiled once for both frames
    test_scores = score(scorer, split.test)
    metrics = compute_metrics(split.test, test_scores, result.threshold, config.review_cost)
    LOG.info("test metrics: %s", rounded(metrics.as_dict()))
    if report_dir is not None and split.test[schema.LABEL].nunique() == 2:
        plot_curves(split.test[schema.LABEL].to_numpy(), test_scores, Path(report_dir), title=config.model_type)
    weights = sample_weights(split.train)
    if weights is None:
        reference = reference_sample(split.train, score(scorer, split.train))
    else:  # drawn with replacement in proportion to the weights: the population's mix of fraud and legitimate rows
        rows = split.train.sample(n=REFERENCE_ROWS, replace=True, weights=weights, random_state=0)
        reference = reference_sample(rows, score(scorer, rows), n=REFERENCE_ROWS)
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
        reference=reference,
        metrics=metrics.as_dict(),
        validation_metrics=result.validation.as_dict(),
        params={**asdict(config), **({"sampling": sampling} if sampling else {})},
    )
    return meta.model_dump(), split
