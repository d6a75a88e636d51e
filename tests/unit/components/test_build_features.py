"""build_features' body: every feature of the validated transactions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from kfp.dsl import Dataset

from components.build_features import build_features
from fraud_detection.data import schema
from tests.unit.components.helpers import art


def test_build_features_writes_every_feature(tmp_path: Path, small_raw: pd.DataFrame):
    validated = art(Dataset, tmp_path / "validated")
    schema.write_frame(schema.validate_transactions(small_raw), validated.path)
    features = art(Dataset, tmp_path / "features")
    build_features.python_func(validated=validated, features=features, label_delay_days=7)
    frame = pd.read_parquet(features.path)
    schema.validate_feature_frame(frame)
    assert len(frame) == len(small_raw)
    assert schema.LABEL in frame.columns
    assert features.metadata == {"rows": len(small_raw), "features": len(schema.FEATURES)}
