"""What each feature added by issue 15 is worth: prequential backtests with and without it, on a chosen draw.

A feature is taken out by holding it constant (0) in every row, so no tree can split on it and the rest of the
training path (calibration, threshold, served scorer) is the one ``fraud backtest`` runs. Sets: the 21 features from
before issue 15, every feature, and every feature but one of the new ones. The Handbook's protocol: 7/7/7-day folds,
4 weekly folds from 2018-07-25, cards known compromised removed, CP@100 as the Handbook defines it.

Run on a draw the features were not chosen on, e.g.::

    .venv/bin/fraud simulate --seed 23 --output /tmp/s23.parquet
    .venv/bin/fraud features --data /tmp/s23.parquet --output /tmp/f23.parquet
    .venv/bin/python -m bench.feature_gain_bench --features /tmp/f23.parquet --model hgb --threads 1

Prints one line per set and a JSON summary; writes nothing to docs/PERFORMANCE.md (not part of ``make bench``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, cast

import pandas as pd

from fraud_detection.data import schema
from fraud_detection.model.backtest import backtest
from fraud_detection.model.train import DEFAULT_MODEL_TYPE, MODEL_TYPES, ModelType, TrainConfig, fit_and_score_fn

LOG = logging.getLogger("bench.feature_gain")
#: The features issue 15 added (docs/FEATURES.md, "Recent spend against the customer's baseline").
NEW_FEATURES: tuple[str, ...] = ("amount_to_customer_avg_7d", "customer_avg_7d_to_baseline")


def feature_sets() -> dict[str, tuple[str, ...]]:
    """Name to the features held constant in that set."""
    sets: dict[str, tuple[str, ...]] = {"before issue 15 (21)": NEW_FEATURES, f"all ({len(schema.FEATURES)})": ()}
    for name in NEW_FEATURES:
        sets[f"all but {name}"] = (name,)
    return sets


def run(frame: pd.DataFrame, model: str, threads: int | None) -> dict[str, dict[str, Any]]:
    """Backtest every set on one frame.

    Args:
        frame: Labelled feature frame (``fraud features`` output).
        model: hgb, logreg or rf.
        threads: Thread cap per fold.

    Returns:
        Set name to the mean and std of each metric.
    """
    out: dict[str, dict[str, Any]] = {}
    fit = fit_and_score_fn(TrainConfig(model_type=cast(ModelType, model)))
    for name, removed in feature_sets().items():
        data = frame.copy()
        for feature in removed:
            data[feature] = 0.0
        result = backtest(data, fit, model_type=model, start="2018-07-25", threads=threads)
        out[name] = {"mean": result.mean, "std": result.std}
        LOG.info(
            "%-45s AP %.4f ± %.4f  AUC %.4f  CP@100 %.4f ± %.4f",
            name,
            result.mean["average_precision"],
            result.std["average_precision"],
            result.mean["roc_auc"],
            result.mean["card_precision_at_100"],
            result.std["card_precision_at_100"],
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", type=Path, required=True, help="a fraud features output (Parquet)")
    parser.add_argument("--model", default=DEFAULT_MODEL_TYPE, choices=MODEL_TYPES)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    frame = pd.read_parquet(args.features)
    missing = [f for f in schema.FEATURES if f not in frame.columns]
    if missing:
        parser.error(f"--features {args.features}: no column(s) {', '.join(missing)}; rebuild it with fraud features")
    print(json.dumps(run(frame, args.model, args.threads), indent=1, default=float))  # noqa: T201


if __name__ == "__main__":
    main()
