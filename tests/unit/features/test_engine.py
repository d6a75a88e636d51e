"""Choosing the feature engine (no Spark started): auto's memory estimate, and one-line errors when Spark cannot run."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate
from fraud_detection.features import engine

runner = CliRunner()
GIB = 2**30


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("raw")
    df = simulate(SimulationConfig(n_customers=50, n_terminals=100, n_days=10, seed=3))
    parquet, csv = root / "raw.parquet", root / "raw.csv"
    schema.write_frame(df, parquet)
    schema.write_frame(df, csv)
    return {"parquet": parquet, "csv": csv, "rows": len(df)}


def test_transactions_are_counted_from_parquet_footers_and_estimated_from_csv(raw_files):
    rows = raw_files["rows"]
    assert engine.estimate_transactions(raw_files["parquet"]) == rows
    assert abs(engine.estimate_transactions(raw_files["csv"]) - rows) < 0.05 * rows
    assert engine.estimate_transactions(raw_files["parquet"].parent) == rows  # a directory: its Parquet files


def test_auto_runs_spark_only_when_memory_would_need_more_than_the_share(raw_files):
    rows = raw_files["rows"]
    need = engine.memory_estimate_bytes(rows)
    assert need == pytest.approx(rows * 0.82 * 1024 + 0.3 * GIB)
    assert engine.choose_engine("auto", raw_files["parquet"], share=0.25, memory=int(need / 0.25) + 1) == "memory"
    assert engine.choose_engine("auto", raw_files["parquet"], share=0.25, memory=int(need / 0.25) - 1) == "spark"
    assert engine.choose_engine("memory", raw_files["parquet"], memory=1) == "memory"
    assert engine.choose_engine("spark", raw_files["parquet"], memory=1 << 60) == "spark"
    with pytest.raises(ValueError, match="use one of memory, spark, auto"):
        engine.choose_engine("gpu", raw_files["parquet"])


def test_without_java_the_spark_engine_is_one_line_naming_the_install(raw_files, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    monkeypatch.delenv("JAVA_HOME", raising=False)
    output = tmp_path / "features"
    result = runner.invoke(
        app, ["features", "--data", str(raw_files["parquet"]), "--output", str(output), "--engine", "spark"]
    )
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "needs Java 17" in text and "install with make install" in text and "Traceback" not in result.output
    assert not output.exists()


def test_without_pyspark_the_spark_engine_says_so(monkeypatch):
    real = engine.importlib.util.find_spec
    monkeypatch.setattr(engine.importlib.util, "find_spec", lambda name: None if name == "pyspark" else real(name))
    with pytest.raises(engine.SparkUnavailableError, match=r"needs pyspark .*install with make install"):
        engine.require_spark()


def test_auto_with_a_small_file_stays_in_memory_and_an_existing_non_spark_output_is_refused(raw_files, tmp_path):
    out = tmp_path / "f.parquet"
    result = runner.invoke(
        app, ["features", "--data", str(raw_files["parquet"]), "--output", str(out), "--engine", "auto"]
    )
    assert result.exit_code == 0, result.output
    assert schema.read_parquet_file(out).shape[0] == raw_files["rows"]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="not an earlier Spark feature output"):
        engine.check_spark_output(taken)
    engine.check_spark_output(tmp_path / "new")
