"""Standard scaler plus logistic regression as one dot product, with exact linear reason codes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class LinearEngine:
    """Folded StandardScaler(s) + binary LogisticRegression: ``margin = X @ coef + intercept``.

    Args:
        coef: Effective coefficients on the raw features, shape (F,).
        intercept: Effective intercept.
        center: Training mean of each raw feature (the baseline point), shape (F,).
        name: Engine name.
    """

    method = "linear"

    def __init__(self, coef: np.ndarray, intercept: float, center: np.ndarray, name: str = "linear-compiled") -> None:
        self.name = name
        self.coef = np.ascontiguousarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.center = np.ascontiguousarray(center, dtype=np.float64)
        self.baseline_margin = float(self.center @ self.coef + self.intercept)

    def margin(self, X: np.ndarray) -> np.ndarray:
        """Margin of each row.

        Args:
            X: Feature matrix (N, F).

        Returns:
            Shape (N,).
        """
        return np.asarray(X @ self.coef + self.intercept)

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Margins, per-feature contributions relative to the training mean, and the baseline margin.

        Args:
            X: Feature matrix (N, F).

        Returns:
            (margin, contributions (N, F), baseline margin).
        """
        contrib = (X - self.center) * self.coef
        return self.margin(X), contrib, self.baseline_margin


def _linear_engine(steps: Sequence[Any], n_features: int) -> LinearEngine | None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    *pre, clf = steps
    if not isinstance(clf, LogisticRegression) or clf.coef_.shape != (1, n_features):
        return None
    # Fold x -> (x - mean) / scale of each scaler, innermost last, into an affine map x -> x * s + o.
    scale = np.ones(n_features)
    offset = np.zeros(n_features)
    for step in pre:
        if not isinstance(step, StandardScaler):
            return None
        mean = step.mean_ if step.with_mean and step.mean_ is not None else np.zeros(n_features)
        sd = step.scale_ if step.with_std and step.scale_ is not None else np.ones(n_features)
        scale, offset = scale / sd, (offset - mean) / sd
    w = clf.coef_[0].astype(np.float64)
    coef = w * scale
    intercept = float(clf.intercept_[0] + w @ offset)
    # The baseline point maps to 0 after the scalers: the training mean of the raw features.
    center = -offset / scale
    return LinearEngine(coef, intercept, center)
