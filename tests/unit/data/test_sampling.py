"""The weighted training sample: deterministic, every fraud kept, weights that add up to the population, bounded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from fraud_detection.data import schema
from fraud_detection.data.feature_dataset import open_features, window_rows
from fraud_detection.data.sampling import WEIGHT, SampleSpec, read_sample, uniform_of_ids
from tests.helpers.feature_sets import synthetic_features, write_day_partitions

START, END = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC")


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    return synthetic_features(60_000, days=31, fraud_rate=0.02, seed=1)


@pytest.fixture(scope="module")
def as_file(population: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return schema.write_frame(population, tmp_path_factory.mktemp("file") / "features.parquet")


@pytest.fixture(scope="module")
def as_days(population: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_day_partitions(population, tmp_path_factory.mktemp("days") / "features", rows_per_group=700)


def _ids(frame: pd.DataFrame) -> set[int]:
    return set(frame[schema.TRANSACTION_ID].astype(np.int64))


def test_the_draw_of_an_id_is_fixed_and_the_same_for_its_text():
    ids = pd.Series(np.arange(200_000, dtype=np.int64))
    u = uniform_of_ids(ids)
    np.testing.assert_array_equal(u, uniform_of_ids(ids))
    np.testing.assert_array_equal(u, uniform_of_ids(ids.astype(str)))  # Spark writes ids as text
    assert u.min() >= 0.0 and u.max() < 1.0
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(counts - 20_000) < 5 * np.sqrt(20_000)), counts  # uniform, not e.g. id order


def test_the_sample_keeps_every_fraud_and_is_the_same_whatever_the_partitioning(
    population: pd.DataFrame, as_file: Path, as_days: Path
):
    spec = SampleSpec(legit_rate=0.1)
    from_file = read_sample(open_features(as_file), START, END, spec)
    from_days = read_sample(open_features(as_days), START, END, spec, batch_rows=1_000)
    again = read_sample(open_features(as_days), START, END, spec)
    frauds = _ids(population[population[schema.LABEL] == 1])
    assert frauds <= _ids(from_file.frame)
    assert _ids(from_file.frame) == _ids(from_days.frame) == _ids(again.frame)
    legit = from_file.frame[from_file.frame[schema.LABEL] == 0]
    assert 0.08 < len(legit) / (population[schema.LABEL] == 0).sum() < 0.12
    assert set(from_file.frame[WEIGHT].round(6)) == {1.0, 10.0}
    assert (from_file.frame.loc[from_file.frame[schema.LABEL] == 1, WEIGHT] == 1.0).all()


@pytest.mark.parametrize("rate", [0.3, 0.05])
def test_weights_add_up_to_the_population(population: pd.DataFrame, as_days: Path, rate: float):
    sample = read_sample(open_features(as_days), START, END, SampleSpec(legit_rate=rate))
    n_legit = int((population[schema.LABEL] == 0).sum())
    sd = np.sqrt(n_legit * (1 - rate) / rate)  # binomial count, scaled by 1 / rate
    assert abs(sample.frame[WEIGHT].sum() - len(population)) < 4 * sd
    assert len(sample.frame) < 0.5 * len(population)


def test_max_rows_caps_the_legitimate_rows_from_the_row_counts(population: pd.DataFrame, as_days: Path):
    dataset = open_features(as_days)
    assert window_rows(dataset, START, END) == len(population)
    sample = read_sample(dataset, START, END, SampleSpec(max_rows=3_000), batch_rows=2_048)
    legit = sample.frame[sample.frame[schema.LABEL] == 0]
    assert len(legit) <= 3_000
    assert len(legit) > 2_700  # the cap is used, not undershot
    assert int(sample.frame[schema.LABEL].sum()) == int(population[schema.LABEL].sum())
    assert abs(sample.frame[WEIGHT].sum() / len(population) - 1) < 0.06
    assert sample.scanned_rows == len(population)


def test_max_frauds_caps_the_frauds_with_weights_and_keeps_the_legitimate_rows(population: pd.DataFrame, as_days: Path):
    frauds = population[population[schema.LABEL] == 1]
    cap = len(frauds) // 4
    sample = read_sample(open_features(as_days), START, END, SampleSpec(max_frauds=cap), batch_rows=2_048)
    kept = sample.frame[sample.frame[schema.LABEL] == 1]
    assert cap * 0.9 < len(kept) <= cap
    assert _ids(kept) <= _ids(frauds)
    assert 0.2 < sample.fraud_rate < 0.3 and sample.rate == 1.0
    assert np.allclose(kept[WEIGHT], 1.0 / sample.fraud_rate)
    assert abs(kept[WEIGHT].sum() / len(frauds) - 1) < 0.15  # the weights stand for every fraud
    legit = sample.frame[sample.frame[schema.LABEL] == 0]
    assert len(legit) == int((population[schema.LABEL] == 0).sum()) and (legit[WEIGHT] == 1.0).all()
    again = read_sample(open_features(as_days), START, END, SampleSpec(max_frauds=cap), batch_rows=4_096)
    assert _ids(again.frame) == _ids(sample.frame)  # deterministic whatever the batches


def test_time_bounds_are_pushed_down_and_exact(population: pd.DataFrame, as_days: Path, as_file: Path):
    start, end = pd.Timestamp("2024-01-10 12:00", tz="UTC"), pd.Timestamp("2024-01-12", tz="UTC")
    inside = population[(population[schema.EVENT_TIME] >= start) & (population[schema.EVENT_TIME] < end)]
    for path in (as_days, as_file):
        dataset = open_features(path)
        assert window_rows(dataset, start, end) == len(inside)
        frame = read_sample(dataset, start, end, SampleSpec()).frame
        assert _ids(frame) == _ids(inside)
        assert WEIGHT not in frame.columns  # no sampling, no weights: training as before
        assert str(frame[schema.EVENT_TIME].dtype) == "datetime64[ns, UTC]"


def test_bad_specs_are_refused_with_their_value():
    with pytest.raises(ValueError, match=r"rate must be in \(0, 1\], got 0"):
        SampleSpec(legit_rate=0.0)
    with pytest.raises(ValueError, match="max_rows must be at least 1, got 0"):
        SampleSpec(max_rows=0)
    with pytest.raises(ValueError, match="max_frauds must be at least 1, got 0"):
        SampleSpec(max_frauds=0)


MEASURE = r"""
import json, sys
import pandas as pd, pyarrow as pa
from fraud_detection.data.feature_dataset import open_features
from fraud_detection.data.sampling import SampleSpec, read_sample
dataset = open_features(sys.argv[1])
before = pa.default_memory_pool().max_memory()
sample = read_sample(dataset, pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-03-01", tz="UTC"),
                     SampleSpec(max_rows=int(sys.argv[2])), batch_rows=8_192)
print(json.dumps({"peak": pa.default_memory_pool().max_memory(), "before": before, "rows": len(sample.frame),
                  "fraud": int(sample.frame["is_fraud"].sum()), "scanned": sample.scanned_rows}))
"""


def test_reading_a_large_set_with_max_rows_holds_a_small_share_of_it(tmp_path: Path):
    big = synthetic_features(600_000, days=60, fraud_rate=0.002, seed=2)
    path = write_day_partitions(big, tmp_path / "big", rows_per_group=8_192)
    arrow_size = pa.Table.from_pandas(big, preserve_index=False).nbytes  # about 120 MiB
    out = subprocess.run(  # a fresh process: Arrow's peak allocation is this read's alone
        [sys.executable, "-c", MEASURE, str(path), "2000"], check=True, capture_output=True, text=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["scanned"] == len(big)
    assert got["rows"] <= 2_000 + int(big[schema.LABEL].sum())
    assert got["fraud"] == int(big[schema.LABEL].sum())
    assert got["peak"] < arrow_size / 5, (got, arrow_size)  # about 12 MiB of 120: batches and the sample
