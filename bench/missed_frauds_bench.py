"""Which compromised cards the model finds, by the simulator's fraud scenario and the compromise's age (issue 15).

Runs the Handbook-protocol backtest (7/7/7-day folds, 4 weekly folds from 2018-07-25, cards known compromised
removed) of one model on a simulated draw and, on each test day, after removing the cards detected on earlier days
exactly as card precision@k does, counts the compromised cards and those among the day's top k by:

* scenario 1 (an amount over 220) and scenario 3 (leaked credentials): one row each;
* scenario 2 (a card used at a compromised terminal), by the age of the terminal's compromise that day: days since
  the first scenario-2 fraud of that compromise at the terminal (the simulator compromises a terminal for 28 days;
  a compromise whose first day has no transaction starts a day or so late here).

A card with frauds of several scenarios that day counts under its lowest scenario (and, for scenario 2, the oldest
compromise). The age matters because terminal risk is computed from labels at least the label delay (7 days) old:
a compromise younger than that is invisible to every feature. To show what those frauds cost average precision,
each fold's AP is also computed without the fraud transactions of compromises younger than the delay (their
legitimate transactions stay). Prints a Markdown table and one JSON object; writes
nothing to docs/PERFORMANCE.md (not part of ``make bench``).

Run: ``.venv/bin/python -m bench.missed_frauds_bench --seed 23``
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate
from fraud_detection.data.splits import BACKTEST_SPLIT
from fraud_detection.features.offline import build_features
from fraud_detection.model.backtest import backtest
from fraud_detection.model.card_precision import card_precision_top_k
from fraud_detection.model.train import DEFAULT_MODEL_TYPE, MODEL_TYPES, TrainConfig, fit_and_score_fn

LOG = logging.getLogger("bench.missed_frauds")

#: Scenario-2 age buckets (days since the compromise's first fraud), upper bounds inclusive.
AGE_BUCKETS: tuple[tuple[str, int], ...] = (
    ("0-6", 6),
    ("7", 7),
    ("8-13", 13),
    ("14-20", 20),
    ("21-27+", 10_000),
)
COMPROMISE_DAYS = SimulationConfig().terminal_compromise_days
#: Compromises younger than the backtest's label delay (days) have no known fraud yet.
YOUNG_DAYS = BACKTEST_SPLIT.delay


def compromise_age_days(raw: pd.DataFrame) -> np.ndarray:
    """Per transaction, the age in days of its terminal's compromise (-1 outside scenario 2).

    A compromise starts at the first scenario-2 fraud day of a terminal and lasts the simulator's compromise length;
    a later scenario-2 day outside it starts a new compromise.

    Args:
        raw: Simulated transactions with ``fraud_scenario``.

    Returns:
        Integer days, aligned with ``raw``.
    """
    day = raw[schema.EVENT_TIME].dt.floor("D")
    scenario2 = (raw["fraud_scenario"] == 2).to_numpy()
    first: dict[tuple[Hashable, pd.Timestamp], int] = {}
    frame = pd.DataFrame({"terminal": raw[schema.TERMINAL_ID][scenario2], "day": day[scenario2]})
    for terminal, days in frame.groupby("terminal")["day"]:
        start: pd.Timestamp | None = None
        for d in sorted(set(days)):
            if start is None or (d - start).days >= COMPROMISE_DAYS:
                start = d
            first[(terminal, d)] = (d - start).days
    ages = np.full(len(raw), -1, dtype=np.int64)
    idx = np.flatnonzero(scenario2)
    ages[idx] = [first[key] for key in zip(frame["terminal"], frame["day"], strict=True)]
    return ages


def category(scenario: int, age: int) -> str:
    """The table row of a compromised card-day."""
    if scenario != 2:
        return f"scenario {scenario}"
    label = next(name for name, upper in AGE_BUCKETS if age <= upper)
    return f"scenario 2, age {label}"


def run(seed: int, model: str, top_k: int) -> dict[str, Any]:
    """Backtest one model on a draw and break its card-days down.

    Args:
        seed: Simulator seed.
        model: hgb, logreg or rf.
        top_k: Cards reviewed per day.

    Returns:
        CP@k and, per category, compromised and detected card-days.
    """
    raw = simulate(SimulationConfig(seed=seed))
    features = build_features(raw)
    info = pd.DataFrame(
        {"scenario": raw["fraud_scenario"].to_numpy(), "age": compromise_age_days(raw)},
        index=raw[schema.TRANSACTION_ID].to_numpy(),
    )
    inner = fit_and_score_fn(TrainConfig(model_type=model))
    total: collections.Counter[str] = collections.Counter()
    found: collections.Counter[str] = collections.Counter()
    ap_all: list[float] = []
    ap_visible: list[float] = []
    young_share: list[float] = []

    def fit(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, float]:
        scores, threshold = inner(train, test)
        days = test[schema.EVENT_TIME].dt.floor("D").to_numpy()
        cards = test[schema.CUSTOMER_ID].to_numpy()
        labels = test[schema.LABEL].to_numpy()
        result = card_precision_top_k(cards, days, scores, labels, top_k=top_k)
        rows = info.loc[test[schema.TRANSACTION_ID].to_numpy()]
        frame = pd.DataFrame(
            {"card": cards, "day": days, "fraud": labels, "s": rows["scenario"].to_numpy(), "age": rows["age"]}
        )
        young = (labels == 1) & (frame["s"].to_numpy() == 2) & (frame["age"].to_numpy() < YOUNG_DAYS)
        ap_all.append(float(average_precision_score(labels, scores)))
        ap_visible.append(float(average_precision_score(labels[~young], scores[~young])))
        young_share.append(float(young.sum() / max(int(labels.sum()), 1)))
        removed: set[Hashable] = set()
        for day in result.days:
            today = frame[(frame["day"] == day.day) & (frame["fraud"] == 1) & ~frame["card"].isin(removed)]
            per_card = today.groupby("card").agg(s=("s", "min"), age=("age", "max"))
            detected = set(day.detected_cards)
            for card, s, age in zip(per_card.index, per_card["s"], per_card["age"], strict=True):
                name = category(int(s), int(age))
                total[name] += 1
                found[name] += int(card in detected)
            removed.update(detected)
        return scores, threshold

    result = backtest(features, fit, model_type=model, start="2018-07-25", folds=4, threads=1)
    return {
        "seed": seed,
        "model": model,
        "transactions": len(raw),
        "card_precision_at_k": result.mean["card_precision_at_100"],
        "average_precision": float(np.mean(ap_all)),
        "average_precision_without_young_compromises": float(np.mean(ap_visible)),
        "young_compromise_share_of_test_frauds": float(np.mean(young_share)),
        "categories": {name: {"card_days": total[name], "detected": found[name]} for name in sorted(total)},
    }


def table(result: dict[str, Any]) -> str:
    """The breakdown as a Markdown table."""
    lines = ["| fraud | compromised card-days | in the day's top k | share |", "|---|---:|---:|---:|"]
    for name, row in result["categories"].items():
        share = row["detected"] / row["card_days"] if row["card_days"] else float("nan")
        lines.append(f"| {name} | {row['card_days']} | {row['detected']} | {share:.0%} |")
    return "\n".join(lines)


def main() -> None:
    """Parse flags, run, print the table and the JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=int, default=23, help="simulator seed")
    parser.add_argument("--model", default=DEFAULT_MODEL_TYPE, choices=MODEL_TYPES)
    parser.add_argument("--top-k", type=int, default=100)
    args = parser.parse_args()
    result = run(args.seed, args.model, args.top_k)
    LOG.info(
        "CP@%d %.4f; AP %.4f, %.4f without the frauds of compromises younger than %d days (%.0f %% of the test "
        "frauds)\n%s",
        args.top_k,
        result["card_precision_at_k"],
        result["average_precision"],
        result["average_precision_without_young_compromises"],
        YOUNG_DAYS,
        100 * result["young_compromise_share_of_test_frauds"],
        table(result),
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
