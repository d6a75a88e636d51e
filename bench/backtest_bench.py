"""Backtest benchmark behind issue 15: CP@100 under both definitions, and training time per fold under a thread cap.

Runs the same backtest as ``bench.core_bench`` (default simulated data, seed 0; 7/7/7-day folds, 4 weekly folds from
2018-07-25) and scores each fold's test window with card precision@100 twice on the same scores: as the Fraud
Detection Handbook defines it (the project's metric) and as the project computed it before 2026-11-30 (detected
cards counted again on later days). Prints one JSON object per model on stdout; writes nothing to
docs/PERFORMANCE.md (not part of ``make bench``).

Run: ``.venv/bin/python -m bench.backtest_bench --models hgb,logreg,rf --threads 2``
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from fraud_detection.data import schema
from fraud_detection.data.simulate import simulate
from fraud_detection.features.offline import build_features
from fraud_detection.model.backtest import backtest
from fraud_detection.model.card_precision import card_precision_top_k
from fraud_detection.model.train import TrainConfig, fit_and_score_fn

LOG = logging.getLogger("bench.backtest")


def run(frame: pd.DataFrame, model: str, threads: int | None) -> dict[str, Any]:
    """Backtest one model and compute the old CP@100 on the same test scores.

    Args:
        frame: Labelled feature frame.
        model: hgb, logreg or rf.
        threads: Thread cap per fold (None: the CPUs available).

    Returns:
        Mean and std of each metric, the old CP@100 per fold and its mean and std, per-fold training times.
    """
    captured: list[tuple[pd.DataFrame, np.ndarray]] = []
    inner = fit_and_score_fn(TrainConfig(model_type=model))

    def fit(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, float]:
        scores, threshold = inner(train, test)
        captured.append((test, scores))
        return scores, threshold

    t0 = time.perf_counter()
    result = backtest(frame, fit, model_type=model, start="2018-07-25", threads=threads)
    wall = time.perf_counter() - t0
    old = [
        card_precision_top_k(
            test[schema.CUSTOMER_ID].to_numpy(),
            test[schema.EVENT_TIME].dt.floor("D").to_numpy(),
            scores,
            test[schema.LABEL].to_numpy(),
            100,
            remove_detected=False,
        ).mean
        for test, scores in captured
    ]
    return {
        "mean": result.mean,
        "std": result.std,
        "old_cp100_folds": old,
        "old_cp100_mean": float(np.mean(old)),
        "old_cp100_std": float(np.std(old)),
        "seconds": wall,
        "protocol": result.protocol,
        "folds": [
            {
                "cp100": f.metrics.card_precision_at_100,
                "train_seconds": f.train_seconds,
                "train_cpu_seconds": f.train_cpu_seconds,
            }
            for f in result.folds
        ],
    }


def main() -> None:
    """Parse the arguments, run the backtests, print the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="hgb,logreg,rf", help="Comma-separated model types.")
    parser.add_argument("--threads", type=int, default=None, help="Thread cap per fold (default: available CPUs).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    frame = build_features(simulate())
    out = {}
    for model in args.models.split(","):
        out[model] = run(frame, model, args.threads)
        LOG.info("%s: %s", model, json.dumps(out[model]))
    print(json.dumps(out))  # noqa: T201 - the benchmark's output


if __name__ == "__main__":
    main()
