"""Compile a fitted model into the fastest engine that reproduces it."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from fraud_detection.data import schema
from fraud_detection.scoring.engines.base import Engine
from fraud_detection.scoring.engines.fallback import SklearnEngine
from fraud_detection.scoring.engines.linear import _linear_engine
from fraud_detection.scoring.engines.trees import _forest_engine, _hgb_engine

LOG = logging.getLogger(__name__)


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
