"""train_model's ``params_json``: parameters chosen by ``fraud backtest --select`` reach the bundle; bad ones fail."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from kfp.dsl import Dataset, Model

from components.train_model import train_model
from fraud_detection.data import schema
from fraud_detection.model.bundle import load_bundle
from tests.unit.components.helpers import TRAIN, art


def test_params_json_overrides_the_component_parameters(tmp_path: Path, small_features: pd.DataFrame):
    features = art(Dataset, tmp_path / "features")
    schema.write_frame(small_features, features.path)
    bundle = art(Model, tmp_path / "bundle")
    chosen = '{"model_type": "hgb", "params": {"max_iter": 7, "max_leaf_nodes": 15}, "selected_by": {}}'
    train_model.python_func(
        features=features, bundle=bundle, test_set=art(Dataset, tmp_path / "t"), **TRAIN, params_json=chosen
    )
    params = load_bundle(bundle.path).metadata.params
    assert (params["max_iter"], params["max_leaf_nodes"]) == (7, 15)  # TRAIN's max_iter is 40, the default leaves 31
    assert params["learning_rate"] == 0.03  # a parameter the file does not set keeps the component's value


@pytest.mark.parametrize(
    ("params_json", "message"),
    [
        ('{"model_type": "hgb", "params": {"leaves": 3}}', "^params_json: unknown parameter 'leaves' for hgb"),
        ('{"model_type": "hgb", "params": {"max_iter": 3}}', "selected for hgb, not rf"),  # the default model
        ("not json", "^params_json: not valid JSON"),
    ],
)
def test_bad_params_json_fails_before_training(
    tmp_path: Path, small_features: pd.DataFrame, params_json: str, message: str
):
    features = art(Dataset, tmp_path / "features")
    schema.write_frame(small_features.head(10), features.path)  # too little to train: the check comes first
    with pytest.raises(ValueError, match=message):
        train_model.python_func(
            features=features,
            bundle=art(Model, tmp_path / "b"),
            test_set=art(Dataset, tmp_path / "t"),
            params_json=params_json,
        )
