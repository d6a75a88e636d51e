"""train_model's body: a verified bundle, the test rows, the training window and the model type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kfp.dsl import Dataset, Model

from components.train_model import train_model
from fraud_detection.data import schema
from fraud_detection.model.bundle import MANIFEST_FILE, load_bundle
from tests.unit.components.helpers import TRAIN, art


def test_train_writes_a_verified_bundle_and_the_test_rows(trained: dict[str, Any]):
    bundle = load_bundle(trained["bundle"].path)
    assert (Path(trained["bundle"].path) / MANIFEST_FILE).exists()
    assert bundle.metadata.version == trained["version"] == trained["bundle"].metadata["version"]
    assert bundle.metadata.training.source == "unit test"
    assert bundle.metadata.params["max_iter"] == 40
    test = pd.read_parquet(trained["test_set"].path)
    assert test[schema.EVENT_TIME].dt.floor("D").nunique() == 10
    assert trained["test_set"].metadata["n_fraud"] == int(test[schema.LABEL].sum()) > 0


def test_train_days_zero_trains_on_everything_before_the_delay_window(tmp_path: Path, small_features: pd.DataFrame):
    features = art(Dataset, tmp_path / "features")
    schema.write_frame(small_features, features.path)
    bundle = art(Model, tmp_path / "bundle")
    train_model.python_func(
        features=features, bundle=bundle, test_set=art(Dataset, tmp_path / "t"), **{**TRAIN, "train_days": 0}
    )
    lineage = load_bundle(bundle.path).metadata.training
    first = small_features[schema.EVENT_TIME].min().floor("D")
    assert pd.Timestamp(lineage.start).floor("D") == first
    assert lineage.n_rows > 28 * len(small_features) / 60


def test_train_rejects_an_unknown_model_type(tmp_path: Path, small_features: pd.DataFrame):
    features = art(Dataset, tmp_path / "features")
    schema.write_frame(small_features.head(10), features.path)
    with pytest.raises(ValueError, match="model_type must be one of"):
        train_model.python_func(
            features=features,
            bundle=art(Model, tmp_path / "b"),
            test_set=art(Dataset, tmp_path / "t"),
            model_type="xgb",
        )
