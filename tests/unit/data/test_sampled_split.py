"""The hold-out split read from a feature dataset: the same days and rows as in memory, only the training sampled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data import schema
from fraud_detection.data.sampled_split import read_sampled_holdout
from fraud_detection.data.sampling import WEIGHT, SampleSpec
from fraud_detection.data.window import holdout_split
from tests.helpers.feature_sets import write_day_partitions

SPLIT: dict[str, Any] = {"test_days": 10, "delay_days": 7, "train_days": None}


@pytest.fixture(scope="module")
def paths(small_features: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("features")
    return {
        "file": schema.write_frame(small_features, root / "features.parquet"),
        "days": write_day_partitions(small_features, root / "by_day", rows_per_group=500),
    }


def _ids(frame: pd.DataFrame) -> set[int]:
    return set(frame[schema.TRANSACTION_ID].astype(np.int64))


@pytest.mark.parametrize("layout", ["file", "days"])
def test_unsampled_it_is_the_in_memory_split(small_features: pd.DataFrame, paths: dict[str, Path], layout: str):
    expected = holdout_split(small_features, **SPLIT)
    got = read_sampled_holdout(paths[layout], SampleSpec(), **SPLIT).split
    assert _ids(got.train) == _ids(expected.train)
    assert _ids(got.test) == _ids(expected.test)  # known-compromised cards removed alike
    assert WEIGHT not in got.train.columns
    by_id = got.train.assign(**{schema.TRANSACTION_ID: got.train[schema.TRANSACTION_ID].astype(np.int64)})
    merged = expected.train.merge(by_id, on=schema.TRANSACTION_ID, suffixes=("", "_read"))
    for name in (*schema.FEATURES, schema.LABEL):
        np.testing.assert_array_equal(merged[name].to_numpy(np.float64), merged[f"{name}_read"].to_numpy(np.float64))
    assert (merged[schema.EVENT_TIME] == merged[f"{schema.EVENT_TIME}_read"]).all()


@pytest.mark.parametrize("layout", ["file", "days"])
def test_sampled_only_the_training_rows_change(small_features: pd.DataFrame, paths: dict[str, Path], layout: str):
    expected = holdout_split(small_features, **SPLIT)
    held = read_sampled_holdout(paths[layout], SampleSpec(legit_rate=0.2), **SPLIT)
    train, test = held.split.train, held.split.test
    assert _ids(test) == _ids(expected.test)  # never sampled
    assert WEIGHT not in test.columns
    assert _ids(train) <= _ids(expected.train)
    assert _ids(train[train[schema.LABEL] == 1]) == _ids(expected.train[expected.train[schema.LABEL] == 1])
    assert len(train) < 0.45 * len(expected.train)
    n_legit = int((expected.train[schema.LABEL] == 0).sum())
    assert abs(held.population_rows - len(expected.train)) < 4 * np.sqrt(n_legit * 0.8 / 0.2)
    assert held.sample.rate == 0.2


def test_too_few_days_and_a_raw_file_are_refused_with_a_message(paths: dict[str, Path], small_raw: pd.DataFrame):
    with pytest.raises(ValueError, match=r"the data spans 60 day\(s\); training needs at least 67"):
        read_sampled_holdout(paths["file"], SampleSpec(), test_days=60, delay_days=5)
    raw = schema.write_frame(small_raw, paths["file"].parent / "raw.parquet")
    with pytest.raises(schema.SchemaError, match="not a feature dataset, missing column"):
        read_sampled_holdout(raw, SampleSpec(legit_rate=0.5))
    with pytest.raises(schema.SchemaError, match="no such file or directory"):
        read_sampled_holdout(paths["file"].parent / "missing", SampleSpec())
