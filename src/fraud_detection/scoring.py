"""Scoring: validate an input against the feature schema, score it, decide at the bundle threshold, explain it.

Everything a model server needs beyond its protocol lives here, so that every adapter (KServe v1, v2 REST, v2 gRPC,
a batch job) validates, scores and explains the same way.

Fast path. ``predict_proba`` of a scikit-learn Pipeline costs about a millisecond per call, almost all of it input
checks, thread pools and per-tree Python calls. :func:`compile_model` turns the fitted model into flat numpy arrays
once, at load time, and evaluates those per call without scikit-learn:

* HistGradientBoosting (the default model): every internal node of every tree becomes one entry of a few arrays,
  grouped by feature. Per call, one ``np.repeat`` spreads the row over the nodes, one comparison with the raw
  thresholds (``num_threshold``; NaN follows ``missing_go_to_left``) gives each node's next node, and ``max_depth``
  gathers walk every tree at once from its root to its leaf (leaves point to themselves).
* RandomForest: the same arrays from each ``tree_`` (inputs are compared in float32, as scikit-learn does).
* StandardScaler + LogisticRegression: one dot product with the scaler folded into the coefficients.

Anything else (another estimator, categorical splits) falls back to scikit-learn, with the same results.

Reason codes. For tree ensembles they are Saabas path attributions in margin (log-odds) space: each node's expected
value is the training-count-weighted mean of its leaves; walking a row's path, each split adds the change of expected
value to the split's feature. Summed over the trees, the contributions plus the baseline margin (the expected margin
over the training data) equal the row's margin exactly. For the logistic regression the contribution of a feature is
``coef * (x - training mean) / scale``, again summing exactly to the margin minus the margin at the training mean.
Each reason code carries two scales:

* ``log_odds``: the contribution to the calibrated log-odds ``a * margin + b``; these sum exactly to
  ``logit(score) - logit(baseline_score)``.
* ``contribution``: the same numbers rescaled by one positive factor per row so that they sum exactly to
  ``score - baseline_score`` (probability scale, same signs and ranking).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from fraud_detection import schema

LOG = logging.getLogger(__name__)

#: Datatypes a v2 input tensor may have.
FLOAT_DATATYPES: tuple[str, ...] = ("FP32", "FP64")
#: Name of the single-tensor input holding every feature in schema order.
MATRIX_INPUT = "features"
#: Optional identifier inputs/keys (never model features; logged only as configured).
IDENTIFIERS: tuple[str, ...] = (schema.TRANSACTION_ID, schema.CUSTOMER_ID, schema.TERMINAL_ID)
DEFAULT_MAX_BATCH_SIZE = 1_000
DEFAULT_TOP_K = 3
_P_CLIP = 1e-6
#: Rows x nodes evaluated at once by the compiled trees (bounds the per-thread buffer to a few MB).
_NODE_BUDGET = 1 << 20


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
class Tensor:
    """A protocol-neutral input tensor (what a v2 request carries).

    Attributes:
        name: Input name.
        datatype: v2 datatype name (``FP32``, ``FP64``, ``BYTES``, ...).
        shape: Declared shape.
        data: The values: a numpy array or a flat or nested list.
    """

    name: str
    datatype: str
    shape: Sequence[int]
    data: Any


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


@dataclass
class _RawTree:
    """One fitted tree in local node ids (children -1 for leaves)."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray
    weight: np.ndarray

    @property
    def is_leaf(self) -> np.ndarray:
        return np.asarray(self.left < 0)


