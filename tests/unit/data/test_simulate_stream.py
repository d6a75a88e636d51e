"""The simulator at scale: day partitions written as it goes, same rows as in memory, bounded memory, no partial
output, and fraud scenarios that scale with the population."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from fraud_detection.data import schema
from fraud_detection.data.simulate import (
    SUCCESS_FILE,
    DriftConfig,
    SimulationConfig,
    daily_count,
    iter_days,
    simulate,
    write_partitions,
)

CFG = SimulationConfig(
    n_customers=400,
    n_terminals=800,
    n_days=12,
    seed=5,
    drift=DriftConfig(start_day=6, amount_factor=1.5, hour_shift_hours=3.0, new_fraud_rate=0.01),
)


def _parts(out: Path) -> list[Path]:
    return sorted(out.glob("day=*/part-0.parquet"))


def test_partitions_concatenated_equal_the_in_memory_frame(tmp_path: Path):
    out = tmp_path / "tx"
    summary = write_partitions(CFG, out)
    parts = _parts(out)
    assert [p.parent.name for p in parts] == [f"day={d:%Y-%m-%d}" for d in pd.date_range("2018-04-01", periods=12)]
    streamed = pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)
    expected = simulate(CFG)
    pd.testing.assert_frame_equal(streamed, expected)
    assert (expected["fraud_scenario"] == 4).any(), "drift is part of the day generator too"
    # every row of a partition lies in its day
    for part in parts:
        day = pd.Timestamp(part.parent.name.removeprefix("day="), tz="UTC")
        times = pq.read_table(part).to_pandas()["event_time"]
        assert ((times >= day) & (times < day + pd.Timedelta(days=1))).all()
    # the contract's reader takes the directory (hive partitions, _SUCCESS skipped) and gives the same rows
    read = schema.read_transactions(out, require_label=True)
    pd.testing.assert_frame_equal(read, schema.validate_transactions(expected, require_label=True))
    done = json.loads((out / SUCCESS_FILE).read_text())
    assert done["transactions"] == summary.transactions == len(expected)
    assert done["frauds"] == summary.frauds == int(expected["is_fraud"].sum())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tx"], "no temporary directory is left"


def test_a_day_does_not_depend_on_how_many_days_follow():
    short = simulate(SimulationConfig(n_customers=300, n_terminals=600, n_days=5, seed=9))
    long = simulate(SimulationConfig(n_customers=300, n_terminals=600, n_days=9, seed=9))
    pd.testing.assert_frame_equal(short, long.iloc[: len(short)])
    assert long["event_time"].is_monotonic_increasing
    assert long["transaction_id"].tolist() == list(range(len(long)))


def test_daily_counts_scale_with_the_population_and_carry_fractions():
    assert [daily_count(2 / 10_000, 10_000, d) for d in range(5)] == [2] * 5
    assert [daily_count(3 / 5_000, 50_000, d) for d in range(5)] == [30] * 5
    assert [daily_count(2 / 10_000, 25_000, d) for d in range(4)] == [5] * 4
    assert [daily_count(2 / 10_000, 2_500, d) for d in range(4)] == [0, 1, 0, 1]  # 0.5 a day
    assert sum(daily_count(0.0123, 1_000, d) for d in range(100)) == 1_230
    assert daily_count(2 / 10_000, 600, 0, minimum=2) == 2  # the floor below the default size
    assert daily_count(1.0, 10, 0, minimum=50) == 10  # never more than the population


def test_the_fraud_rate_stays_put_when_the_population_grows_5x():
    # 35 days: past the 28-day terminal compromise, so both runs are in their steady state.
    base = SimulationConfig(n_days=35, seed=2)
    scaled = SimulationConfig(n_customers=25_000, n_terminals=50_000, n_days=35, seed=2)
    rate = {}
    for name, cfg in (("base", base), ("5x", scaled)):
        frames = list(iter_days(cfg))
        df = pd.concat(frames, ignore_index=True)
        rate[name] = df["is_fraud"].mean()
        by = df["fraud_scenario"].value_counts()
        rate[f"{name}_s2"], rate[f"{name}_s3"] = by.get(2, 0) / len(df), by.get(3, 0) / len(df)
    # Fixed daily counts (before) gave 0.2x the rate at 5x; scaled counts keep it within noise.
    assert abs(rate["5x"] / rate["base"] - 1) < 0.2, rate
    assert abs(rate["5x_s2"] / rate["base_s2"] - 1) < 0.3, rate
    assert abs(rate["5x_s3"] / rate["base_s3"] - 1) < 0.3, rate


PROBE = r"""
import resource, sys, tempfile
from fraud_detection.data.simulate import SimulationConfig, write_partitions
cfg = SimulationConfig(n_customers=50_000, n_terminals=5_000, n_days=int(sys.argv[1]), seed=1)
with tempfile.TemporaryDirectory() as d:
    rows = write_partitions(cfg, d + "/out").transactions
print(rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _peak(days: int) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(days)], check=True, capture_output=True, text=True)
    rows, rss = out.stdout.split()
    return int(rows), int(rss)


def test_memory_does_not_grow_with_the_number_of_days():
    rows_3, rss_3 = _peak(3)
    rows_24, rss_24 = _peak(24)
    extra_rows = rows_24 - rows_3
    assert extra_rows > 1_500_000
    # Held in memory, the 21 extra days would take >= 50 bytes a row (six 8-byte and two 1-byte columns): ~100 MB.
    # Streamed, peak RSS moves by allocator noise only.
    assert rss_24 - rss_3 < 0.3 * 50 * extra_rows, (rss_3, rss_24)


def test_a_failed_run_leaves_nothing_and_keeps_the_previous_output(tmp_path: Path):
    out = tmp_path / "tx"
    cfg = SimulationConfig(n_customers=100, n_terminals=200, n_days=6, seed=1)

    def boom(day: int, _rows: int) -> None:
        if day == 3:
            raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        write_partitions(cfg, out, on_day=boom)
    assert list(tmp_path.iterdir()) == [], "no partial output, no temporary directory"

    write_partitions(cfg, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="disk gone"):
        write_partitions(SimulationConfig(n_customers=100, n_terminals=200, n_days=6, seed=2), out, on_day=boom)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tx"]

    # a complete earlier run is replaced as a whole
    write_partitions(SimulationConfig(n_customers=100, n_terminals=200, n_days=2, seed=2), out)
    assert len(_parts(out)) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["tx"]


def test_a_directory_holding_other_files_or_a_file_is_refused_before_any_work(tmp_path: Path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and holds no _SUCCESS"):
        write_partitions(CFG, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        write_partitions(CFG, tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    write_partitions(SimulationConfig(n_customers=50, n_terminals=50, n_days=1), empty)
    assert (empty / SUCCESS_FILE).is_file()


def test_a_failed_final_rename_keeps_the_previous_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "tx"
    cfg = SimulationConfig(n_customers=100, n_terminals=200, n_days=3, seed=1)
    write_partitions(cfg, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    real_rename = Path.rename

    def rename(self: Path, target: Path) -> Path:
        if self.name.startswith(".tx.partial-"):
            raise OSError(28, "No space left on device", str(target))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="No space left"):
        write_partitions(SimulationConfig(n_customers=100, n_terminals=200, n_days=5, seed=2), out)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tx"]
