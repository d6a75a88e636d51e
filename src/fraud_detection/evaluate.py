"""Fraud metrics, cost-based thresholds, time-ordered splits, the prequential backtest and the promotion gate.

Fraud is rare and labels arrive late, so accuracy is never reported. The metrics follow the Fraud Detection
Handbook: ROC AUC, average precision, card precision@k per day, plus recall at 1 % false-positive rate and the
expected cost at the chosen threshold (a missed fraud costs its amount, a false alert costs a review).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from fraud_detection import schema
from fraud_detection.store import atomic_file

LOG = logging.getLogger(__name__)
METRIC_NAMES: tuple[str, ...] = ("roc_auc", "average_precision", "card_precision_at_100")


@dataclass(frozen=True)
class FraudMetrics:
    """Evaluation of scores against labels.

    Attributes:
        roc_auc: Area under the ROC curve.
        average_precision: Area under the precision-recall curve (AP).
        card_precision_at_100: Share of fraudulent cards among the 100 highest-scored cards of each day, averaged.
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


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float = 0.01) -> float:
    """Highest recall whose false-positive rate stays at or below ``max_fpr``.

    Args:
        labels: 0/1 labels.
        scores: Scores, higher is more suspicious.
        max_fpr: The false-positive budget.

    Returns:
        The recall, or NaN when only one class is present.
    """
    if labels.min() == labels.max():
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= max_fpr].max())


def card_precision_at_k(
    customer_id: np.ndarray, day: np.ndarray, scores: np.ndarray, labels: np.ndarray, k: int = 100
) -> float:
    """Card precision@k per day, averaged over days (Fraud Detection Handbook, section 4.2).

    For each day, a card's score is its highest transaction score and it counts as fraudulent if any of its
    transactions that day is; the precision of the k highest-scored cards is averaged over days.

    Args:
        customer_id: Card (customer) of each transaction.
        day: Day of each transaction (any comparable value).
        scores: Transaction scores.
        labels: Transaction labels.
        k: Cards reviewed per day.

    Returns:
        The mean daily precision (NaN for no data).
    """
    if len(scores) == 0:
        return float("nan")
    per_card = (
        pd.DataFrame({"day": day, "card": customer_id, "score": scores, "label": labels})
        .groupby(["day", "card"], sort=False)
        .agg(score=("score", "max"), label=("label", "max"))
        .reset_index()
    )
    per_card = per_card.sort_values(["day", "score"], ascending=[True, False], kind="stable")
    top = per_card.groupby("day", sort=True).head(k)
    return float((top.groupby("day")["label"].sum() / k).mean())


def cost_curve(
    scores: np.ndarray, labels: np.ndarray, amounts: np.ndarray, review_cost: float
) -> tuple[np.ndarray, np.ndarray]:
    """Expected cost of alerting on every score at or above each candidate threshold.

    Args:
        scores: Calibrated scores.
        labels: 0/1 labels.
        amounts: Transaction amounts (the loss of a missed fraud).
        review_cost: Cost of reviewing one false alert.

    Returns:
        Candidate thresholds (descending distinct scores, then +inf for "no alert") and their costs.
    """
    order = np.argsort(-scores, kind="stable")
    s, y, a = scores[order], labels[order].astype(bool), amounts[order]
    fraud_amount = np.where(y, a, 0.0)
    caught = np.cumsum(fraud_amount)
    false_alerts = np.cumsum(~y)
    # Only cut between distinct scores: the last index of each run of equal scores.
    last = np.r_[s[1:] != s[:-1], True]
    total = fraud_amount.sum()
    costs = np.r_[total, total - caught[last] + review_cost * false_alerts[last]]
    thresholds = np.r_[np.inf, s[last]]
    return thresholds, costs


def choose_threshold(scores: np.ndarray, labels: np.ndarray, amounts: np.ndarray, review_cost: float) -> float:
    """Threshold minimising expected cost on validation data.

    Args:
        scores: Calibrated validation scores.
        labels: Validation labels.
        amounts: Validation amounts.
        review_cost: Cost of reviewing a false alert.

    Returns:
        The threshold (alert when ``score >= threshold``), capped at 1.0 when alerting on nothing is cheapest.
    """
    thresholds, costs = cost_curve(scores, labels, amounts, review_cost)
    best = float(thresholds[int(np.argmin(costs))])
    return min(best, 1.0)


