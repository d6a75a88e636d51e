"""The Scorer: validate a feature matrix, score it, decide at the bundle threshold, explain it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fraud_detection.data import schema
from fraud_detection.scoring.engines.base import Engine, _rescale, _sigmoid
from fraud_detection.scoring.engines.compile import compile_model
from fraud_detection.scoring.results import Explanation, InputError, ReasonCode, ScoreResult

DEFAULT_MAX_BATCH_SIZE = 1_000
DEFAULT_TOP_K = 3


# --------------------------------------------------------------------------------------------------------------
# The Scorer
# --------------------------------------------------------------------------------------------------------------


class Scorer:
    """Validates inputs, scores, decides at the bundle threshold and explains.

    Args:
        model: The bundle's CalibratedPipeline.
        threshold: Decision threshold (score >= threshold means fraud).
        feature_defaults: Reference value of each feature (used for partial v1 records and the fallback's
            occlusion reason codes).
        max_batch_size: Largest accepted number of rows per request.
        compiled: Use the compiled evaluator when the model layout allows it.
    """

    def __init__(
        self,
        model: Any,
        *,
        threshold: float,
        feature_defaults: Mapping[str, float] | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        compiled: bool = True,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self.features: tuple[str, ...] = schema.FEATURES
        self.n_features = len(self.features)
        self.feature_index = {name: i for i, name in enumerate(self.features)}
        self.threshold = float(threshold)
        self.max_batch_size = int(max_batch_size)
        defaults = dict(feature_defaults or {})
        self.feature_defaults = {name: float(defaults.get(name, 0.0)) for name in self.features}
        self.default_row = np.array([self.feature_defaults[f] for f in self.features], dtype=np.float64)
        self.a = float(getattr(model, "a", 1.0))
        self.b = float(getattr(model, "b", 0.0))
        self.engine: Engine = compile_model(model, self.default_row, compiled=compiled)
        self._lower = np.array([-np.inf if s.min_value is None else s.min_value for s in schema.FEATURE_SPECS])
        self._upper = np.array([np.inf if s.max_value is None else s.max_value for s in schema.FEATURE_SPECS])

    @classmethod
    def from_bundle(cls, bundle: Any, *, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, compiled: bool = True) -> Scorer:
        """A scorer for a loaded bundle (threshold from its metadata, defaults from its reference medians).

        Args:
            bundle: A :class:`fraud_detection.model.bundle.Bundle`.
            max_batch_size: Largest accepted batch.
            compiled: Use the compiled evaluator when possible.

        Returns:
            The scorer.
        """
        return cls(
            bundle.model,
            threshold=bundle.metadata.threshold,
            feature_defaults=reference_medians(bundle.reference),
            max_batch_size=max_batch_size,
            compiled=compiled,
        )

    # -- properties -----------------------------------------------------------------------------------------
    @property
    def engine_name(self) -> str:
        """Which evaluator scores (``hgb-compiled``, ``rf-compiled``, ``linear-compiled`` or ``sklearn``)."""
        return str(self.engine.name)

    @property
    def explanation_method(self) -> str:
        """How reason codes are computed (``saabas``, ``linear`` or ``occlusion``)."""
        return str(self.engine.method)

    @property
    def baseline_score(self) -> float:
        """Score at the baseline margin (the reference point of the reason codes)."""
        return float(self._sigmoid(np.asarray(self.engine.baseline_margin)))

    def warm_up(self) -> ScoreResult:
        """Score (and explain) the reference row once: compiles lazily built buffers and proves the model works.

        Returns:
            The result for the reference row.
        """
        return self.score(self.check(self.default_row[None, :]), explain=True)

    # -- input conversion and validation ----------------------------------------------------------------------
    def check(self, X: Any) -> np.ndarray:
        """Validate a feature matrix in schema order.

        Args:
            X: Array-like of shape (N, F).

        Returns:
            The matrix as contiguous float64.

        Raises:
            InputError: Wrong shape or type, empty, too many rows, NaN/infinity, value out of the schema's range.
        """
        return self.validate(_as_float_matrix(X, "features", self.n_features, self.features))

    def validate(self, X: np.ndarray) -> np.ndarray:
        """Validate a float64 matrix already in schema order: rows, batch limit, finiteness and schema ranges.

        Args:
            X: Matrix (N, F).

        Returns:
            The same matrix.

        Raises:
            InputError: Empty, too many rows, NaN/infinity, value out of the schema's range.
        """
        n = X.shape[0]
        if n == 0:
            raise InputError("the request holds no rows", kind="empty")
        if n > self.max_batch_size:
            raise InputError(
                f"batch of {n} rows exceeds the limit of {self.max_batch_size} rows per request",
                kind="batch_too_large",
            )
        return self.validate_values(X)

    def placeholder(self, feature: str) -> float:
        """A value inside the feature's schema range (0 when allowed), for a slot that is reported missing anyway.

        Args:
            feature: Feature name.

        Returns:
            The value.
        """
        i = self.feature_index[feature]
        return float(np.clip(0.0, self._lower[i], self._upper[i]))

    def validate_values(self, X: np.ndarray) -> np.ndarray:
        """Validate the values of a float64 matrix in schema order: finiteness and schema ranges (no row limit).

        Args:
            X: Matrix (N, F).

        Returns:
            The same matrix.

        Raises:
            InputError: NaN/infinity, value out of the schema's range.
        """
        if not np.isfinite(X).all():
            row, col = (int(v[0]) for v in np.nonzero(~np.isfinite(X)))
            name = self.features[col]
            raise InputError(
                f"feature {name!r}: {X[row, col]} in row {row} is not a finite number", kind="not_finite", field=name
            )
        low = np.less(X, self._lower)  # bounds are +-inf where the schema sets none
        high = np.greater(X, self._upper)
        if low.any() or high.any():
            is_low = bool(low.any())
            bad, bound = (low, self._lower) if is_low else (high, self._upper)
            word = "below the minimum" if is_low else "above the maximum"
            row, col = (int(v[0]) for v in np.nonzero(bad))
            name = self.features[col]
            what = "negative value" if is_low and bound[col] == 0 else "value"
            raise InputError(
                f"feature {name!r}: {what} {X[row, col]:g} in row {row} is {word} {bound[col]:g}",
                kind="out_of_range",
                field=name,
            )
        return X

    # -- scoring --------------------------------------------------------------------------------------------
    def _sigmoid(self, margin: np.ndarray) -> np.ndarray:
        if margin.shape == (1,):  # one row: plain floats are several times cheaper than numpy calls
            return np.array([_sigmoid(self.a * float(margin[0]) + self.b)])
        with np.errstate(over="ignore"):  # exp overflow gives exactly 0.0, the correct limit
            return np.asarray(1.0 / (1.0 + np.exp(-(self.a * margin + self.b))))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated fraud scores of a validated matrix (no checks; see :meth:`check`).

        Args:
            X: Feature matrix (N, F), float64.

        Returns:
            Scores, shape (N,).
        """
        return self._sigmoid(self.engine.margin(X))

    def score_batch(self, X: Any) -> np.ndarray:
        """Calibrated fraud scores of a matrix of any size, through the served engine and calibration.

        The offline path (thresholds, metrics, the promotion gate, reports, reference samples, backtests): the same
        value checks as a request (:meth:`validate_values`) and the same :meth:`predict_proba`, without the
        per-request row limit. The engines evaluate large matrices in bounded chunks themselves.

        Args:
            X: Array-like of shape (N, F) in schema order; N may exceed ``max_batch_size`` or be 0.

        Returns:
            Scores, shape (N,).

        Raises:
            InputError: Wrong shape or type, NaN/infinity, value out of the schema's range.
        """
        matrix = _as_float_matrix(X, "features", self.n_features, self.features)
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        return self.predict_proba(self.validate_values(matrix))

    def score(self, X: np.ndarray, *, explain: bool = False, top_k: int = DEFAULT_TOP_K) -> ScoreResult:
        """Score a validated matrix, decide at the threshold and optionally attach reason codes.

        Args:
            X: Feature matrix (N, F), float64, already validated.
            explain: Compute the top ``top_k`` reason codes per row.
            top_k: Number of reason codes per row.

        Returns:
            The result.
        """
        if not explain:
            scores = self.predict_proba(X)
            return ScoreResult(scores, scores >= self.threshold)
        expl = self.explain(X)
        return ScoreResult(expl.scores, expl.scores >= self.threshold, self.top_reasons(X, expl, top_k))

    def explain(self, X: np.ndarray) -> Explanation:
        """Additive attributions of each row's score (see the module docstring for the scales).

        Args:
            X: Feature matrix (N, F), float64, already validated.

        Returns:
            The explanation.
        """
        margin, contrib, base_margin = self.engine.explain(X)
        z = self.a * margin + self.b
        z0 = self.a * base_margin + self.b
        with np.errstate(over="ignore"):
            scores = 1.0 / (1.0 + np.exp(-z))
        p0 = _sigmoid(z0)
        log_odds = contrib * self.a
        k = _rescale(z - z0, scores - p0, scores * (1.0 - scores))
        return Explanation(scores, p0, log_odds * k[:, None], log_odds, self.engine.method)

    def top_reasons(
        self, X: np.ndarray, explanation: Explanation, top_k: int = DEFAULT_TOP_K
    ) -> list[list[ReasonCode]]:
        """The ``top_k`` features with the largest absolute contribution, per row.

        Args:
            X: The explained matrix.
            explanation: Its explanation.
            top_k: How many per row.

        Returns:
            Reason codes per row, largest first.
        """
        k = max(0, min(top_k, self.n_features))
        order = np.argsort(-np.abs(explanation.log_odds), axis=1, kind="stable")[:, :k]
        out = []
        for row, cols in enumerate(order):
            out.append(
                [
                    ReasonCode(
                        self.features[c],
                        float(X[row, c]),
                        float(explanation.contributions[row, c]),
                        float(explanation.log_odds[row, c]),
                    )
                    for c in cols
                ]
            )
        return out


def reference_medians(reference: pd.DataFrame | None) -> dict[str, float]:
    """Median of each feature in a bundle's reference sample (the fill-in values for partial records).

    Args:
        reference: Reference sample (features in columns); None or missing columns give 0.0.

    Returns:
        Feature name to median.
    """
    out: dict[str, float] = {}
    for name in schema.FEATURES:
        if reference is not None and name in reference.columns and len(reference):
            value = float(pd.to_numeric(reference[name], errors="coerce").median())
            out[name] = value if math.isfinite(value) else 0.0
        else:
            out[name] = 0.0
    return out


def _as_float_matrix(X: Any, name: str, n_features: int, features: Sequence[str]) -> np.ndarray:
    arr = np.asarray(X)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.number)):
        raise InputError(f"input {name!r}: dtype {arr.dtype}, expected numbers", kind="datatype", field=name)
    if arr.ndim == 1 and arr.shape[0] == n_features:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise InputError(
            f"input {name!r}: shape {list(arr.shape)}, expected [N, {n_features}] in schema order "
            f"({', '.join(features)})",
            kind="shape",
            field=name,
        )
    return np.ascontiguousarray(arr, dtype=np.float64)
