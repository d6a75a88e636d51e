"""CP@k as the Fraud Detection Handbook defines it, on hand-made days whose values are worked out below."""

import numpy as np
import pandas as pd
import pytest

from fraud_detection.model.card_precision import card_precision_top_k, card_precision_top_k_day
from fraud_detection.model.metrics import compute_metrics

# Three days, five cards, k = 2. One row per transaction: (day, card, score, label).
#
# day 1: A 0.90 fraud, A 0.10 legit, B 0.80 legit, C 0.30 fraud
#        per card (max score, max label): A (0.90, 1), B (0.80, 0), C (0.30, 1)
#        top 2 = A, B -> 1 compromised -> CP 1/2; detected {A}; compromised cards that day: A, C -> 2
# day 2: A 0.95 fraud, C 0.70 fraud, B 0.10 legit
#        with removal: A is gone -> C (0.70, 1), B (0.10, 0) -> CP 1/2; detected {C}; compromised: C -> 1
#        without removal: top 2 = A, C -> CP 2/2 = 1
# day 3: A 0.90 fraud, C 0.80 fraud, D 0.60 fraud, E 0.50 legit
#        with removal: A and C are gone -> D (0.60, 1), E (0.50, 0) -> CP 1/2; detected {D}; compromised: D -> 1
#        without removal: top 2 = A, C -> CP 1; compromised: A, C, D -> 3
# mean with removal (the Handbook's default): (0.5 + 0.5 + 0.5) / 3 = 0.5
# mean without removal (the old project figure): (0.5 + 1 + 1) / 3 = 0.8333...
DAYS = [
    (1, "A", 0.90, 1),
    (1, "A", 0.10, 0),
    (1, "B", 0.80, 0),
    (1, "C", 0.30, 1),
    (2, "A", 0.95, 1),
    (2, "C", 0.70, 1),
    (2, "B", 0.10, 0),
    (3, "A", 0.90, 1),
    (3, "C", 0.80, 1),
    (3, "D", 0.60, 1),
    (3, "E", 0.50, 0),
]


def _columns(rows: list[tuple[int, str, float, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    day, card, score, label = zip(*rows, strict=True)
    return np.array(card), np.array(day), np.array(score), np.array(label)


def test_progressive_removal_gives_the_handbook_value_and_differs_from_no_removal():
    cards, days, scores, labels = _columns(DAYS)
    handbook = card_precision_top_k(cards, days, scores, labels, top_k=2)
    old = card_precision_top_k(cards, days, scores, labels, top_k=2, remove_detected=False)
    assert [d.card_precision for d in handbook.days] == [0.5, 0.5, 0.5]
    assert handbook.mean == pytest.approx(0.5)
    assert [d.card_precision for d in old.days] == [0.5, 1.0, 1.0]
    assert old.mean == pytest.approx(2.5 / 3)
    assert [d.n_compromised_cards for d in handbook.days] == [2, 1, 1]
    assert [d.n_compromised_cards for d in old.days] == [2, 2, 3]


def test_a_card_detected_on_day_1_is_not_counted_on_day_2():
    cards, days, scores, labels = _columns(DAYS)
    result = card_precision_top_k(cards, days, scores, labels, top_k=2)
    assert [d.day for d in result.days] == [1, 2, 3]
    assert [d.detected_cards for d in result.days] == [("A",), ("C",), ("D",)]
    # A is the day-2 top score (0.95) and a fraud, yet day 2 counts only C.
    assert "A" not in result.days[1].detected_cards


def test_days_are_taken_in_increasing_order_whatever_the_row_order():
    # Reversed rows: day 3 must still be scored last, after A (day 1) and C (day 2) are removed.
    cards, days, scores, labels = _columns(DAYS[::-1])
    assert card_precision_top_k(cards, days, scores, labels, top_k=2).mean == pytest.approx(0.5)


def test_a_day_emptied_by_the_removal_counts_as_zero():
    # k = 1. Day 1: A (0.9, fraud) -> CP 1, detected {A}. Day 2: only A, removed -> no card -> CP 0.
    # mean (1 + 0) / 2 = 0.5; without removal (1 + 1) / 2 = 1.
    cards, days, scores, labels = _columns([(1, "A", 0.9, 1), (2, "A", 0.8, 1)])
    assert card_precision_top_k(cards, days, scores, labels, top_k=1).mean == pytest.approx(0.5)
    assert card_precision_top_k(cards, days, scores, labels, top_k=1, remove_detected=False).mean == 1.0


def test_a_card_counts_once_with_its_highest_score_and_any_fraud():
    # Card X: a legit transaction scored 0.9 and a fraud scored 0.2 -> (0.9, 1). Y: one legit at 0.5. Z: fraud 0.4.
    # k = 1: X is first and compromised -> CP 1/1 = 1 (transaction-level ranking would put a legit row first).
    detected, cp = card_precision_top_k_day(
        np.array(["X", "X", "Y", "Z"]), np.array([0.9, 0.2, 0.5, 0.4]), np.array([0, 1, 0, 1]), top_k=1
    )
    assert (detected, cp) == (("X",), 1.0)
    # k = 4 with 3 cards: 2 compromised (X, Z) / 4, not / 3.
    detected, cp = card_precision_top_k_day(
        np.array(["X", "X", "Y", "Z"]), np.array([0.9, 0.2, 0.5, 0.4]), np.array([0, 1, 0, 1]), top_k=4
    )
    assert (detected, cp) == (("X", "Z"), 0.5)


@pytest.mark.parametrize("rows", [[("B", 1), ("A", 0)], [("A", 0), ("B", 1)]])
def test_ties_go_to_the_smaller_card_id_whatever_the_row_order(rows):
    # A and B both score 0.5, k = 1: the tie goes to A (smaller id), a legit card -> CP 0, nothing detected.
    cards = np.array([c for c, _ in rows])
    labels = np.array([y for _, y in rows])
    assert card_precision_top_k_day(cards, np.array([0.5, 0.5]), labels, top_k=1) == ((), 0.0)
    # Swap the labels: A is now the fraud -> CP 1.
    assert card_precision_top_k_day(cards, np.array([0.5, 0.5]), 1 - labels, top_k=1) == (("A",), 1.0)


def test_numeric_card_ids_tie_in_numeric_order():
    # Cards 10 and 2 tie at 0.7, k = 1: 2 < 10 numerically (as strings "10" < "2") -> card 2, a fraud -> CP 1.
    assert card_precision_top_k_day(np.array([10, 2]), np.array([0.7, 0.7]), np.array([0, 1]), 1) == ((2,), 1.0)


def test_top_k_must_be_positive():
    with pytest.raises(ValueError, match="top_k"):
        card_precision_top_k_day(np.array(["A"]), np.array([0.5]), np.array([1]), top_k=0)


def test_no_day_is_nan():
    empty = np.array([])
    assert np.isnan(card_precision_top_k(empty, empty, empty, empty).mean)


def test_compute_metrics_reports_the_handbook_card_precision():
    # The same three days as event times; compute_metrics with k = 2 must give 0.5 (the old definition: 0.8333).
    cards, days, scores, labels = _columns(DAYS)
    frame = pd.DataFrame(
        {
            "customer_id": cards,
            "event_time": pd.Timestamp("2018-04-01", tz="UTC")
            + pd.to_timedelta(days, unit="D")
            + pd.Timedelta(hours=9),
            "amount": 10.0,
            "is_fraud": labels,
        }
    )
    metrics = compute_metrics(frame, scores, threshold=0.5, review_cost=1.0, k=2)
    assert metrics.card_precision_at_100 == pytest.approx(0.5)
