"""The default model's Handbook-protocol backtest on several simulated draws: how much the draw moves the metrics.

For each seed: simulate the default data set (5,000 customers, 10,000 terminals, 183 days, the Handbook's design),
build the features, and backtest the model with the Handbook's protocol (7-day train, 7-day delay, 7-day test,
4 weekly folds from 2018-07-25, cards known compromised removed, CP@100 as the Handbook defines it), one native
thread per fit. Prints a Markdown table (each draw's fold mean ± std, then the mean ± std of the draws' means) and
one JSON object; writes nothing to docs/PERFORMANCE.md (not part of ``make bench``).

Run: ``.venv/bin/python -m bench.draws_bench --seeds 101,102,103,104,105,106``
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import numpy as np

from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate
from fraud_detection.features.offline import build_features
from fraud_detection.model.backtest import backtest
from fraud_detection.model.train import DEFAULT_MODEL_TYPE, MODEL_TYPES, TrainConfig, fit_and_score_fn

LOG = logging.getLogger("bench.draws")

METRICS: tuple[tuple[str, str], ...] = (
    ("average_precision", "AP"),
    ("roc_auc", "ROC AUC"),
    ("card_precision_at_100", "CP@100"),
)


def one_draw(seed: int, model: str) -> dict[str, Any]:
    """Simulate, build features and backtest one draw.

    Args:
        seed: Simulator seed.
        model: hgb, logreg or rf (default parameters).

    Returns:
        The draw's size, fold means and standard deviations, and the mean training seconds per fold.
    """
    raw = simulate(SimulationConfig(seed=seed))
    features = build_features(raw)
    t0 = time.perf_counter()
    result = backtest(
        features, fit_and_score_fn(TrainConfig(model_type=model)), model_type=model, start="2018-07-25", threads=1
    )
    return {
        "seed": seed,
        "transactions": len(raw),
        "frauds": int(raw[schema.LABEL].sum()),
        "mean": {key: result.mean[key] for key, _ in METRICS},
        "std": {key: result.std[key] for key, _ in METRICS},
        "train_seconds_per_fold": result.mean["train_seconds"],
        "backtest_seconds": time.perf_counter() - t0,
    }


def table(draws: list[dict[str, Any]]) -> str:
    """Each draw's row, then the mean ± std over the draws."""
    header = "| seed | transactions | frauds | " + " | ".join(label for _, label in METRICS) + " | train s/fold |"
    lines = [header, "|---|---:|---:|" + "---|" * len(METRICS) + "---:|"]
    for d in draws:
        cells = " | ".join(f"{d['mean'][k]:.4f} ± {d['std'][k]:.4f}" for k, _ in METRICS)
        lines.append(
            f"| {d['seed']} | {d['transactions']:,} | {d['frauds']:,} | {cells} | {d['train_seconds_per_fold']:.1f} |"
        )
    over = " | ".join(
        f"**{np.mean([d['mean'][k] for d in draws]):.4f} ± {np.std([d['mean'][k] for d in draws]):.4f}**"
        for k, _ in METRICS
    )
    lines.append(f"| mean ± std of the {len(draws)} draws | | | {over} | |")
    return "\n".join(lines)


def main() -> None:
    """Parse flags, backtest each draw, print the table and the JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", required=True, help="comma-separated simulator seeds")
    parser.add_argument("--model", default=DEFAULT_MODEL_TYPE, choices=MODEL_TYPES)
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    draws = []
    for seed in seeds:
        draws.append(one_draw(seed, args.model))
        LOG.info("seed %d: %s", seed, json.dumps(draws[-1]["mean"]))
    LOG.info("%s features, model %s\n%s", len(schema.FEATURES), args.model, table(draws))
    json.dump({"model": args.model, "features": list(schema.FEATURES), "draws": draws}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
