"""build_features' engine choice: an unknown engine and a Spark Operator run without the chart's settings fail at
once, with a message saying what to do, before anything is staged or submitted."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from kfp.dsl import Dataset

from components.build_features import build_features
from components.spark_operator.settings import SETTINGS_DIR, SparkSettingsError
from fraud_detection.data import schema
from tests.unit.components.helpers import art


@pytest.fixture
def artifacts(tmp_path: Path, small_raw: pd.DataFrame) -> tuple[Dataset, Dataset]:
    validated = art(Dataset, tmp_path / "validated")
    schema.write_frame(schema.validate_transactions(small_raw.head(200)), validated.path)
    return validated, art(Dataset, tmp_path / "features")


def test_an_unknown_engine_is_refused(artifacts):
    validated, features = artifacts
    with pytest.raises(ValueError, match="feature_engine 'gpu': use memory, spark or spark-operator"):
        build_features.python_func(validated=validated, features=features, feature_engine="gpu")
    assert not Path(features.path).exists()


def test_spark_operator_without_the_chart_settings_says_what_to_enable(artifacts):
    assert not Path(SETTINGS_DIR).exists()  # this machine is no cluster pod
    validated, features = artifacts
    with pytest.raises(SparkSettingsError, match=r"enable the chart's spark values .* spark_operator=True"):
        build_features.python_func(validated=validated, features=features, feature_engine="spark-operator")
    assert not Path(features.path).exists()
