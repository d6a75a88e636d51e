"""Fixtures of the component tests: one BLAS thread, and one model trained once for the whole package."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from kfp.dsl import Dataset, Model

from components.train_model import train_model
from fraud_detection.data import schema
from tests.unit.components.helpers import TRAIN, art


@pytest.fixture(scope="package", autouse=True)
def one_thread() -> Iterator[None]:
    """One OpenMP/BLAS thread: on shared cores per-core threads spin at barriers and slow training several-fold."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="package")
def trained(tmp_path_factory: pytest.TempPathFactory, small_features: pd.DataFrame) -> dict[str, Any]:
    """train_model's body on the small feature set: the bundle and test-set artifacts and the returned version."""
    root = tmp_path_factory.mktemp("train")
    features = art(Dataset, root / "features")
    schema.write_frame(small_features, features.path)
    bundle, test_set = art(Model, root / "bundle"), art(Dataset, root / "test_set")
    version = train_model.python_func(
        features=features, bundle=bundle, test_set=test_set, source="unit test", model_name="fraud-detector", **TRAIN
    )
    return {"bundle": bundle, "test_set": test_set, "version": version}
