"""``fraud simulate --output DIR``: day partitions written as they are simulated; mistakes are one-line errors."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate

runner = CliRunner()
SMALL = ["--customers", "200", "--terminals", "400", "--days", "5", "--seed", "4"]


def test_a_directory_output_gets_one_partition_per_day_equal_to_the_file_output(tmp_path: Path):
    out = tmp_path / "tx"
    result = runner.invoke(app, ["simulate", *SMALL, "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "5/5" in result.output, "the progress bar counts days"
    assert sorted(p.parent.name for p in out.glob("day=*/part-0.parquet")) == [f"day=2018-04-0{d}" for d in range(1, 6)]
    assert (out / "_SUCCESS").is_file()
    file_out = tmp_path / "tx.parquet"
    assert runner.invoke(app, ["simulate", *SMALL, "--output", str(file_out)]).exit_code == 0
    pd.testing.assert_frame_equal(schema.read_transactions(out), schema.read_transactions(file_out))
    expected = simulate(SimulationConfig(n_customers=200, n_terminals=400, n_days=5, seed=4))
    assert len(schema.read_transactions(out)) == len(expected)
    # a second run replaces the complete first one
    result = runner.invoke(app, ["simulate", *SMALL[:4], "--days", "2", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("day=*"))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tx", "tx.parquet"]


@pytest.mark.parametrize(
    ("setup", "output", "message"),
    [
        ("foreign", "{tmp}/mine", "not empty and holds no _SUCCESS"),
        ("file", "{tmp}/plain", "is a file"),
        (None, "/proc/nope/tx", "/proc"),
        (None, "{tmp}/tx.txt", "unknown suffix '.txt'"),
    ],
)
def test_a_bad_directory_output_is_a_one_line_error_before_any_work(
    setup: str | None, output: str, message: str, tmp_path: Path
):
    if setup == "foreign":
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("keep me")
    elif setup == "file":
        (tmp_path / "plain").write_text("keep me")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = runner.invoke(app, ["simulate", *SMALL, "--output", output.format(tmp=tmp_path)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "error:" in text and message in text, result.output
    assert "Traceback" not in result.output and "simulating" not in text, "checked before the work"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "nothing written or removed"
