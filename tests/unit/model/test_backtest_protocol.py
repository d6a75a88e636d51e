"""The backtest's Handbook protocol (known compromised cards, CP@100) and its thread cap and training times."""

import time

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from fraud_detection.model.backtest import backtest, summarise
from fraud_detection.model.threads import available_cpus, bounded_threads, joblib_workers, pool_threads

START = pd.Timestamp("2018-04-01", tz="UTC")

# Seven days (index 0-6 from START), protocol 2 / 2 / 3: train days 0-1, delay days 2-3, test days 4-6.
# The Handbook's get_train_test_set: known = cards with a fraud in training; before test day (train + delay + o)
# it adds the frauds of day (train + o - 1), so test day 4 (o = 0) knows day 1, day 5 knows day 2, day 6 knows day 3.
#   T: fraud on day 0 (training)          -> known from the start: on no test day
#   D: fraud on day 2 (first delay day)   -> on test day 4; removed from days 5 and 6
#   L: fraud on day 3 (last delay day)    -> on test days 4 and 5; removed from day 6
#   N: no fraud before the test, fraud on every test day -> on test days 4, 5, 6
# Every card has one transaction a day, otherwise legit.
FRAUD_DAYS = {"T": {0}, "D": {2}, "L": {3}, "N": {4, 5, 6}}
EXPECTED_TEST_CARDS = {4: {"D", "L", "N"}, 5: {"L", "N"}, 6: {"N"}}


def _frame() -> pd.DataFrame:
    rows = [
        {
            "customer_id": card,
            "event_time": START + pd.Timedelta(days=day, hours=10),
            "amount": 20.0,
            "is_fraud": int(day in fraud_days),
        }
        for day in range(7)
        for card, fraud_days in FRAUD_DAYS.items()
    ]
    return pd.DataFrame(rows)


def _day(frame: pd.DataFrame) -> pd.Series:
    return (frame["event_time"] - START).dt.days


def test_known_compromised_cards_leave_the_test_days_and_detected_cards_leave_later_days():
    seen: dict[int, set[str]] = {}

    def fit_and_score(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, float]:
        for day, group in test.groupby(_day(test)):
            seen[int(day)] = set(group["customer_id"])
        return np.full(len(test), 0.5), 0.5

    result = backtest(
        _frame(), fit_and_score, model_type="rule", start=START, train_days=2, delay_days=2, test_days=3, folds=1
    )
    # D's fraud fell in the delay period (day 2): it is on test day 4 and gone from days 5 and 6.
    assert seen == EXPECTED_TEST_CARDS
    assert result.folds[0].n_test == 3 + 2 + 1
    # CP@100 (Handbook): day 4: D, L, N in the top 100, N compromised -> 1/100, detected {N}.
    # Day 5: N removed as detected, L legit -> 0. Day 6: N removed -> no card -> 0. Mean 0.01 / 3.
    # Counting N again on days 5 and 6 (the old definition) would give 0.01.
    assert result.folds[0].metrics.card_precision_at_100 == pytest.approx(0.01 / 3)
    assert result.protocol["card_precision"].startswith("handbook")


def test_each_fold_records_its_training_time_in_the_result_and_its_report():
    def slow(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, float]:
        time.sleep(0.2)  # wall time without CPU time
        return np.full(len(test), 0.5), 0.5

    result = backtest(_frame(), slow, model_type="rule", start=START, train_days=2, delay_days=2, test_days=3, folds=1)
    fold = result.folds[0]
    assert fold.train_seconds >= 0.2
    assert fold.train_cpu_seconds < 0.15  # sleeping costs no CPU: the two clocks are measured apart
    assert result.as_dict()["folds"][0]["train_seconds"] == fold.train_seconds
    assert result.mean["train_seconds"] == fold.train_seconds
    assert "train s/fold" in summarise([result]).columns


def test_threads_1_caps_the_openmp_pool_inside_each_fold_and_restores_it_after():
    before = pool_threads()
    inside: list[dict[str, int]] = []
    rng = np.random.default_rng(0)

    def fit_and_score(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, float]:
        inside.append(pool_threads())
        # A real HistGradientBoosting fit under the cap (the fold's work in production).
        x = rng.normal(size=(400, 3))
        HistGradientBoostingClassifier(max_iter=5).fit(x, x[:, 0] > 0)
        return np.full(len(test), 0.5), 0.5

    result = backtest(
        _frame(),
        fit_and_score,
        model_type="rule",
        start=START,
        train_days=2,
        delay_days=2,
        test_days=3,
        folds=1,
        threads=1,
    )
    assert "openmp:openmp" in inside[0]  # scikit-learn's OpenMP runtime is loaded, so the cap applies to it
    assert all(n == 1 for pools in inside for n in pools.values())
    assert result.protocol["threads"] == 1
    assert pool_threads() == before


def test_the_default_cap_is_the_cpus_available_to_the_process():
    counts: list[int] = []

    def fit_and_score(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, float]:
        counts.append(pool_threads()["openmp:openmp"])
        return np.full(len(test), 0.5), 0.5

    result = backtest(
        _frame(), fit_and_score, model_type="rule", start=START, train_days=2, delay_days=2, test_days=3, folds=1
    )
    assert result.protocol["threads"] == available_cpus() == counts[0]


def test_the_cap_bounds_the_joblib_workers_a_forest_fits_on():
    assert joblib_workers() == available_cpus()  # no cap: every CPU of the process
    with bounded_threads(1):
        assert joblib_workers() == 1
        with bounded_threads(3):
            assert joblib_workers() == 3
        assert joblib_workers() == 1
    assert joblib_workers() == available_cpus()


def test_a_cap_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"), bounded_threads(0):
        pass
