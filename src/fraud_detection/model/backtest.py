"""Prequential backtest: rolling train/delay/test folds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fraud_detection.data import schema
from fraud_detection.data.splits import BACKTEST_SPLIT, _utc_day, train_delay_test_split
from fraud_detection.model.metrics import METRIC_NAMES, FraudMetrics, compute_metrics

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldResult:
    """One backtest fold.

    Attributes:
        train_start: First training day (ISO date).
        test_start: First test day (ISO date).
        n_train: Training rows.
        n_test: Test rows.
        metrics: The fold's metrics.
    """

    train_start: str
    test_start: str
    n_train: int
    n_test: int
    metrics: FraudMetrics


@dataclass(frozen=True)
class BacktestResult:
    """Prequential backtest over rolling folds.

    Attributes:
        model_type: Model evaluated.
        folds: Per-fold results.
        mean: Mean of each metric over folds.
        std: Standard deviation of each metric over folds.
        protocol: The split parameters.
    """

    model_type: str
    folds: list[FoldResult]
    mean: dict[str, float]
    std: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (per-fold and mean/std metrics)."""
        return {
            "model_type": self.model_type,
            "protocol": self.protocol,
            "folds": [
                {
                    "train_start": f.train_start,
                    "test_start": f.test_start,
                    "n_train": f.n_train,
                    "n_test": f.n_test,
                    **f.metrics.as_dict(),
                }
                for f in self.folds
            ],
            "mean": self.mean,
            "std": self.std,
        }


def backtest(
    frame: pd.DataFrame,
    fit_and_score: Callable[[pd.DataFrame, pd.DataFrame], tuple[np.ndarray, float]],
    *,
    model_type: str,
    start: pd.Timestamp | str,
    train_days: int = BACKTEST_SPLIT.train,
    delay_days: int = BACKTEST_SPLIT.delay,
    test_days: int = BACKTEST_SPLIT.test,
    folds: int = 4,
    step_days: int = 7,
    review_cost: float = 10.0,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Prequential backtest: train on each fold's window, score its test window after the delay.

    Args:
        frame: Labelled feature frame.
        fit_and_score: Trains on a frame and returns (test scores, threshold) for the second frame;
            :func:`fraud_detection.model.train.fit_and_score_fn` scores with the served engine.
        model_type: Name recorded in the result.
        start: First training day of the first fold.
        train_days: Training window length.
        delay_days: Delay window length (never trained on).
        test_days: Test window length.
        folds: Number of folds.
        step_days: Days between fold starts.
        review_cost: Cost of a false alert.
        progress: Called with the fold index after each fold.

    Returns:
        Per-fold metrics and their mean and standard deviation.

    Raises:
        ValueError: A fold has no training or no test data.
    """
    first = _utc_day(start)
    results = []
    for i in range(folds):
        split = train_delay_test_split(
            frame, first + pd.Timedelta(days=i * step_days), train_days, delay_days, test_days
        )
        if split.train.empty or split.test.empty or split.train[schema.LABEL].sum() == 0:
            raise ValueError(
                f"fold {i}: training window from {split.train_start.date()} or test window from "
                f"{split.test_start.date()} has no data or no fraud; check --start and the data's date range"
            )
        scores, threshold = fit_and_score(split.train, split.test)
        metrics = compute_metrics(split.test, scores, threshold, review_cost)
        LOG.info("fold %d: %s", i, {k: round(v, 4) for k, v in metrics.as_dict().items()})
        results.append(
            FoldResult(
                str(split.train_start.date()),
                str(split.test_start.date()),
                len(split.train),
                len(split.test),
                metrics,
            )
        )
        if progress is not None:
            progress(i)
    names = list(results[0].metrics.as_dict())
    table = np.array([[r.metrics.as_dict()[n] for n in names] for r in results])
    return BacktestResult(
        model_type=model_type,
        folds=results,
        mean=dict(zip(names, map(float, np.nanmean(table, axis=0)), strict=True)),
        std=dict(zip(names, map(float, np.nanstd(table, axis=0)), strict=True)),
        protocol={
            "start": str(first.date()),
            "train_days": train_days,
            "delay_days": delay_days,
            "test_days": test_days,
            "folds": folds,
            "step_days": step_days,
        },
    )


def summarise(results: Sequence[BacktestResult]) -> pd.DataFrame:
    """Table of mean ± std per model for printing.

    Args:
        results: Backtests of several models.

    Returns:
        One row per model, one column per headline metric.
    """
    rows = {r.model_type: {m: f"{r.mean[m]:.3f} ± {r.std[m]:.3f}" for m in METRIC_NAMES} for r in results}
    return pd.DataFrame.from_dict(rows, orient="index")
