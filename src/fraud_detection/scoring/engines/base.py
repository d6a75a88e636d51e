"""The engine interface and the margin/probability maths the engines share."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

_P_CLIP = 1e-6


class Engine(Protocol):
    """A compiled (or fallback) evaluator of a CalibratedPipeline's margin."""

    name: str
    method: str
    baseline_margin: float

    def margin(self, X: np.ndarray) -> np.ndarray:
        """Margin of each row (the pipeline's decision function)."""
        ...

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(margin (N,), margin-space contributions (N, F), baseline margin)."""
        ...


# --------------------------------------------------------------------------------------------------------------
# Compiled engines
# --------------------------------------------------------------------------------------------------------------


def _sigmoid(z: float) -> float:
    """Logistic function of a float, without overflow."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _logit(p: np.ndarray | float) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _P_CLIP, 1.0 - _P_CLIP)
    return np.asarray(np.log(q / (1.0 - q)))


def _rescale(total_from: np.ndarray, total_to: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Per-row positive factor mapping additive parts of one total onto another (a monotone transform's change).

    Args:
        total_from: Change in the source space, per row.
        total_to: Change in the target space, per row.
        slope: The transform's derivative at the row, used where the change is ~0.

    Returns:
        Factors k with ``k * total_from == total_to``.
    """
    small = np.abs(total_from) < 1e-12
    safe = np.where(small, 1.0, total_from)
    return np.where(small, slope, total_to / safe)
