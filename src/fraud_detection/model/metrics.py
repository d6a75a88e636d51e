"""Fraud metrics: ROC AUC, average precision, card precision@k, recall at 1 % FPR, cost and the threshold."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from fraud_detection.data import schema
from fraud_detection.model.card_precision import card_precision_top_k

METRIC_NAMES: tuple[str, ...] = ("roc_auc", "average_precision", "card_precision_at_100")


@dataclass(frozen=True)
class FraudMetrics:
    """Evaluation of scores against labels.

    Attributes:
        roc_auc: Area under the ROC curve.
        average_precision: Area under the precision-recall curve (AP).
        card_precision_at_100: The Handbook's CP@100 (:mod:`fraud_detection.model.card_precision`): share of
            compromised cards among the 100 highest-scored cards of each day, cards detected on earlier days
            removed, averaged over days.
        recall_at_1pct_fpr: Recall reachable with at most 1 % false-positive rate.
        expected_cost: Missed fraud amounts plus review costs of false alerts at ``threshold``.
        threshold: Decision threshold on the calibrated score.
        precision_at_threshold: Precision of the alerts at ``threshold``.
        recall_at_threshold: Recall at ``threshold``.
        n_transactions: Rows evaluated.
        n_fraud: Fraudulent rows among them.
    """

    roc_auc: float
    average_precision: float
    card_precision_at_100: float
    recall_at_1pct_fpr: float
    expected_cost: float
    threshold: float
    precision_at_threshold: float
    recall_at_threshold: float
    n_transactions: int
    n_fraud: int

    def as_dict(self) -> dict[str, float]:
        """Return the metrics as a plain dict."""
        return {k: float(v) for k, v in asdict(self).items()}


def recall_at_fpr(
    labels: np.ndarray, scores: np.ndarray, max_fpr: float = 0.01, sample_weight: np.ndarray | None = None
) -> float:
    """Highest recall whose false-positive rate stays at or below ``max_fpr``.

    Args:
        labels: 0/1 labels.
        scores: Scores, higher is more suspicious.
        max_fpr: The false-positive budget.
        sample_weight: Population rows each row stands for; None for 1 each.

    Returns:
        The recall, or NaN when only one class is present.
    """
    if labels.min() == labels.max():
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores, sample_weight=sample_weight)
    return float(tpr[fpr <= max_fpr].max())


def card_precision_at_k(
    customer_id: np.ndarray, day: np.ndarray, scores: np.ndarray, labels: np.ndarray, k: int = 100
) -> float:
    """Card precision@k as the Fraud Detection Handbook defines it (section 4.2), averaged over days.

    Per day, each card's score is its highest transaction score; the day's value is the number of compromised cards
    among the k best-scored ones divided by k, and cards detected on a day are removed from every later day. The
    definition, its tie rule and its source: :mod:`fraud_detection.model.card_precision`.

    Args:
        customer_id: Card (customer) of each transaction.
        day: Day of each transaction (any sortable value).
        scores: Transaction scores.
        labels: Transaction labels.
        k: Cards reviewed per day.

    Returns:
        The mean daily card precision (NaN for no data).
    """
    return card_precision_top_k(customer_id, day, scores, labels, k).mean


def cost_curve(
    scores: np.ndarray,
    labels: np.ndarray,
    amounts: np.ndarray,
    review_cost: float,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected cost of alerting on every score at or above each candidate threshold.

    Args:
        scores: Calibrated scores.
        labels: 0/1 labels.
        amounts: Transaction amounts (the loss of a missed fraud).
        review_cost: Cost of reviewing one false alert.
        sample_weight: Population rows each row stands for (a sampled legitimate row counts ``1 / rate`` times);
            None for 1 each.

    Returns:
        Candidate thresholds (descending distinct scores, then +inf for "no alert") and their costs.
    """
    order = np.argsort(-scores, kind="stable")
    s, y, a = scores[order], labels[order].astype(bool), amounts[order]
    w = np.ones(len(s)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)[order]
    fraud_amount = np.where(y, a * w, 0.0)
    caught = np.cumsum(fraud_amount)
    false_alerts = np.cumsum(np.where(y, 0.0, w))
    # Only cut between distinct scores: the last index of each run of equal scores.
    last = np.r_[s[1:] != s[:-1], True]
    total = fraud_amount.sum()
    costs = np.r_[total, total - caught[last] + review_cost * false_alerts[last]]
    thresholds = np.r_[np.inf, s[last]]
    return thresholds, costs


