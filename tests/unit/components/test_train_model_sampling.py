"""train_model on day partitions with ``sample_legit``: a weighted sample trains, the test rows are all there."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from kfp.dsl import Dataset, Model

from components.train_model import train_model
from fraud_detection.data import schema
from fraud_detection.data.window import holdout_split
from fraud_detection.model.bundle import load_bundle
from tests.helpers.feature_sets import write_day_partitions
from tests.unit.components.helpers import TRAIN, art


def test_day_partitions_train_on_a_weighted_sample_and_keep_every_test_row(
    tmp_path: Path, small_features: pd.DataFrame
):
    features = art(Dataset, tmp_path / "features")
    write_day_partitions(small_features, Path(features.path))  # what the Spark engines pass on
    bundle, test_set = art(Model, tmp_path / "bundle"), art(Dataset, tmp_path / "test_set")
    train_model.python_func(
        features=features, bundle=bundle, test_set=test_set, **{**TRAIN, "model_type": "logreg", "sample_legit": 0.2}
    )
    meta = load_bundle(bundle.path).metadata
    assert meta.params["sampling"]["legit_rate"] == 0.2
    expected = holdout_split(small_features, TRAIN["test_days"], TRAIN["delay_days"], 28)
    assert meta.training.n_fraud == int(expected.train[schema.LABEL].sum())
    assert meta.training.n_rows < 0.4 * len(expected.train)
    test = pd.read_parquet(test_set.path)
    assert set(test[schema.TRANSACTION_ID].astype("int64")) == set(expected.test[schema.TRANSACTION_ID])
    assert "sample_weight" not in test.columns
