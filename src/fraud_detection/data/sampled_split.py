"""The training step's hold-out split read from a feature dataset in bounded memory.

The same days as :func:`fraud_detection.data.window.holdout_split` on the whole frame: the span comes from the
event-time column alone, the training window is read as a weighted sample (:mod:`fraud_detection.data.sampling`),
the delay window only for its frauds (all the split needs of it: which cards are known compromised) and the test
window in full, never sampled. Since every fraud is kept, the cards removed from the test window are the same too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fraud_detection.data import schema
from fraud_detection.data.feature_dataset import open_features, time_span
from fraud_detection.data.sampling import WEIGHT, SampleSpec, WeightedSample, read_sample, read_window
from fraud_detection.data.splits import TRAINING_SPLIT, train_delay_test_split
from fraud_detection.data.window import HoldoutSplit, training_span

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampledHoldout:
    """A hold-out split whose training rows are a weighted sample.

    Attributes:
        split: Training rows (with :data:`~fraud_detection.data.sampling.WEIGHT` when sampled) and the full test
            window.
        sample: How the training window was sampled (rate, window and scanned row counts).
    """

    split: HoldoutSplit
    sample: WeightedSample

    @property
    def population_rows(self) -> float:
        """The training window's row count the sample stands for (its weights' sum)."""
        train = self.split.train
        return float(train[WEIGHT].sum()) if WEIGHT in train.columns else float(len(train))


def read_sampled_holdout(
    path: str | Path,
    spec: SampleSpec,
    *,
    test_days: int = TRAINING_SPLIT.test,
    delay_days: int = TRAINING_SPLIT.delay,
    train_days: int | None = TRAINING_SPLIT.train,
) -> SampledHoldout:
    """Read the hold-out split of a feature Parquet file or day-partitioned directory, sampling the training window.

    Args:
        path: Features written by ``fraud features`` (a file) or ``fraud features --engine spark`` (a directory).
        spec: How to sample the training window's legitimate rows.
        test_days: Days in the test window.
        delay_days: Days between training and test.
        train_days: Days of training data before the delay window (the most recent ones); None for all.

    Returns:
        The split and the sample's description.

    Raises:
        SchemaError: Not a readable feature dataset.
        ValueError: The data spans too few days (the message of :func:`~fraud_detection.data.window.holdout_split`).
    """
    dataset = open_features(path)
    start, days = training_span(*time_span(dataset), train_days, delay_days, test_days)
    train_end = start + pd.Timedelta(days=days)
    test_start = train_end + pd.Timedelta(days=delay_days)
    test_end = test_start + pd.Timedelta(days=test_days)
    sample = read_sample(dataset, start, train_end, spec)
    delay_frauds = read_window(dataset, train_end, test_start, frauds_only=True)
    test = read_window(dataset, test_start, test_end)
    parts = [sample.frame, delay_frauds, test]
    if WEIGHT in sample.frame.columns:
        parts = [sample.frame, delay_frauds.assign(**{WEIGHT: 1.0}), test.assign(**{WEIGHT: 1.0})]
    frame = pd.concat(parts, ignore_index=True)
    split = train_delay_test_split(frame, start, days, delay_days, test_days)
    test_rows = split.test.drop(columns=[WEIGHT], errors="ignore")
    LOG.info(
        "hold-out split of %s: %d training rows (%d fraud) for about %.0f, %d test rows",
        path,
        len(split.train),
        int(split.train[schema.LABEL].sum()),
        sample.frame[WEIGHT].sum() if WEIGHT in sample.frame.columns else len(sample.frame),
        len(test_rows),
    )
    return SampledHoldout(split=HoldoutSplit(train=split.train, test=test_rows), sample=sample)
