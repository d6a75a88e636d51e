"""Tiny real models and bundles for serving tests (trained on the session's small simulated features)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fraud_detection.model.candidate import train_bundle
from fraud_detection.model.train import TrainConfig, TrainResult, train

#: Small but real configurations of each model type (seconds to train on the small set).
TINY_CONFIGS: dict[str, TrainConfig] = {
    "hgb": TrainConfig(model_type="hgb", max_iter=40),
    "logreg": TrainConfig(model_type="logreg"),
    "rf": TrainConfig(model_type="rf", n_estimators=15, min_samples_leaf=20),
}


def train_tiny(features: pd.DataFrame, model_type: str) -> TrainResult:
    """Train a tiny calibrated model of one type.

    Args:
        features: Labelled feature frame (the ``small_features`` fixture).
        model_type: ``hgb``, ``logreg`` or ``rf``.

    Returns:
        The training result (model, threshold, ...).
    """
    return train(features, TINY_CONFIGS[model_type])


def write_tiny_bundle(features: pd.DataFrame, out_dir: Path, model_type: str = "hgb") -> Path:
    """Train and write a tiny bundle directory.

    Args:
        features: Labelled feature frame.
        out_dir: Bundle directory to create.
        model_type: ``hgb``, ``logreg`` or ``rf``.

    Returns:
        The bundle directory.
    """
    train_bundle(features, out_dir, config=TINY_CONFIGS[model_type], model_name="fraud-detector", test_days=10)
    return out_dir
