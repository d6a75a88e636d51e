"""Training on a weighted sample of the legitimate rows: calibration, threshold and metrics stay those of all rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from fraud_detection.data import schema
from fraud_detection.data.sampled_split import read_sampled_holdout
from fraud_detection.data.sampling import WEIGHT, SampleSpec
from fraud_detection.model.metrics import choose_threshold, compute_metrics, expected_cost
from fraud_detection.model.train import CalibratedPipeline, TrainConfig, score, train

RATE = 0.05


@pytest.fixture(scope="module")
def population() -> dict[str, np.ndarray]:
    """200,000 scored rows, 1 % fraud, with a sample of 5 % of the legitimate ones and its weights."""
    rng = np.random.default_rng(0)
    n = 200_000
    y = (rng.random(n) < 0.01).astype(np.int64)
    return {
        "y": y,
        "s": np.where(y == 1, rng.beta(4, 2, n), rng.beta(1, 12, n)),
        "a": rng.lognormal(4, 1, n),
        "x": np.where(y == 1, rng.normal(2.0, 1.0, n), rng.normal(0.0, 1.0, n)).reshape(-1, 1),
        "keep": (y == 1) | (rng.random(n) < RATE),
        "w": np.where(y == 1, 1.0, 1 / RATE),
    }


def test_the_weighted_threshold_is_the_unsampled_one(population: dict[str, np.ndarray]):
    s, y, a, k, w = (population[c] for c in ("s", "y", "a", "keep", "w"))
    best = choose_threshold(s, y, a, 10.0)
    weighted = choose_threshold(s[k], y[k], a[k], 10.0, w[k])
    unweighted = choose_threshold(s[k], y[k], a[k], 10.0)
    cost = expected_cost(s, y, a, best, 10.0)
    assert abs(weighted - best) < 0.05
    assert expected_cost(s, y, a, weighted, 10.0) < 1.03 * cost
    # Without weights each sampled false alert counts once instead of 20 times: far too low a threshold.
    assert unweighted < best - 0.1
    assert expected_cost(s, y, a, unweighted, 10.0) > 2 * cost


def test_weighted_metrics_estimate_the_unsampled_ones(population: dict[str, np.ndarray]):
    s, y, a, k, w = (population[c] for c in ("s", "y", "a", "keep", "w"))
    times = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(y)) * 10, unit="s")
    frame = pd.DataFrame(
        {schema.LABEL: y, schema.AMOUNT: a, schema.EVENT_TIME: times, schema.CUSTOMER_ID: np.arange(len(y)) % 5_000}
    )
    threshold = choose_threshold(s, y, a, 10.0)
    full = compute_metrics(frame, s, threshold, 10.0)
    weighted = compute_metrics(frame[k], s[k], threshold, 10.0, sample_weight=w[k])
    plain = compute_metrics(frame[k], s[k], threshold, 10.0)
    assert abs(weighted.average_precision - full.average_precision) < 0.02
    assert abs(weighted.roc_auc - full.roc_auc) < 0.005
    assert abs(weighted.recall_at_1pct_fpr - full.recall_at_1pct_fpr) < 0.03
    # About 25 sampled false alerts stand for 500: a standard error near 0.03 on the precision.
    assert abs(weighted.precision_at_threshold - full.precision_at_threshold) < 0.1
    assert weighted.recall_at_threshold == full.recall_at_threshold  # every fraud is in the sample
    # Cost = missed fraud amounts (every fraud is in the sample: exact) + review cost x false alerts (estimated).
    missed = a[(y == 1) & (s < threshold)].sum()
    false_alerts = (full.expected_cost - missed) / 10.0
    estimated = (weighted.expected_cost - missed) / 10.0
    assert abs(estimated - false_alerts) < 3 * np.sqrt(false_alerts * (1 - RATE) / RATE)
    assert (plain.expected_cost - missed) / 10.0 < 2 * RATE * false_alerts  # unweighted: 1 in 20 counted
    assert plain.average_precision > full.average_precision + 0.03  # the unweighted sample flatters the model
    assert plain.precision_at_threshold > full.precision_at_threshold + 0.15


def test_weights_of_one_change_nothing(population: dict[str, np.ndarray], small_features: pd.DataFrame):
    s, y, a = population["s"][:20_000], population["y"][:20_000], population["a"][:20_000]
    ones = np.ones(len(s))
    assert choose_threshold(s, y, a, 10.0, ones) == choose_threshold(s, y, a, 10.0)
    scores = np.linspace(0, 1, len(small_features))
    assert compute_metrics(small_features, scores, 0.5, 10.0, sample_weight=np.ones(len(scores))) == compute_metrics(
        small_features, scores, 0.5, 10.0
    )


def test_weighted_platt_calibration_gives_the_unsampled_fraud_rate(population: dict[str, np.ndarray]):
    x, y, k, w = (population[c] for c in ("x", "y", "keep", "w"))
    half = len(y) // 2  # the first half fits the model, the second calibrates
    pipeline = Pipeline([("clf", LogisticRegression(class_weight="balanced"))]).fit(x[:half], y[:half])
    cal_x, cal_y, cal_k, cal_w = x[half:], y[half:], k[half:], w[half:]
    weighted = CalibratedPipeline(pipeline).fit_calibration(cal_x[cal_k], cal_y[cal_k], cal_w[cal_k])
    plain = CalibratedPipeline(pipeline).fit_calibration(cal_x[cal_k], cal_y[cal_k])
    rate = cal_y.mean()  # the unsampled window's fraud rate
    assert abs(weighted.predict_proba(cal_x)[:, 1].mean() / rate - 1) < 0.1
    assert plain.predict_proba(cal_x)[:, 1].mean() > 5 * rate  # calibrated to the sample's fraud share instead


def test_training_on_a_weighted_sample_keeps_the_scores_of_all_rows(small_features: pd.DataFrame, tmp_path: Path):
    path = schema.write_frame(small_features, tmp_path / "features.parquet")
    split: dict[str, Any] = {"test_days": 10, "delay_days": 7, "train_days": None}
    config = TrainConfig(model_type="logreg")
    full = read_sampled_holdout(path, SampleSpec(), **split).split
    sampled = read_sampled_holdout(path, SampleSpec(legit_rate=0.1), **split).split
    assert WEIGHT in sampled.train.columns and len(sampled.train) < 0.3 * len(full.train)
    reference = score(train(full.train, config).model, full.test).mean()
    weighted = score(train(sampled.train, config).model, sampled.test).mean()
    plain = score(train(sampled.train.drop(columns=[WEIGHT]), config).model, sampled.test).mean()
    # On the unsampled test window, the sampled model scores like the one trained on every row...
    assert abs(weighted / reference - 1) < 0.25, (weighted, reference)
    # ...and without its weights it would not.
    assert plain > 2.5 * reference, (plain, reference)
