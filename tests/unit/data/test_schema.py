from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data import schema
from fraud_detection.data.schema import SchemaError


def _raw(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "event_time": pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
            "customer_id": [1, 1, 2, 2][:n],
            "terminal_id": [10, 11, 10, 12][:n],
            "amount": [10.0, 20.5, 0.0, 99.0][:n],
            "is_fraud": [0, 1, 0, 0][:n],
        }
    )


def test_valid_frame_is_normalised_to_utc_and_float():
    out = schema.validate_transactions(_raw(), require_label=True)
    assert str(out["event_time"].dtype) == "datetime64[ns, UTC]"
    assert out["amount"].dtype == np.float64
    assert out["is_fraud"].dtype == np.int8


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.drop(columns=["amount"]), "missing column(s): amount"),
        (lambda df: df.assign(amount=["a", "1", "2", "3"]), "'amount': wrong type"),
        (lambda df: df.assign(amount=[1.0, -5.0, 2.0, 3.0]), "negative amount"),
        (lambda df: df.assign(amount=[1.0, np.nan, 2.0, 3.0]), "non-finite"),
        (lambda df: df.assign(event_time=["2024-01-01", "not a time", "2024-01-02", "2024-01-03"]), "unparseable"),
        (lambda df: df.assign(transaction_id=["a", "a", "b", "c"]), "duplicate id"),
        (lambda df: df.assign(is_fraud=[0, 2, 0, 0]), "not 0/1"),
        (lambda df: df.assign(customer_id=[1, None, 2, 2]), "'customer_id': 1 null"),
    ],
)
def test_bad_frame_is_rejected_naming_column_and_problem(mutate, message):
    with pytest.raises(SchemaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        schema.validate_transactions(mutate(_raw()), require_label=True)


def test_label_required_for_training():
    with pytest.raises(SchemaError, match="is_fraud"):
        schema.validate_transactions(_raw().drop(columns=["is_fraud"]), require_label=True)


def test_handbook_column_names_are_read_without_mapping(tmp_path: Path):
    df = _raw().rename(
        columns={
            "transaction_id": "TRANSACTION_ID",
            "event_time": "TX_DATETIME",
            "customer_id": "CUSTOMER_ID",
            "terminal_id": "TERMINAL_ID",
            "amount": "TX_AMOUNT",
            "is_fraud": "TX_FRAUD",
        }
    )
    path = tmp_path / "handbook.csv"
    df.to_csv(path, index=False)
    out = schema.read_transactions(path, require_label=True)
    assert list(out["amount"]) == [10.0, 20.5, 0.0, 99.0]


def test_column_map_renames_other_sources(tmp_path: Path):
    df = _raw().rename(columns={"amount": "value_eur", "event_time": "ts"})
    path = tmp_path / "other.parquet"
    df.to_parquet(path)
    mapping = schema.parse_column_map(["value_eur=amount", "ts=event_time"])
    out = schema.read_transactions(path, mapping)
    assert "amount" in out and "event_time" in out


def test_column_map_rejects_bad_items():
    with pytest.raises(SchemaError, match="SRC=DST"):
        schema.parse_column_map(["amount"])
    with pytest.raises(SchemaError, match="not a contract column"):
        schema.parse_column_map(["x=nonsense"])


def test_unknown_file_format_and_missing_file_are_clear(tmp_path: Path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SchemaError, match="unknown format"):
        schema.read_transactions(tmp_path / "x.txt")
    with pytest.raises(SchemaError, match="no such file"):
        schema.read_transactions(tmp_path / "absent.csv")


def test_feature_list_keeps_the_seed_names_and_is_unique():
    assert set(schema.SEED_FEATURES) <= set(schema.FEATURES)
    assert len(set(schema.FEATURES)) == len(schema.FEATURES)


def test_write_frame_leaves_no_temporary_file(tmp_path: Path):
    schema.write_frame(_raw(), tmp_path / "out.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]
