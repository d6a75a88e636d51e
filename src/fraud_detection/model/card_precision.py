"""Card precision top-k (CP@k) exactly as the Fraud Detection Handbook defines it.

Reference: Le Borgne et al., *Reproducible Machine Learning for Credit Card Fraud Detection - Practical Handbook*,
section 4.2 (Precision top-k metrics) and its ``Chapter_References/shared_functions.py``
(https://github.com/Fraud-Detection-Handbook/fraud-detection-handbook), functions ``card_precision_top_k_day`` and
``card_precision_top_k(predictions_df, top_k, remove_detected_compromised_cards=True)``.

The definition, for ``k`` cards reviewed per day:

* One day: each card's score is the maximum score of its transactions that day, and the card is compromised that day
  if any of its transactions that day is a fraud. The ``k`` highest-scored cards are the day's alerts; the day's
  CP@k is the number of compromised cards among them divided by ``k`` (by ``k`` even when the day has fewer than
  ``k`` cards). The compromised cards among them are the day's *detected* cards.
* Several days: the days are taken in increasing order. Before a day is scored, every card detected on an earlier
  day is removed from that day's transactions (an investigator has already blocked it; with
  ``remove_detected=False`` nothing is removed). CP@k is the mean of the daily values over the days present in the
  input, a day left empty by the removal counting as 0.

Ties: cards with equal scores are ordered by increasing card id. The Handbook sorts ``groupby("CUSTOMER_ID").max()``
(card ids increasing) with pandas' default, unstable quicksort, so its order among ties is unspecified on large days;
it equals this rule whenever that sort keeps equal keys in place (always on days with fewer than 17 cards).

The cards known to be compromised before the test period (the other half of the Handbook's protocol) are removed by
the split, :func:`fraud_detection.data.splits.train_delay_test_split`, before any score is computed.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class CardPrecisionDay:
    """CP@k of one day.

    Attributes:
        day: The day (as given in the input).
        card_precision: Compromised cards among the day's ``k`` best-scored cards, divided by ``k``.
        detected_cards: Those compromised cards, best score first.
        n_compromised_cards: Compromised cards that day after the removal of earlier detections (the Handbook's
            ``nb_compromised_cards_per_day``).
    """

    day: Hashable
    card_precision: float
    detected_cards: tuple[Hashable, ...]
    n_compromised_cards: int


@dataclass(frozen=True)
class CardPrecision:
    """CP@k over several days.

    Attributes:
        top_k: Cards reviewed per day.
        remove_detected: Whether cards detected on a day were removed from the later days.
        days: Per-day results in increasing day order.
        mean: Mean daily CP@k (NaN without any day).
    """

    top_k: int
    remove_detected: bool
    days: tuple[CardPrecisionDay, ...]
    mean: float


def card_precision_top_k_day(
    cards: np.ndarray, scores: np.ndarray, labels: np.ndarray, top_k: int
) -> tuple[tuple[Hashable, ...], float]:
    """CP@k of one day's transactions (the Handbook's ``card_precision_top_k_day``).

    Args:
        cards: Card (customer) id of each transaction.
        scores: Transaction scores, higher is more suspicious.
        labels: Transaction labels (0/1).
        top_k: Cards reviewed that day.

    Returns:
        The compromised cards among the ``top_k`` best-scored cards (best score first; ties by increasing card id)
        and their number divided by ``top_k``.

    Raises:
        ValueError: ``top_k`` is not positive.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    per_card = (
        pd.DataFrame({"card": cards, "score": scores, "label": labels})
        .groupby("card", sort=True)
        .agg(score=("score", "max"), label=("label", "max"))
    )
    top = per_card.sort_values("score", ascending=False, kind="stable").head(top_k)
    detected = tuple(top.index[top["label"].to_numpy() == 1])
    return detected, len(detected) / top_k


def card_precision_top_k(
    cards: np.ndarray,
    days: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    top_k: int = 100,
    *,
    remove_detected: bool = True,
) -> CardPrecision:
    """CP@k over days with progressive removal of detected cards (the Handbook's ``card_precision_top_k``).

    Args:
        cards: Card (customer) id of each transaction.
        days: Day of each transaction (any sortable value: a day index or a UTC midnight).
        scores: Transaction scores.
        labels: Transaction labels (0/1).
        top_k: Cards reviewed per day.
        remove_detected: Remove the cards detected on a day from every later day (the Handbook's default).

    Returns:
        Per-day results and their mean.
    """
    frame = pd.DataFrame({"card": cards, "day": days, "score": scores, "label": labels})
    detected: set[Hashable] = set()
    results = []
    for day, today in frame.groupby("day", sort=True):
        if remove_detected:
            today = today[~today["card"].isin(detected)]
        n_compromised = int(today.loc[today["label"] == 1, "card"].nunique())
        found, precision = card_precision_top_k_day(
            today["card"].to_numpy(), today["score"].to_numpy(), today["label"].to_numpy(), top_k
        )
        results.append(CardPrecisionDay(day, precision, found, n_compromised))
        if remove_detected:
            detected.update(found)
    mean = float(np.mean([r.card_precision for r in results])) if results else float("nan")
    return CardPrecision(top_k, remove_detected, tuple(results), mean)