def expected_cost(
    scores: np.ndarray, labels: np.ndarray, amounts: np.ndarray, threshold: float, review_cost: float
) -> float:
    """Missed fraud amounts plus review costs of false alerts at a threshold.

    Args:
        scores: Scores.
        labels: Labels.
        amounts: Amounts.
        threshold: Alert when ``score >= threshold``.
        review_cost: Cost of a false alert.

    Returns:
        The cost.
    """
    alert = scores >= threshold
    y = labels.astype(bool)
    return float(amounts[y & ~alert].sum() + review_cost * (alert & ~y).sum())


def compute_metrics(
    frame: pd.DataFrame, scores: np.ndarray, threshold: float, review_cost: float, k: int = 100
) -> FraudMetrics:
    """Evaluate scores on a labelled feature frame.

    Args:
        frame: Feature frame with ``customer_id``, ``event_time``, ``amount`` and ``is_fraud``.
        scores: Calibrated scores aligned with ``frame``.
        threshold: Decision threshold.
        review_cost: Cost of a false alert.
        k: Cards reviewed per day for card precision.

    Returns:
        The metrics.
    """
    labels = frame[schema.LABEL].to_numpy()
    amounts = frame[schema.AMOUNT].to_numpy(dtype=np.float64)
    two_classes = labels.min() != labels.max() if len(labels) else False
    alert = scores >= threshold
    n_alert, n_fraud = int(alert.sum()), int(labels.sum())
    tp = int((alert & (labels == 1)).sum())
    day = frame[schema.EVENT_TIME].dt.floor("D").to_numpy()
    return FraudMetrics(
        roc_auc=float(roc_auc_score(labels, scores)) if two_classes else float("nan"),
        average_precision=float(average_precision_score(labels, scores)) if two_classes else float("nan"),
        card_precision_at_100=card_precision_at_k(frame[schema.CUSTOMER_ID].to_numpy(), day, scores, labels, k),
        recall_at_1pct_fpr=recall_at_fpr(labels, scores) if two_classes else float("nan"),
        expected_cost=expected_cost(scores, labels, amounts, threshold, review_cost),
        threshold=float(threshold),
        precision_at_threshold=tp / n_alert if n_alert else 0.0,
        recall_at_threshold=tp / n_fraud if n_fraud else 0.0,
        n_transactions=len(labels),
        n_fraud=n_fraud,
    )


@dataclass(frozen=True)
class TimeSplit:
    """A time-ordered split of a feature frame.

    Attributes:
        train: Rows of the training window.
        test: Rows of the test window, without cards known compromised before each test day.
        train_start: First day of training.
        test_start: First day of the test window (after the delay window).
    """

    train: pd.DataFrame
    test: pd.DataFrame
    train_start: pd.Timestamp
    test_start: pd.Timestamp


