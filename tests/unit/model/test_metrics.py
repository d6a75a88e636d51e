import numpy as np
import pandas as pd
import pytest

from fraud_detection.data.splits import train_delay_test_split
from fraud_detection.model.backtest import backtest
from fraud_detection.model.curves import plot_curves
from fraud_detection.model.gate import promotion_gate
from fraud_detection.model.metrics import (
    card_precision_at_k,
    choose_threshold,
    compute_metrics,
    cost_curve,
    expected_cost,
    recall_at_fpr,
)
from fraud_detection.model.train import CalibratedPipeline, TrainConfig, fit_and_score_fn
from fraud_detection.scoring.scorer import Scorer


def test_card_precision_counts_cards_not_transactions_and_averages_days():
    # Day 1: card A has two fraud tx (counts once), card B legit; k=2 -> 0.5. Day 2: card C fraud; k=2 -> 0.5.
    cust = np.array(["A", "A", "B", "C", "D"])
    day = np.array([1, 1, 1, 2, 2])
    scores = np.array([0.9, 0.8, 0.7, 0.9, 0.1])
    labels = np.array([1, 1, 0, 1, 0])
    assert card_precision_at_k(cust, day, scores, labels, k=2) == pytest.approx(0.5)
    assert card_precision_at_k(cust, day, scores, labels, k=1) == pytest.approx(1.0)


def test_recall_at_fpr_is_recall_under_the_fpr_budget():
    labels = np.array([0] * 100 + [1] * 10)
    scores = np.r_[np.linspace(0, 0.5, 100), np.linspace(0.4, 1.0, 10)]
    r = recall_at_fpr(labels, scores, 0.01)
    assert 0.5 < r < 1.0
    assert recall_at_fpr(labels, np.r_[np.zeros(100), np.ones(10)], 0.01) == 1.0


def test_threshold_minimises_expected_cost_against_brute_force():
    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=500) < 0.05).astype(int)
    scores = np.clip(labels * 0.5 + rng.uniform(size=500) * 0.6, 0, 1)
    amounts = rng.uniform(1, 300, size=500)
    th = choose_threshold(scores, labels, amounts, review_cost=10)
    best = min(expected_cost(scores, labels, amounts, t, 10) for t in np.r_[np.unique(scores), 1.01])
    assert expected_cost(scores, labels, amounts, th, 10) == pytest.approx(best)
    _thresholds, costs = cost_curve(scores, labels, amounts, 10)
    assert costs[0] == pytest.approx(amounts[labels == 1].sum())  # alert on nothing: lose every fraud


def test_expensive_reviews_raise_the_threshold():
    rng = np.random.default_rng(1)
    labels = (rng.uniform(size=2000) < 0.05).astype(int)
    scores = np.clip(labels * 0.3 + rng.uniform(size=2000) * 0.7, 0, 1)
    amounts = np.full(2000, 50.0)
    assert choose_threshold(scores, labels, amounts, 100) > choose_threshold(scores, labels, amounts, 1)


def test_split_keeps_a_delay_gap_and_drops_known_compromised_cards(small_features):
    split = train_delay_test_split(small_features, pd.Timestamp("2018-04-10", tz="UTC"), 7, 7, 7)
    assert split.train["event_time"].max() < pd.Timestamp("2018-04-17", tz="UTC")
    assert split.test["event_time"].min() >= pd.Timestamp("2018-04-24", tz="UTC")
    known = set(split.train.loc[split.train.is_fraud == 1, "customer_id"])
    assert known and not (set(split.test["customer_id"]) & known)


def test_backtest_reports_every_fold_and_mean_std(small_features):
    def fit_and_score(train, test):
        return test["terminal_fraud_rate_30d"].to_numpy() + test["amount"].to_numpy() / 1e4, 0.5

    result = backtest(small_features, fit_and_score, model_type="rule", start="2018-04-15", folds=3, step_days=7)
    assert len(result.folds) == 3
    assert [f.train_start for f in result.folds] == ["2018-04-15", "2018-04-22", "2018-04-29"]
    aps = [f.metrics.average_precision for f in result.folds]
    assert result.mean["average_precision"] == pytest.approx(np.mean(aps))
    assert result.std["average_precision"] == pytest.approx(np.std(aps))
    payload = result.as_dict()
    assert {"roc_auc", "average_precision", "card_precision_at_100"} <= set(payload["folds"][0])


def test_backtest_outside_the_data_is_a_clear_error(small_features):
    with pytest.raises(ValueError, match="no data"):
        backtest(small_features, lambda a, b: (np.zeros(len(b)), 0.5), model_type="x", start="2030-01-01", folds=1)


def test_gate_promotes_only_a_better_candidate():
    prod = {"average_precision": 0.60, "card_precision_at_100": 0.30}
    assert promotion_gate({"average_precision": 0.65, "card_precision_at_100": 0.30}, prod).promote
    assert not promotion_gate({"average_precision": 0.60, "card_precision_at_100": 0.30}, prod).promote
    assert not promotion_gate({"average_precision": 0.70, "card_precision_at_100": 0.25}, prod).promote
    assert not promotion_gate(
        {"average_precision": 0.61, "card_precision_at_100": 0.30}, prod, min_ap_gain=0.02
    ).promote
    first = promotion_gate({"average_precision": 0.1, "card_precision_at_100": 0.1}, None)
    assert first.promote and "no production" in first.reasons[0]


def test_metrics_and_curves_on_real_scores(small_features, tmp_path):
    scores = small_features["terminal_fraud_rate_30d"].to_numpy() + (small_features["amount"] > 220)
    m = compute_metrics(small_features, scores, threshold=0.5, review_cost=10)
    assert 0.5 < m.roc_auc <= 1 and 0 < m.average_precision <= 1
    assert m.n_fraud == int(small_features["is_fraud"].sum())
    paths = plot_curves(small_features["is_fraud"].to_numpy(), scores, tmp_path)
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backtest_scores_with_the_compiled_serving_engine(small_features, monkeypatch):
    calls: list[tuple[str, int, np.ndarray]] = []
    original = Scorer.score_batch

    def spy(self: Scorer, X):
        scores = original(self, X)
        calls.append((self.engine_name, len(scores), scores))
        return scores

    def forbidden(self, X):
        raise AssertionError("scored with scikit-learn's predict_proba instead of the served engine")

    monkeypatch.setattr(Scorer, "score_batch", spy)
    monkeypatch.setattr(CalibratedPipeline, "predict_proba", forbidden)
    fit_and_score = fit_and_score_fn(TrainConfig(model_type="logreg"))
    result = backtest(small_features, fit_and_score, model_type="logreg", start="2018-04-15", folds=2, step_days=7)
    assert calls and {name for name, _, _ in calls} == {"linear-compiled"}
    # Per fold: the calibration window (threshold) and then the test window, both through the engine.
    test_calls = calls[1::2]
    assert [n for _, n, _ in test_calls] == [f.n_test for f in result.folds]
    for fold, (_, _, scores) in zip(result.folds, test_calls, strict=True):
        split = train_delay_test_split(small_features, pd.Timestamp(fold.train_start, tz="UTC"), 7, 7, 7)
        expected = compute_metrics(split.test, scores, fold.metrics.threshold, 10.0).as_dict()
        assert fold.metrics.as_dict() == pytest.approx(expected, rel=0, abs=0, nan_ok=True)
