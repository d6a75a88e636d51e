"""What scoring returns: scores, decisions, reason codes; and the input error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np


class InputError(ValueError):
    """A request breaks the input contract; the message names the field and the problem.

    Args:
        message: Human-readable explanation naming the field.
        kind: Machine-readable category: ``shape``, ``datatype``, ``missing_feature``, ``unknown_feature``,
            ``not_finite``, ``out_of_range``, ``batch_too_large``, ``empty`` or ``format``.
        field: The offending input or feature, when there is one.
    """

    def __init__(self, message: str, *, kind: str = "format", field: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field


@dataclass(frozen=True)
class ReasonCode:
    """One feature's signed contribution to a score.

    Attributes:
        feature: Feature name.
        value: The row's value of the feature.
        contribution: Contribution on the probability scale (the row's contributions sum to score - baseline).
        log_odds: Contribution to the calibrated log-odds (they sum to logit(score) - logit(baseline)).
    """

    feature: str
    value: float
    contribution: float
    log_odds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form.

        Returns:
            ``{"feature", "value", "contribution", "log_odds"}`` with rounded floats.
        """
        return {
            "feature": self.feature,
            "value": float(self.value),
            "contribution": round(float(self.contribution), 6),
            "log_odds": round(float(self.log_odds), 6),
        }


@dataclass(frozen=True)
class Explanation:
    """Additive attributions of a batch of scores.

    Attributes:
        scores: Calibrated scores, shape (N,).
        baseline_score: Score of the baseline (expected margin over the training data).
        contributions: Probability-scale contributions, shape (N, F); rows sum to ``scores - baseline_score``.
        log_odds: Log-odds contributions, shape (N, F); rows sum to ``logit(scores) - logit(baseline_score)``.
        method: ``saabas`` (trees), ``linear`` (logistic regression) or ``occlusion`` (fallback, not additive).
    """

    scores: np.ndarray
    baseline_score: float
    contributions: np.ndarray
    log_odds: np.ndarray
    method: str


@dataclass(frozen=True)
class ScoreResult:
    """Scores, decisions and (when asked) reason codes of a batch.

    Attributes:
        scores: Calibrated fraud probability per row (float64).
        decisions: True where the score reaches the bundle threshold.
        reason_codes: Top contributing features per row, or None when not requested.
    """

    scores: np.ndarray
    decisions: np.ndarray
    reason_codes: list[list[ReasonCode]] | None = None

    def reason_codes_json(self) -> list[str]:
        """Each row's reason codes as a JSON string (the ``reason_codes`` BYTES output).

        Returns:
            One JSON array per row.
        """
        if self.reason_codes is None:
            return []
        return [json.dumps([rc.to_dict() for rc in row], separators=(",", ":")) for row in self.reason_codes]