class TreeEnsembleEngine:
    """Flat-array evaluator of an additive tree ensemble: ``raw = base + sum of leaf values``, ``margin = link(raw)``.

    Args:
        trees: The trees (leaf values already scaled so that they add up to the raw output).
        n_features: Number of model features.
        base: Constant added to the sum of leaves.
        link: ``identity`` (boosting) or ``logit`` (forest probabilities, clipped like CalibratedPipeline.margin).
        float32_inputs: Compare inputs after casting to float32 (scikit-learn's decision trees do).
        name: Engine name for logs and metadata.
        batch_raw: Optional exact evaluator used for batches of ``batch_rows`` rows or more (scikit-learn's own
            single-threaded Cython walk is faster than numpy there; the numpy path wins for small batches).
        batch_rows: Batch size from which ``batch_raw`` is used.
    """

    method = "saabas"

    def __init__(
        self,
        trees: Sequence[_RawTree],
        n_features: int,
        *,
        base: float,
        link: str,
        float32_inputs: bool,
        name: str,
        batch_raw: Callable[[np.ndarray], np.ndarray] | None = None,
        batch_rows: int = 128,
    ) -> None:
        if link not in ("identity", "logit"):
            raise ValueError(f"unknown link {link!r}")
        self.name = name
        self.batch_raw = batch_raw
        self.batch_rows = batch_rows
        self.link = link
        self.float32_inputs = float32_inputs
        self.n_features = n_features
        self.n_trees = len(trees)
        self._local = threading.local()

        internal: list[tuple[int, int, int]] = []  # (feature, tree, local node)
        leaves: list[tuple[int, int]] = []
        expected: list[np.ndarray] = []
        max_depth = 0
        for t, tree in enumerate(trees):
            exp_value, depth = _expected_values(tree)
            expected.append(exp_value)
            max_depth = max(max_depth, depth)
            for node in range(len(tree.left)):
                if tree.left[node] < 0:
                    leaves.append((t, node))
                else:
                    internal.append((int(tree.feature[node]), t, node))
        internal.sort(key=lambda item: item[0])  # group internal nodes by feature: one np.repeat spreads a row
        n_internal, n_leaves = len(internal), len(leaves)
        gid: dict[tuple[int, int], int] = {}
        for i, (_, t, node) in enumerate(internal):
            gid[(t, node)] = i
        for j, (t, node) in enumerate(leaves):
            gid[(t, node)] = n_internal + j

        feature = np.array([f for f, _, _ in internal], dtype=np.intp)
        self.n_internal = n_internal
        self.n_leaves = n_leaves
        self.depth = max_depth
        self.counts = np.bincount(feature, minlength=n_features).astype(np.intp)
        self.threshold = np.array([trees[t].threshold[n] for _, t, n in internal], dtype=np.float64)
        self.left = np.array([gid[(t, int(trees[t].left[n]))] for _, t, n in internal], dtype=np.int32)
        self.right = np.array([gid[(t, int(trees[t].right[n]))] for _, t, n in internal], dtype=np.int32)
        self.diff = (self.right - self.left).astype(np.int32)
        self.missing_right = np.array([not trees[t].missing_left[n] for _, t, n in internal], dtype=bool)
        self.roots = np.array([gid[(t, 0)] for t in range(len(trees))], dtype=np.int32)
        self.value = np.zeros(n_internal + n_leaves, dtype=np.float64)
        self.value[n_internal:] = [trees[t].value[n] for t, n in leaves]
        self.base = float(base)
        self.baseline_raw = self.base + float(sum(e[0] for e in expected))
        # Saabas: per leaf, the change of expected value along its path, accumulated per split feature.
        contrib = np.zeros((n_leaves, n_features), dtype=np.float64)
        leaf_row = {key: j for j, key in enumerate(leaves)}
        for t, tree in enumerate(trees):
            for node, vec in _path_contributions(tree, expected[t], n_features):
                contrib[leaf_row[(t, node)]] = vec
        self.leaf_contrib = contrib
        self.baseline_margin = float(self._link(np.asarray(self.baseline_raw)))
        self.chunk = max(1, min(256, _NODE_BUDGET // max(1, n_internal + n_leaves)))

    # -- traversal ------------------------------------------------------------------------------------------
    def _buffer(self) -> np.ndarray:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = np.empty((self.chunk, self.n_internal + self.n_leaves), dtype=np.int32)
            buf[:, self.n_internal :] = np.arange(self.n_internal, self.n_internal + self.n_leaves, dtype=np.int32)
            self._local.buf = buf
        return buf

    def _leaves_one(self, x: np.ndarray) -> np.ndarray:
        # One row, 1-D arrays throughout: the latency-critical path (a handful of numpy calls plus `depth` gathers).
        buf = self._buffer()
        row = buf[0]
        internal = row[: self.n_internal]
        spread = np.repeat(x, self.counts)
        go_right = spread > self.threshold
        if np.isnan(x).any():
            go_right |= np.isnan(spread) & self.missing_right
        np.multiply(go_right, self.diff, out=internal)
        np.add(internal, self.left, out=internal)
        idx = self.roots
        for _ in range(self.depth):
            idx = row.take(idx)
        return idx

    def _leaves_chunk(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        if n == 1:
            return self._leaves_one(X[0]).reshape(1, -1)
        buf = self._buffer()
        internal = buf[:n, : self.n_internal]
        spread = np.repeat(X, self.counts, axis=1)
        go_right = spread > self.threshold
        if np.isnan(X).any():
            go_right |= np.isnan(spread) & self.missing_right
        np.multiply(go_right, self.diff, out=internal)
        np.add(internal, self.left, out=internal)
        flat = buf.reshape(-1)
        offsets = (np.arange(n, dtype=np.int64) * buf.shape[1])[:, None]
        idx = self.roots[None, :] + offsets
        for _ in range(self.depth):
            idx = flat.take(idx) + offsets
        return np.asarray(idx - offsets)

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """Global id of the leaf each row reaches in each tree.

        Args:
            X: Feature matrix (N, F), float64.

        Returns:
            Array (N, n_trees) of leaf ids (>= ``n_internal``).
        """
        if self.float32_inputs:
            X = X.astype(np.float32).astype(np.float64)
        if X.shape[0] <= self.chunk:
            return self._leaves_chunk(X)
        return np.concatenate(
            [self._leaves_chunk(X[i : i + self.chunk]) for i in range(0, X.shape[0], self.chunk)], axis=0
        )

    def _link(self, raw: np.ndarray) -> np.ndarray:
        return raw if self.link == "identity" else _logit(raw)

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Ensemble output before the link (sum of leaves plus base).

        Args:
            X: Feature matrix (N, F).

        Returns:
            Shape (N,).
        """
        if X.shape[0] == 1 and not self.float32_inputs:
            return np.array([self.value.take(self._leaves_one(X[0])).sum() + self.base])
        if self.batch_raw is not None and X.shape[0] >= self.batch_rows:
            return np.asarray(self.batch_raw(X), dtype=np.float64).reshape(-1)
        idx = self.leaves(X)
        return np.asarray(self.value.take(idx).sum(axis=1) + self.base)

    def margin(self, X: np.ndarray) -> np.ndarray:
        """The CalibratedPipeline margin of each row.

        Args:
            X: Feature matrix (N, F).

        Returns:
            Shape (N,).
        """
        return self._link(self.raw(X))

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Margins, Saabas contributions in margin space and the baseline margin.

        Args:
            X: Feature matrix (N, F).

        Returns:
            (margin (N,), contributions (N, F) summing to margin - baseline, baseline margin).
        """
        idx = self.leaves(X)
        raw = self.value.take(idx).sum(axis=1) + self.base
        rows = []
        for start in range(0, idx.shape[0], 64):
            part = idx[start : start + 64] - self.n_internal
            rows.append(self.leaf_contrib.take(part, axis=0).sum(axis=1))
        contrib = np.concatenate(rows, axis=0) if rows else np.zeros((0, self.n_features))
        baseline_margin = self.baseline_margin
        if self.link == "identity":
            return raw, contrib, baseline_margin
        margin = self._link(raw)
        clipped = (raw <= _P_CLIP) | (raw >= 1 - _P_CLIP)
        slope = np.where(clipped, 0.0, 1.0 / np.clip(raw * (1 - raw), 1e-300, None))
        k = _rescale(raw - self.baseline_raw, margin - baseline_margin, slope)
        return margin, contrib * k[:, None], baseline_margin


def _expected_values(tree: _RawTree) -> tuple[np.ndarray, int]:
    """Count-weighted mean leaf value below each node, and the tree's depth.

    Args:
        tree: The tree.

    Returns:
        (expected value per node, max depth).
    """
    n = len(tree.left)
    exp_value = np.zeros(n, dtype=np.float64)
    weight = np.zeros(n, dtype=np.float64)
    depth = np.zeros(n, dtype=np.int64)
    order: list[int] = []
    stack = [0]
    while stack:
        node = stack.pop()
        order.append(node)
        if tree.left[node] >= 0:
            for child in (int(tree.left[node]), int(tree.right[node])):
                depth[child] = depth[node] + 1
                stack.append(child)
    for node in reversed(order):
        if tree.left[node] < 0:
            exp_value[node] = tree.value[node]
            weight[node] = max(float(tree.weight[node]), 1e-12)
        else:
            lo, hi = int(tree.left[node]), int(tree.right[node])
            weight[node] = weight[lo] + weight[hi]
            exp_value[node] = (weight[lo] * exp_value[lo] + weight[hi] * exp_value[hi]) / weight[node]
    return exp_value, int(depth.max()) if n else 0


def _path_contributions(tree: _RawTree, exp_value: np.ndarray, n_features: int) -> list[tuple[int, np.ndarray]]:
    """Walk every root-to-leaf path, adding each split's change of expected value to the split's feature.

    Args:
        tree: The tree.
        exp_value: Expected value per node.
        n_features: Length of the contribution vectors.

    Returns:
        (leaf node, contribution vector) for every leaf; each vector sums to leaf value - root expected value.
    """
    out: list[tuple[int, np.ndarray]] = []
    stack: list[tuple[int, np.ndarray]] = [(0, np.zeros(n_features, dtype=np.float64))]
    while stack:
        node, vec = stack.pop()
        if tree.left[node] < 0:
            out.append((node, vec))
            continue
        feat = int(tree.feature[node])
        for child in (int(tree.left[node]), int(tree.right[node])):
            child_vec = vec.copy()
            child_vec[feat] += exp_value[child] - exp_value[node]
            stack.append((child, child_vec))
    return out


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


def _hgb_engine(clf: Any, n_features: int) -> TreeEnsembleEngine | None:
    if getattr(clf, "_preprocessor", None) is not None or getattr(clf, "n_trees_per_iteration_", 1) != 1:
        return None
    trees = []
    for iteration in clf._predictors:
        nodes = iteration[0].nodes
        if nodes["is_categorical"].any():
            return None
        is_leaf = nodes["is_leaf"].astype(bool)
        left = np.where(is_leaf, -1, nodes["left"].astype(np.int64))
        right = np.where(is_leaf, -1, nodes["right"].astype(np.int64))
        trees.append(
            _RawTree(
                feature=nodes["feature_idx"].astype(np.int64),
                threshold=nodes["num_threshold"].astype(np.float64),
                left=left,
                right=right,
                missing_left=nodes["missing_go_to_left"].astype(bool),
                value=nodes["value"].astype(np.float64),
                weight=nodes["count"].astype(np.float64),
            )
        )
    base = float(np.asarray(clf._baseline_prediction).ravel()[0])

    def batch_raw(X: np.ndarray) -> np.ndarray:
        # one thread: no OpenMP spin-waiting against the server's event loop on a busy machine
        return np.asarray(clf._raw_predict(X, n_threads=1)[:, 0])

    return TreeEnsembleEngine(
        trees, n_features, base=base, link="identity", float32_inputs=False, name="hgb-compiled", batch_raw=batch_raw
    )


def _forest_engine(forest: Any, n_features: int) -> TreeEnsembleEngine | None:
    if list(getattr(forest, "classes_", [])) != [0, 1] or getattr(forest, "n_outputs_", 1) != 1:
        return None
    trees = []
    n_trees = len(forest.estimators_)
    for est in forest.estimators_:
        t = est.tree_
        value = t.value[:, 0, :]
        p1 = value[:, 1] / np.clip(value.sum(axis=1), 1e-300, None)
        trees.append(
            _RawTree(
                feature=np.where(t.children_left < 0, 0, t.feature).astype(np.int64),
                threshold=t.threshold.astype(np.float64),
                left=t.children_left.astype(np.int64),
                right=t.children_right.astype(np.int64),
                missing_left=np.asarray(t.missing_go_to_left, dtype=bool),
                value=p1 / n_trees,
                weight=t.weighted_n_node_samples.astype(np.float64),
            )
        )
    return TreeEnsembleEngine(trees, n_features, base=0.0, link="logit", float32_inputs=True, name="rf-compiled")


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


def compile_model(model: Any, reference_row: np.ndarray | None = None, *, compiled: bool = True) -> Engine:
    """The fastest faithful evaluator of a CalibratedPipeline's margin.

    Args:
        model: A fitted CalibratedPipeline (``pipeline``, ``a``, ``b``, ``margin``).
        reference_row: Per-feature reference values for the fallback's occlusion reason codes.
        compiled: False forces the scikit-learn fallback.

    Returns:
        The engine (``TreeEnsembleEngine``, ``LinearEngine`` or ``SklearnEngine``).
    """
    n_features = len(schema.FEATURES)
    ref = np.zeros(n_features) if reference_row is None else np.asarray(reference_row, dtype=np.float64)
    if compiled:
        try:
            engine = _compile_pipeline(getattr(model, "pipeline", None), n_features)
        except Exception:  # an unexpected estimator layout: serve it through scikit-learn instead
            LOG.exception("cannot compile %s; falling back to scikit-learn", type(model).__name__)
            engine = None
        if engine is not None:
            LOG.info("compiled the model into %s", engine.name)
            return engine
        LOG.warning("model layout not compilable; scoring through scikit-learn (slower)")
    return SklearnEngine(model, ref)


def _compile_pipeline(pipeline: Any, n_features: int) -> Engine | None:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    steps = [step for _, step in getattr(pipeline, "steps", [])]
    if not steps:
        return None
    final = steps[-1]
    if len(steps) == 1 and isinstance(final, HistGradientBoostingClassifier):
        return _hgb_engine(final, n_features)
    if len(steps) == 1 and isinstance(final, RandomForestClassifier):
        return _forest_engine(final, n_features)
    return _linear_engine(steps, n_features)


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
        self._index = {name: i for i, name in enumerate(self.features)}
        self.threshold = float(threshold)
        self.max_batch_size = int(max_batch_size)
        defaults = dict(feature_defaults or {})
        self.feature_defaults = {name: float(defaults.get(name, 0.0)) for name in self.features}
        self._default_row = np.array([self.feature_defaults[f] for f in self.features], dtype=np.float64)
        self.a = float(getattr(model, "a", 1.0))
        self.b = float(getattr(model, "b", 0.0))
        self.engine: Engine = compile_model(model, self._default_row, compiled=compiled)
        self._lower = np.array([-np.inf if s.min_value is None else s.min_value for s in schema.FEATURE_SPECS])
        self._upper = np.array([np.inf if s.max_value is None else s.max_value for s in schema.FEATURE_SPECS])

    @classmethod
    def from_bundle(cls, bundle: Any, *, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, compiled: bool = True) -> Scorer:
        """A scorer for a loaded bundle (threshold from its metadata, defaults from its reference medians).

        Args:
            bundle: A :class:`fraud_detection.bundle.Bundle`.
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
        return self.score(self.check(self._default_row[None, :]), explain=True)

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
        return self._check(_as_float_matrix(X, MATRIX_INPUT, self.n_features, self.features))

    def _check(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        if n == 0:
            raise InputError("the request holds no rows", kind="empty")
        if n > self.max_batch_size:
            raise InputError(
                f"batch of {n} rows exceeds the limit of {self.max_batch_size} rows per request",
                kind="batch_too_large",
            )
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

    def from_tensors(self, tensors: Sequence[Tensor]) -> np.ndarray:
        """A feature matrix from v2 input tensors: one ``features`` [N, F] tensor, or one [N] tensor per feature.

        Identifier tensors (``transaction_id``, ``customer_id``, ``terminal_id``) are ignored here (see
        :func:`identifiers_from_tensors`).

        Args:
            tensors: The request's inputs.

        Returns:
            The validated matrix (N, F).

        Raises:
            InputError: Unknown, duplicate or missing input; wrong datatype or shape; bad values.
        """
        names = [t.name for t in tensors]
        if not tensors:
            raise InputError("the request has no inputs", kind="missing_feature")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InputError(f"input {duplicates[0]!r} appears more than once", kind="format", field=duplicates[0])
        unknown = [n for n in names if n not in self._index and n != MATRIX_INPUT and n not in IDENTIFIERS]
        if unknown:
            raise InputError(
                f"unknown input {unknown[0]!r}: expected {MATRIX_INPUT!r} or one input per feature "
                f"({', '.join(self.features)})",
                kind="unknown_feature",
                field=unknown[0],
            )
        features = [t for t in tensors if t.name not in IDENTIFIERS]
        matrix = [t for t in features if t.name == MATRIX_INPUT]
        if matrix:
            if len(features) > 1:
                other = next(t.name for t in features if t.name != MATRIX_INPUT)
                raise InputError(
                    f"input {other!r} cannot be combined with {MATRIX_INPUT!r}: send either one {MATRIX_INPUT!r} "
                    "tensor or one tensor per feature",
                    kind="format",
                    field=other,
                )
            t = matrix[0]
            _check_datatype(t)
            shape = list(t.shape)
            if len(shape) != 2 or shape[1] != self.n_features:
                raise InputError(
                    f"input {MATRIX_INPUT!r}: shape {shape}, expected [N, {self.n_features}] with the features in "
                    f"schema order ({', '.join(self.features)})",
                    kind="shape",
                    field=MATRIX_INPUT,
                )
            X = _tensor_array(t, (shape[0], self.n_features))
            return self._check(np.ascontiguousarray(X, dtype=np.float64))
        missing = [f for f in self.features if f not in names]
        if missing:
            raise InputError(
                f"missing feature(s): {', '.join(missing)} (send every feature as its own input, or one "
                f"{MATRIX_INPUT!r} input)",
                kind="missing_feature",
                field=missing[0],
            )
        n_rows: int | None = None
        X = np.empty((0, 0))
        for t in features:
            _check_datatype(t)
            shape = list(t.shape)
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
                raise InputError(
                    f"input {t.name!r}: shape {shape}, expected [N] (one value per row)", kind="shape", field=t.name
                )
            if n_rows is None:
                n_rows = int(shape[0])
                if n_rows > self.max_batch_size:
                    self._check(np.zeros((n_rows, 0)))
                X = np.empty((n_rows, self.n_features), dtype=np.float64)
            elif int(shape[0]) != n_rows:
                raise InputError(
                    f"input {t.name!r}: {shape[0]} rows, but the first input has {n_rows}", kind="shape", field=t.name
                )
            X[:, self._index[t.name]] = _tensor_array(t, (n_rows,))
        return self._check(X)

    def from_records(
        self, records: Sequence[Any], *, required: Sequence[str] | None = None
    ) -> tuple[np.ndarray, list[list[str]]]:
        """A feature matrix from JSON-like records (v1 ``instances`` or the seed's ``features`` object).

        Features listed in ``required`` must be present; any other feature may be omitted and is then filled
        with the bundle's reference median, and reported per row (never silently).

        Args:
            records: One mapping of feature name to number per row.
            required: Features that must be present (default: all of them).

        Returns:
            (matrix (N, F), per row the names of the features that were filled in).

        Raises:
            InputError: A record is not an object, has an unknown key, lacks a required feature, or holds a value
                that is not a finite number in the schema's range.
        """
        need = tuple(self.features if required is None else required)
        n = len(records)
        if n == 0:
            raise InputError("the request holds no rows", kind="empty")
        if n > self.max_batch_size:
            self._check(np.zeros((n, 0)))
        X = np.empty((n, self.n_features), dtype=np.float64)
        X[:] = self._default_row
        imputed: list[list[str]] = []
        for row, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise InputError(
                    f"row {row}: expected an object of feature name to number, got {type(record).__name__}",
                    kind="format",
                )
            for name in need:
                if name not in record:
                    raise InputError(f"row {row}: missing feature {name!r}", kind="missing_feature", field=name)
            for key, value in record.items():
                col = self._index.get(key)
                if col is None:
                    if key in IDENTIFIERS:
                        continue
                    raise InputError(
                        f"row {row}: unknown feature {key!r} (known: {', '.join(self.features)})",
                        kind="unknown_feature",
                        field=str(key),
                    )
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InputError(
                        f"feature {key!r}: expected a number in row {row}, got {type(value).__name__} {value!r:.40}",
                        kind="datatype",
                        field=key,
                    )
                try:
                    X[row, col] = float(value)
                except OverflowError as exc:
                    raise InputError(
                        f"feature {key!r}: {str(value)[:20]}... in row {row} is not a finite number",
                        kind="not_finite",
                        field=key,
                    ) from exc
            imputed.append([f for f in self.features if f not in record])
        return self._check(X), imputed

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


def identifiers_from_tensors(tensors: Sequence[Tensor], n_rows: int) -> dict[str, list[str]]:
    """Identifier columns carried as BYTES tensors (``transaction_id``, ``customer_id``, ``terminal_id``).

    Args:
        tensors: The request's inputs.
        n_rows: Rows in the request.

    Returns:
        Identifier name to one string per row.

    Raises:
        InputError: An identifier tensor has the wrong number of values.
    """
    out: dict[str, list[str]] = {}
    for t in tensors:
        if t.name not in IDENTIFIERS:
            continue
        try:
            values = list(np.asarray(t.data, dtype=object).reshape(-1))
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"input {t.name!r}: not a flat list of strings ({exc})", kind="shape", field=t.name
            ) from exc
        if len(values) != n_rows:
            raise InputError(f"input {t.name!r}: {len(values)} values for {n_rows} rows", kind="shape", field=t.name)
        out[t.name] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
    return out


def identifiers_from_records(records: Sequence[Any]) -> dict[str, list[str | None]]:
    """Identifier keys of JSON records (absent keys give None).

    Args:
        records: The request's records (already validated as mappings).

    Returns:
        Identifier name to one value (or None) per row, only for identifiers present in some row.
    """
    out: dict[str, list[str | None]] = {}
    for name in IDENTIFIERS:
        if any(isinstance(r, Mapping) and name in r for r in records):
            out[name] = [None if r.get(name) is None else str(r.get(name)) for r in records]
    return out


def _check_datatype(t: Tensor) -> None:
    if str(t.datatype).upper() not in FLOAT_DATATYPES:
        raise InputError(
            f"input {t.name!r}: datatype {t.datatype}, expected FP32 or FP64", kind="datatype", field=t.name
        )


def _tensor_array(t: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(t.data, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"input {t.name!r}: data is not numeric ({exc})", kind="datatype", field=t.name) from exc
    size = int(np.prod(shape))
    if arr.size != size:
        raise InputError(
            f"input {t.name!r}: {arr.size} values do not fill the declared shape {list(t.shape)}",
            kind="shape",
            field=t.name,
        )
    return arr.reshape(shape)


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
