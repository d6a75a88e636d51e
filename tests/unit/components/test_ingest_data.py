"""ingest_data's body: simulate when no source is given, otherwise copy the source unchanged."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from kfp.dsl import Dataset

from components.ingest_data import ingest_data
from fraud_detection.data import schema
from tests.unit.components.helpers import art


def test_ingest_simulates_when_no_source(tmp_path: Path):
    raw = art(Dataset, tmp_path / "raw")
    source = ingest_data.python_func(raw=raw, n_customers=50, n_terminals=100, n_days=5, seed=1)
    files = list(Path(raw.path).iterdir())
    assert [f.name for f in files] == ["tx.parquet"]
    frame = pd.read_parquet(files[0])
    assert len(frame) > 0
    assert set(schema.RAW_REQUIRED) <= set(frame.columns)
    assert source.startswith("simulator(customers=50, terminals=100, days=5")
    assert raw.metadata["source"] == source


def test_ingest_copies_a_local_file_unchanged(tmp_path: Path):
    src = tmp_path / "input.csv"
    src.write_text("TRANSACTION_ID,TX_AMOUNT\nt1,-5\n")  # invalid on purpose: ingest never validates
    raw = art(Dataset, tmp_path / "raw")
    source = ingest_data.python_func(raw=raw, data_source=str(src), source_version="v7")
    assert (Path(raw.path) / "input.csv").read_bytes() == src.read_bytes()
    assert source == f"{src.resolve()}@v7"
    assert raw.metadata == {"source": str(src.resolve()), "source_version": "v7"}


def test_ingest_copies_a_parquet_directory(tmp_path: Path, small_raw: pd.DataFrame):
    src = tmp_path / "parts"
    schema.write_frame(small_raw.iloc[:100], src / "part-0.parquet")
    schema.write_frame(small_raw.iloc[100:200], src / "part-1.parquet")
    raw = art(Dataset, tmp_path / "raw")
    ingest_data.python_func(raw=raw, data_source=str(src))
    assert sorted(p.name for p in Path(raw.path).iterdir()) == ["part-0.parquet", "part-1.parquet"]


def test_ingest_names_a_missing_source(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"data source .*nope\.csv: no such file"):
        ingest_data.python_func(raw=art(Dataset, tmp_path / "raw"), data_source=str(tmp_path / "nope.csv"))
