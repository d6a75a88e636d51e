"""Any other scikit-learn model, scored through scikit-learn itself."""

from __future__ import annotations

from typing import Any

import numpy as np


class SklearnEngine:
    """Fallback: the model's own margin; reason codes by occlusion against reference values (not additive).

    Args:
        model: A CalibratedPipeline-like object with ``margin(X)``.
        reference_row: Per-feature reference values (the bundle's reference medians).
    """

    name = "sklearn"
    method = "occlusion"

    def __init__(self, model: Any, reference_row: np.ndarray) -> None:
        self.model = model
        self.reference_row = np.asarray(reference_row, dtype=np.float64)
        self.baseline_margin = float(self.margin(self.reference_row[None, :])[0])

    def margin(self, X: np.ndarray) -> np.ndarray:
        """The model's margin.

        Args:
            X: Feature matrix (N, F).

        Returns:
            Shape (N,).
        """
        return np.asarray(self.model.margin(X), dtype=np.float64)

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Occlusion: a feature's contribution is the margin change when it is set to its reference value.

        Args:
            X: Feature matrix (N, F).

        Returns:
            (margin, contributions (N, F), margin at the reference row).
        """
        n, f = X.shape
        margin = self.margin(X)
        occluded = np.repeat(X, f, axis=0)
        cols = np.tile(np.arange(f), n)
        occluded[np.arange(n * f), cols] = self.reference_row[cols]
        contrib = margin[:, None] - self.margin(occluded).reshape(n, f)
        return margin, contrib, self.baseline_margin
