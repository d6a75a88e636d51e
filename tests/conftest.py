"""Shared fixtures: small simulated data, its features, a trained tiny bundle, and a SeaweedFS server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fraud_detection.data.simulate import SimulationConfig, simulate
from fraud_detection.features.offline import build_features
from fraud_detection.model.candidate import train_bundle
from fraud_detection.model.train import TrainConfig
from tests.helpers.seaweed import S3Server, seaweedfs

SMALL = SimulationConfig(n_customers=300, n_terminals=600, n_days=60, seed=7)


@pytest.fixture(scope="session")
def small_raw() -> pd.DataFrame:
    return simulate(SMALL)


@pytest.fixture(scope="session")
def small_features(small_raw: pd.DataFrame) -> pd.DataFrame:
    return build_features(small_raw)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, small_features: pd.DataFrame) -> Path:
    """A real bundle trained on the small simulated set (HistGradientBoosting, few iterations)."""
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    train_bundle(
        small_features,
        out,
        config=TrainConfig(model_type="hgb", max_iter=40),
        model_name="fraud-detector",
        test_days=10,
    )
    return out


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweed")) as server:
        yield server