def train_delay_test_split(
    frame: pd.DataFrame, start: pd.Timestamp, train_days: int = 7, delay_days: int = 7, test_days: int = 7
) -> TimeSplit:
    """Split into a training window, a delay window never trained on, and a test window (handbook protocol).

    Cards with a known fraud (in the training window, or in the delay period before each test day) are removed from
    that test day, since they would already be blocked in production.

    Args:
        frame: Feature frame with ``event_time``, ``customer_id`` and ``is_fraud``.
        start: First day of training (UTC midnight).
        train_days: Length of the training window.
        delay_days: Length of the delay window.
        test_days: Length of the test window.

    Returns:
        The split.
    """
    start = _utc_day(start)
    day_index = ((frame[schema.EVENT_TIME] - start).dt.total_seconds() // 86_400).astype(np.int64).to_numpy()
    train = frame[(day_index >= 0) & (day_index < train_days)]
    known = set(train.loc[train[schema.LABEL] == 1, schema.CUSTOMER_ID])
    parts = []
    for offset in range(test_days):
        # Fraud discovered in the delay period up to the day before this test day is known by then.
        delay_day = frame[day_index == train_days + offset - 1]
        known |= set(delay_day.loc[delay_day[schema.LABEL] == 1, schema.CUSTOMER_ID])
        today = frame[day_index == train_days + delay_days + offset]
        parts.append(today[~today[schema.CUSTOMER_ID].isin(known)])
    test = pd.concat(parts) if parts else frame.iloc[0:0]
    return TimeSplit(
        train=train,
        test=test,
        train_start=start,
        test_start=start + pd.Timedelta(days=train_days + delay_days),
    )


def _utc_day(value: pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("D")


@dataclass(frozen=True)
class FoldResult:
    """One backtest fold.

    Attributes:
        train_start: First training day (ISO date).
        test_start: First test day (ISO date).
        n_train: Training rows.
        n_test: Test rows.
        metrics: The fold's metrics.
    """

    train_start: str
    test_start: str
    n_train: int
    n_test: int
    metrics: FraudMetrics


@dataclass(frozen=True)
class BacktestResult:
    """Prequential backtest over rolling folds.

    Attributes:
        model_type: Model evaluated.
        folds: Per-fold results.
        mean: Mean of each metric over folds.
        std: Standard deviation of each metric over folds.
        protocol: The split parameters.
    """

    model_type: str
    folds: list[FoldResult]
    mean: dict[str, float]
    std: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (per-fold and mean/std metrics)."""
        return {
            "model_type": self.model_type,
            "protocol": self.protocol,
            "folds": [
                {
                    "train_start": f.train_start,
                    "test_start": f.test_start,
                    "n_train": f.n_train,
                    "n_test": f.n_test,
                    **f.metrics.as_dict(),
                }
                for f in self.folds
            ],
            "mean": self.mean,
            "std": self.std,
        }


def backtest(
    frame: pd.DataFrame,
    fit_and_score: Callable[[pd.DataFrame, pd.DataFrame], tuple[np.ndarray, float]],
    *,
    model_type: str,
    start: pd.Timestamp | str,
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
    folds: int = 4,
    step_days: int = 7,
    review_cost: float = 10.0,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Prequential backtest: train on each fold's window, score its test window after the delay.

    Args:
        frame: Labelled feature frame.
        fit_and_score: Trains on a frame and returns (test scores, threshold) for the second frame.
        model_type: Name recorded in the result.
        start: First training day of the first fold.
        train_days: Training window length.
        delay_days: Delay window length (never trained on).
        test_days: Test window length.
        folds: Number of folds.
        step_days: Days between fold starts.
        review_cost: Cost of a false alert.
        progress: Called with the fold index after each fold.

    Returns:
        Per-fold metrics and their mean and standard deviation.

    Raises:
        ValueError: A fold has no training or no test data.
    """
    first = _utc_day(start)
    results = []
    for i in range(folds):
        split = train_delay_test_split(
            frame, first + pd.Timedelta(days=i * step_days), train_days, delay_days, test_days
        )
        if split.train.empty or split.test.empty or split.train[schema.LABEL].sum() == 0:
            raise ValueError(
                f"fold {i}: training window from {split.train_start.date()} or test window from "
                f"{split.test_start.date()} has no data or no fraud; check --start and the data's date range"
            )
        scores, threshold = fit_and_score(split.train, split.test)
        metrics = compute_metrics(split.test, scores, threshold, review_cost)
        LOG.info("fold %d: %s", i, {k: round(v, 4) for k, v in metrics.as_dict().items()})
        results.append(
            FoldResult(
                str(split.train_start.date()),
                str(split.test_start.date()),
                len(split.train),
                len(split.test),
                metrics,
            )
        )
        if progress is not None:
            progress(i)
    names = list(results[0].metrics.as_dict())
    table = np.array([[r.metrics.as_dict()[n] for n in names] for r in results])
    return BacktestResult(
        model_type=model_type,
        folds=results,
        mean=dict(zip(names, map(float, np.nanmean(table, axis=0)), strict=True)),
        std=dict(zip(names, map(float, np.nanstd(table, axis=0)), strict=True)),
        protocol={
            "start": str(first.date()),
            "train_days": train_days,
            "delay_days": delay_days,
            "test_days": test_days,
            "folds": folds,
            "step_days": step_days,
        },
    )


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the promotion gate.

    Attributes:
        promote: Whether the candidate should replace production.
        reasons: Human-readable reasons, one per check.
    """

    promote: bool
    reasons: list[str]


def promotion_gate(
    candidate: dict[str, float],
    production: dict[str, float] | None,
    *,
    min_ap_gain: float = 0.0,
    max_cp_loss: float = 0.0,
) -> GateDecision:
    """Compare a candidate's metrics with production's on the same test data.

    The candidate is promoted when there is no production model, or when its average precision beats production's
    by more than ``min_ap_gain`` (absolute) and its card precision@100 is not lower by more than ``max_cp_loss``.

    Args:
        candidate: Candidate metrics (``average_precision``, ``card_precision_at_100``).
        production: Production metrics on the same data, or None.
        min_ap_gain: Required AP improvement (absolute).
        max_cp_loss: Tolerated CP@100 loss (absolute).

    Returns:
        The decision and its reasons.
    """
    if production is None:
        return GateDecision(True, ["no production model: the candidate becomes the first production model"])
    ap_c, ap_p = candidate["average_precision"], production["average_precision"]
    cp_c, cp_p = candidate["card_precision_at_100"], production["card_precision_at_100"]
    ap_ok = ap_c > ap_p + min_ap_gain
    cp_ok = cp_c >= cp_p - max_cp_loss
    reasons = [
        f"average precision {ap_c:.4f} vs production {ap_p:.4f} (needs > {ap_p + min_ap_gain:.4f}): "
        + ("pass" if ap_ok else "fail"),
        f"card precision@100 {cp_c:.4f} vs production {cp_p:.4f} (needs >= {cp_p - max_cp_loss:.4f}): "
        + ("pass" if cp_ok else "fail"),
    ]
    return GateDecision(ap_ok and cp_ok, reasons)


def plot_curves(labels: np.ndarray, scores: np.ndarray, out_dir: Path, title: str = "") -> dict[str, Path]:
    """Write ROC and precision-recall curves as PNG.

    Args:
        labels: 0/1 labels.
        scores: Scores.
        out_dir: Directory for ``roc.png`` and ``pr.png``.
        title: Prefix for the plot titles.

    Returns:
        Paths of the written images by kind (``roc``, ``pr``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    auc = roc_auc_score(labels, scores)
    ap = average_precision_score(labels, scores)
    paths = {}
    for kind, (x, y, xl, yl, label, diag) in {
        "roc": (fpr, tpr, "false positive rate", "true positive rate", f"ROC AUC {auc:.3f}", True),
        "pr": (
            recall,
            precision,
            "recall",
            "precision",
            f"AP {ap:.3f} (base rate {labels.mean():.4f})",
            False,
        ),
    }.items():
        fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
        ax.plot(x, y, lw=1.5, label=label)
        if diag:
            ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        else:
            ax.axhline(labels.mean(), ls="--", c="grey", lw=0.8)
        ax.set(xlabel=xl, ylabel=yl, xlim=(0, 1), ylim=(0, 1.02), title=f"{title} {kind.upper()} curve".strip())
        ax.legend(loc="lower right" if diag else "upper right")
        fig.tight_layout()
        path = out_dir / f"{kind}.png"
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths[kind] = path
    return paths


def summarise(results: Sequence[BacktestResult]) -> pd.DataFrame:
    """Table of mean ± std per model for printing.

    Args:
        results: Backtests of several models.

    Returns:
        One row per model, one column per headline metric.
    """
    rows = {r.model_type: {m: f"{r.mean[m]:.3f} ± {r.std[m]:.3f}" for m in METRIC_NAMES} for r in results}
    return pd.DataFrame.from_dict(rows, orient="index")
