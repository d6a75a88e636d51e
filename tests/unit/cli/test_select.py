"""``fraud backtest --select --params-out`` and ``fraud train --params``: the chosen parameters reach the bundle."""

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
from fraud_detection.model.selection import parse_params

runner = CliRunner()
# Two weekly 7/7/7 test folds from 2018-05-02 on the small simulated set (04-01..05-30): validation from 04-11.
FOLDS = ["--start", "2018-05-02", "--folds", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def features(small_features: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return schema.write_frame(small_features, tmp_path_factory.mktemp("select") / "features.parquet")


def test_select_writes_the_best_validation_point_and_train_uses_it(features: Path, tmp_path: Path):
    params, report = tmp_path / "params.json", tmp_path / "report.json"
    args = ["backtest", "--data", str(features), "--select", "--model", "hgb", *FOLDS, "--grid", "max_iter=1,30"]
    result = runner.invoke(app, [*args, "--params-out", str(params), "--output-json", str(report)])
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    grid = doc["selection"]["grid"]
    assert [p["max_iter"] for p in grid] == [1, 30]
    best = max(grid, key=lambda p: p["mean"]["average_precision"])
    assert doc["selection"]["params"] == {"max_iter": best["max_iter"]} == {"max_iter": 30}
    assert doc["selection"]["n_fits"] == 4
    assert doc["selection"]["validation_folds"]["start"] == "2018-04-11"
    assert doc["test_folds"]["start"] == "2018-05-02"
    assert "chosen / test" in result.output
    assert parse_params(params.read_text()).params == {"max_iter": 30}

    bundle = tmp_path / "bundle"
    train_args = ["train", "--data", str(features), "--model", "hgb", "--output", str(bundle), "--test-days", "10"]
    trained = runner.invoke(app, [*train_args, "--params", str(params)])
    assert trained.exit_code == 0, trained.output
    meta = json.loads((bundle / METADATA_FILE).read_text())
    assert meta["params"]["max_iter"] == 30  # the file's value, not --max-iter's default 300


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
    ("content", "message"),
    [
        ('{"model_type": "hgb", "params": {"max_itr": 5}}', "error: --params {path}: unknown parameter 'max_itr'"),
        ('{"model_type": "hgb", "extra": 1}', "error: --params {path}: unknown key 'extra'"),
        ("{", "error: --params {path}: not valid JSON"),
        ('{"model_type": "hgb", "params": {}}', "error: --params {path} holds parameters for hgb, but --model is rf"),
    ],
)
def test_train_refuses_a_bad_params_file_in_one_line(tmp_path: Path, content: str, message: str):
    path = tmp_path / "params.json"
    path.write_text(content)
    # The data does not exist: the params file is checked before anything is read.
    args = ["train", "--data", str(tmp_path / "none.parquet"), "--output", str(tmp_path / "b"), "--params", str(path)]
    _one_error_line(args, message.format(path=path))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--select", "--model", "logreg"], "error: model type 'logreg' has no tunable parameters"),
        (["--select", "--model", "hgb", "--model", "rf"], "error: --select tunes one model at a time"),
        (["--select", "--grid", "max_iter=10"], "error: unknown parameter 'max_iter' for rf"),
        (["--select", "--grid", "max_iter"], "error: --grid 'max_iter': expected NAME=V1,V2"),
        (["--select", "--grid", "max_iter=ten"], "error: --grid max_iter: 'ten' is not a number or null"),
        (["--select", "--metric", "roc_auc"], "error: --metric 'roc_auc': choose from average_precision"),
        (["--select", "--validation-start", "2018-04-20"], "error: validation folds from 2018-04-20 test up to"),
        (["--params-out", "p.json"], "error: --params-out, --grid and --validation-start need --select"),
    ],
)
def test_backtest_select_refuses_bad_flags_in_one_line(features: Path, extra: list[str], message: str):
    _one_error_line(["backtest", "--data", str(features), *FOLDS, *extra], message)
