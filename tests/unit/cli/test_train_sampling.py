"""``fraud train --sample-legit / --max-rows / --max-frauds`` on day-partitioned features, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.data import schema
from fraud_detection.model.bundle import METADATA_FILE
from tests.helpers.feature_sets import write_day_partitions

runner = CliRunner()


@pytest.fixture(scope="module")
def by_day(small_features: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small feature set as ``fraud features --engine spark`` writes it."""
    return write_day_partitions(small_features, tmp_path_factory.mktemp("features") / "by_day")


def _train(data: Path, bundle: Path, *extra: str) -> dict[str, object]:
    args = ["train", "--data", str(data), "--output", str(bundle), "--test-days", "10", "--model", "logreg", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta: dict[str, object] = json.loads((bundle / METADATA_FILE).read_text())
    return meta


def test_a_sampled_training_records_its_rate_and_tests_on_every_row(by_day: Path, tmp_path: Path):
    full = _train(by_day, tmp_path / "full")
    sampled = _train(by_day, tmp_path / "sampled", "--sample-legit", "0.2")
    params, training = sampled["params"], sampled["training"]
    assert isinstance(params, dict) and isinstance(training, dict) and isinstance(full["training"], dict)
    assert params["sampling"]["legit_rate"] == 0.2
    assert "sampling" not in full["params"]  # type: ignore[operator]
    assert training["n_rows"] < 0.4 * full["training"]["n_rows"]
    assert training["n_fraud"] == full["training"]["n_fraud"]
    full_metrics, metrics = full["metrics"], sampled["metrics"]
    assert isinstance(full_metrics, dict) and isinstance(metrics, dict)
    assert metrics["n_transactions"] == full_metrics["n_transactions"]  # the test window is never sampled
    assert metrics["average_precision"] > full_metrics["average_precision"] - 0.1


def test_max_rows_caps_the_training_rows(by_day: Path, tmp_path: Path):
    meta = _train(by_day, tmp_path / "capped", "--max-rows", "3000")
    training, params = meta["training"], meta["params"]
    assert isinstance(training, dict) and isinstance(params, dict)
    assert training["n_rows"] <= 3000 + training["n_fraud"]
    assert params["sampling"]["legit_rate"] < 0.3


def test_max_frauds_caps_the_training_frauds_and_records_their_rate(by_day: Path, tmp_path: Path):
    full = _train(by_day, tmp_path / "full")["training"]
    meta = _train(by_day, tmp_path / "capped", "--max-frauds", "20")
    training, params = meta["training"], meta["params"]
    assert isinstance(full, dict) and isinstance(training, dict) and isinstance(params, dict)
    assert full["n_fraud"] > 40  # the cap bites
    assert 0 < training["n_fraud"] <= 20
    assert 0 < params["sampling"]["fraud_rate"] < 1 and params["sampling"]["legit_rate"] == 1.0


def _one_error_line(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "60"},
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--sample-legit", "0", "error: --sample-legit must be in (0, 1], got 0.0"),
        ("--sample-legit", "1.5", "error: Invalid value for '--sample-legit'"),
        ("--sample-legit", "x", "error: Invalid value for '--sample-legit'"),
        ("--max-rows", "0", "error: Invalid value for '--max-rows'"),
        ("--max-frauds", "0", "error: Invalid value for '--max-frauds'"),
    ],
)
def test_a_bad_sampling_value_is_one_line(by_day: Path, tmp_path: Path, flag: str, value: str, message: str):
    _one_error_line(["train", "--data", str(by_day), "--output", str(tmp_path / "b"), flag, value], message)
    assert not (tmp_path / "b").exists()


def test_sampling_raw_transactions_says_it_needs_features(small_raw: pd.DataFrame, tmp_path: Path):
    raw = schema.write_frame(small_raw, tmp_path / "tx.csv")
    _one_error_line(
        ["train", "--data", str(raw), "--output", str(tmp_path / "b"), "--max-rows", "100"],
        "error: --sample-legit, --max-rows and --max-frauds need a features Parquet file or directory",
    )
