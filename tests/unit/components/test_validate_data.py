"""validate_data's body: the normalised, windowed transactions, and errors naming the problem in bad data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kfp.dsl import Dataset

from components.validate_data import validate_data
from fraud_detection.data import schema
from tests.unit.components.helpers import art


def _raw_dir(tmp_path: Path, frame: pd.DataFrame, name: str = "tx.parquet") -> Dataset:
    raw = art(Dataset, tmp_path / "raw")
    schema.write_frame(frame, Path(raw.path) / name)
    return raw


def test_validate_writes_the_normalised_window(tmp_path: Path, small_raw: pd.DataFrame):
    shuffled = small_raw.sample(frac=1.0, random_state=0)
    validated = art(Dataset, tmp_path / "validated")
    validate_data.python_func(raw=_raw_dir(tmp_path, shuffled), validated=validated, test_days=10)
    out = pd.read_parquet(validated.path)
    assert len(out) == len(small_raw)
    assert out[schema.EVENT_TIME].is_monotonic_increasing
    assert str(out[schema.EVENT_TIME].dt.tz) == "UTC"
    assert validated.metadata["rows"] == len(small_raw)
    assert 0 < validated.metadata["fraud_rate"] < 0.5


def test_validate_cuts_the_data_window(tmp_path: Path, small_raw: pd.DataFrame):
    validated = art(Dataset, tmp_path / "validated")
    end = small_raw[schema.EVENT_TIME].min().floor("D") + pd.Timedelta(days=40)
    validate_data.python_func(
        raw=_raw_dir(tmp_path, small_raw),
        validated=validated,
        window_end=end.strftime("%Y-%m-%d"),
        window_days=30,
        test_days=10,
    )
    times = pd.read_parquet(validated.path)[schema.EVENT_TIME]
    assert times.min() >= end - pd.Timedelta(days=30)
    assert times.max() < end


def test_validate_reads_csv_with_a_column_map(tmp_path: Path, small_raw: pd.DataFrame):
    renamed = small_raw.rename(columns={"amount": "amt", "customer_id": "card"})
    raw = art(Dataset, tmp_path / "raw")
    Path(raw.path).mkdir()
    renamed.to_csv(Path(raw.path) / "tx.csv", index=False)
    validated = art(Dataset, tmp_path / "validated")
    validate_data.python_func(raw=raw, validated=validated, column_map="amt=amount, card=customer_id", test_days=10)
    assert {"amount", "customer_id"} <= set(pd.read_parquet(validated.path).columns)


def _negative(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index[:3], "amount"] = -1.0
    return out


@pytest.mark.parametrize(
    ("mutate", "kwargs", "message"),
    [
        (_negative, {}, r"column 'amount': 3 negative amount\(s\)"),
        (lambda df: df.drop(columns=["terminal_id"]), {}, r"missing column\(s\): terminal_id"),
        (lambda df: df.drop(columns=["is_fraud"]), {}, r"missing column\(s\): is_fraud"),
        (lambda df: df.assign(is_fraud=0), {}, r"'is_fraud': the training window needs both fraud and legitimate"),
        (lambda df: df, {"window_days": 15}, r"spans 15 day\(s\); training needs at least 19"),
        (lambda df: df, {"min_rows": 10**7}, r"holds \d+ transaction\(s\); min_rows is 10000000"),
    ],
    ids=["negative-amount", "missing-column", "no-label", "no-fraud", "too-few-days", "too-few-rows"],
)
def test_validate_rejects_bad_data_with_a_message_naming_the_problem(
    tmp_path: Path, small_raw: pd.DataFrame, mutate: Any, kwargs: dict[str, Any], message: str
):
    validated = art(Dataset, tmp_path / "validated")
    with pytest.raises(schema.SchemaError, match=message):
        validate_data.python_func(
            raw=_raw_dir(tmp_path, mutate(small_raw)), validated=validated, test_days=10, **kwargs
        )
    assert not Path(validated.path).exists()
