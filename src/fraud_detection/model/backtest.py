"""Prequential backtest: rolling train/delay/test folds, as the Fraud Detection Handbook's chapter 5 runs them.

Each fold trains on its training window, skips the delay window, and scores its test window, from which the cards
known compromised are removed day by day (:func:`fraud_detection.data.splits.train_delay_test_split`, the
Handbook's ``get_train_test_set``). Card precision@100 is the Handbook's
(:mod:`fraud_detection.model.card_precision`). Training runs under a cap on the native thread pools
(:mod:`fraud_detection.model.threads`) and each fold records how long it took.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fraud_detection.data import schema
from fraud_detection.data.splits import BACKTEST_SPLIT, _utc_day, train_delay_test_split
from fraud_detection.model.metrics import METRIC_NAMES, FraudMetrics, compute_metrics
from fraud_detection.model.threads import available_cpus, bounded_threads

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldResult:
    """One backtest fold.

    Attributes:
        train_start: First training day (ISO date).
        test_start: First test day (ISO date).
        n_train: Training rows.
        n_test: Test rows (cards known compromised already removed).
        metrics: The fold's metrics.
        train_seconds: Wall time of the fold's ``fit_and_score`` call: fitting, calibration, threshold and the
            scoring of the test window (the fit dominates).
        train_cpu_seconds: CPU time of this process over the same call, all threads together; about
            ``train_seconds`` times the threads kept busy.
    """

    train_start: str
    test_start: str
    n_train: int
    n_test: int
    metrics: FraudMetrics
    train_seconds: float
    train_cpu_seconds: float


@dataclass(frozen=True)
class BacktestResult:
    """Prequential backtest over rolling folds.

    Attributes:
        model_type: Model evaluated.
        folds: Per-fold results.
        mean: Mean of each metric over folds.
        std: Standard deviation of each metric over folds (``train_seconds`` included).
        protocol: The split parameters, the card precision definition and the thread cap.
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
                    "train_seconds": f.train_seconds,
                    "train_cpu_seconds": f.train_cpu_seconds,
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
    threads: int | None = None,
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
        threads: Cap on the native thread pools (OpenMP, BLAS) while ``fit_and_score`` runs; None for the CPUs
            available to this process (:func:`~fraud_detection.model.threads.available_cpus`). On a machine shared
            with other jobs, fewer threads than cores avoids OpenMP threads waiting on descheduled siblings.
        progress: Called with the fold index after each fold.

    Returns:
        Per-fold metrics and training times, their mean and standard deviation.

    Raises:
        ValueError: A fold has no training or no test data, or ``threads`` is below 1.
    """
    first = _utc_day(start)
    n_threads = available_cpus() if threads is None else threads
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
        with bounded_threads(n_threads):
            wall, cpu = time.perf_counter(), time.process_time()
            scores, threshold = fit_and_score(split.train, split.test)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        metrics = compute_metrics(split.test, scores, threshold, review_cost)
        LOG.info(
            "fold %d: trained in %.1f s (%.1f s CPU, %d threads): %s",
            i,
            wall,
            cpu,
            n_threads,
            {k: round(v, 4) for k, v in metrics.as_dict().items()},
        )
        results.append(
            FoldResult(
                str(split.train_start.date()),
                str(split.test_start.date()),
                len(split.train),
                len(split.test),
                metrics,
                train_seconds=wall,
                train_cpu_seconds=cpu,
            )
        )
        if progress is not None:
            progress(i)
    names = [*results[0].metrics.as_dict(), "train_seconds"]
    table = np.array([[*r.metrics.as_dict().values(), r.train_seconds] for r in results])
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
            "card_precision": "handbook: top-k cards per day, cards detected earlier removed, known compromised "
            "cards removed from the test days",
            "threads": n_threads,
        },
    )


def summarise(results: Sequence[BacktestResult]) -> pd.DataFrame:
    """Table of mean ± std per model for printing, with the training time per fold.

    Args:
        results: Backtests of several models.

    Returns:
        One row per model, one column per headline metric, then ``train s/fold`` (mean ± std, and the slowest fold).
    """
    rows = {
        r.model_type: {
            **{m: f"{r.mean[m]:.3f} ± {r.std[m]:.3f}" for m in METRIC_NAMES},
            "train s/fold": f"{r.mean['train_seconds']:.1f} ± {r.std['train_seconds']:.1f} "
            f"(max {max(f.train_seconds for f in r.folds):.1f})",
        }
        for r in results
    }
    return pd.DataFrame.from_dict(rows, orient="index")