def choose_threshold(
    scores: np.ndarray,
    labels: np.ndarray,
    amounts: np.ndarray,
    review_cost: float,
    sample_weight: np.ndarray | None = None,
) -> float:
    """Threshold minimising expected cost on validation data.

    Args:
        scores: Calibrated validation scores.
        labels: Validation labels.
        amounts: Validation amounts.
        review_cost: Cost of reviewing a false alert.
        sample_weight: Population rows each row stands for, so that the cost on a sample of the legitimate rows
            estimates the cost on all of them; None for 1 each.

    Returns:
        The threshold (alert when ``score >= threshold``), capped at 1.0 when alerting on nothing is cheapest.
    """
    thresholds, costs = cost_curve(scores, labels, amounts, review_cost, sample_weight)
    best = float(thresholds[int(np.argmin(costs))])
    return min(best, 1.0)


def expected_cost(
    scores: np.ndarray,
    labels: np.ndarray,
    amounts: np.ndarray,
    threshold: float,
    review_cost: float,
    sample_weight: np.ndarray | None = None,
) -> float:
    """Missed fraud amounts plus review costs of false alerts at a threshold.

    Args:
        scores: Scores.
        labels: Labels.
        amounts: Amounts.
        threshold: Alert when ``score >= threshold``.
        review_cost: Cost of a false alert.
        sample_weight: Population rows each row stands for; None for 1 each.

    Returns:
        The cost.
    """
    alert = scores >= threshold
    y = labels.astype(bool)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return float((amounts * w)[y & ~alert].sum() + review_cost * w[alert & ~y].sum())


def compute_metrics(
    frame: pd.DataFrame,
    scores: np.ndarray,
    threshold: float,
    review_cost: float,
    k: int = 100,
    sample_weight: np.ndarray | None = None,
) -> FraudMetrics:
    """Evaluate scores on a labelled feature frame.

    Args:
        frame: Feature frame with ``customer_id``, ``event_time``, ``amount`` and ``is_fraud``.
        scores: Calibrated scores aligned with ``frame``.
        threshold: Decision threshold.
        review_cost: Cost of a false alert.
        k: Cards reviewed per day for card precision.
        sample_weight: Population rows each row stands for (a weighted sample of the legitimate rows): ROC AUC,
            AP, recall at 1 % FPR, cost, precision and recall at the threshold then estimate the unsampled values.
            Card precision is a count of the top ``k`` cards per day and is computed on the rows as given (on a
            sample it is optimistic). None for 1 each.

    Returns:
        The metrics (``n_transactions`` and ``n_fraud`` count rows, not weights).
    """
    labels = frame[schema.LABEL].to_numpy()
    amounts = frame[schema.AMOUNT].to_numpy(dtype=np.float64)
    w = np.ones(len(labels)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    two_classes = labels.min() != labels.max() if len(labels) else False
    alert = scores >= threshold
    n_fraud = int(labels.sum())
    w_alert, w_fraud = float(w[alert].sum()), float(w[labels == 1].sum())
    w_tp = float(w[alert & (labels == 1)].sum())
    day = frame[schema.EVENT_TIME].dt.floor("D").to_numpy()
    return FraudMetrics(
        roc_auc=float(roc_auc_score(labels, scores, sample_weight=sample_weight)) if two_classes else float("nan"),
        average_precision=float(average_precision_score(labels, scores, sample_weight=sample_weight))
        if two_classes
        else float("nan"),
        card_precision_at_100=card_precision_at_k(frame[schema.CUSTOMER_ID].to_numpy(), day, scores, labels, k),
        recall_at_1pct_fpr=recall_at_fpr(labels, scores, sample_weight=sample_weight) if two_classes else float("nan"),
        expected_cost=expected_cost(scores, labels, amounts, threshold, review_cost, sample_weight),
        threshold=float(threshold),
        precision_at_threshold=w_tp / w_alert if w_alert else 0.0,
        recall_at_threshold=w_tp / w_fraud if w_fraud else 0.0,
        n_transactions=len(labels),
        n_fraud=n_fraud,
    )


def rounded(values: dict[str, float]) -> dict[str, float]:
    """Metric values rounded to 4 places for logs and tables (NaN and infinity kept)."""
    return {k: round(v, 4) if np.isfinite(v) else v for k, v in values.items()}
