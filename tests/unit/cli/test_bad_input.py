"""A user's mistake is a one-line error with a non-zero exit, never a traceback, and nothing half-written."""

import io
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate

runner = CliRunner()


@pytest.fixture(scope="module")
def tx() -> pd.DataFrame:
    return simulate(SimulationConfig(n_customers=50, n_terminals=100, n_days=10, seed=3))


def _fails_cleanly(args: list[str], message: str, output: Path | None = None) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = " ".join(result.output.split())
    assert message in text, result.output
    assert "Traceback" not in result.output
    if output is not None:
        assert not output.exists()
        assert not [p for p in output.parent.glob(f".{output.stem}*")], "a temporary file was left"


def test_header_only_csv_is_refused_by_features_and_train(tmp_path: Path):
    data = tmp_path / "empty.csv"
    data.write_text("transaction_id,event_time,customer_id,terminal_id,amount,is_fraud\n")
    out = tmp_path / "features.parquet"
    _fails_cleanly(["features", "--data", str(data), "--output", str(out)], "no rows", out)
    bundle = tmp_path / "bundle"
    _fails_cleanly(["train", "--data", str(data), "--output", str(bundle)], "no rows")
    assert not bundle.exists()


def test_a_directory_without_data_files_says_so(tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README.txt").write_text("nothing here")
    out = tmp_path / "f.parquet"
    _fails_cleanly(["features", "--data", str(tmp_path / "data"), "--output", str(out)], "holds no CSV or Parquet", out)


def test_a_directory_of_csv_files_is_read(tmp_path: Path, tx: pd.DataFrame):
    (tmp_path / "data").mkdir()
    tx.iloc[:200].to_csv(tmp_path / "data" / "a.csv", index=False)
    tx.iloc[200:].to_csv(tmp_path / "data" / "b.csv", index=False)
    assert len(schema.read_transactions(tmp_path / "data")) == len(tx)


def test_an_unknown_output_suffix_is_refused_before_any_work(tmp_path: Path, tx: pd.DataFrame):
    data = tmp_path / "tx.csv"
    tx.to_csv(data, index=False)
    out = tmp_path / "f.txt"
    _fails_cleanly(["features", "--data", str(data), "--output", str(out)], "unknown suffix '.txt'", out)
    _fails_cleanly(["simulate", "--days", "2", "--output", str(out)], "unknown suffix '.txt'", out)


def test_an_unwritable_output_is_one_line(tmp_path: Path, tx: pd.DataFrame):
    data = tmp_path / "tx.csv"
    tx.to_csv(data, index=False)
    _fails_cleanly(["features", "--data", str(data), "--output", "/proc/nope/features.parquet"], "/proc/nope")
    _fails_cleanly(
        ["simulate", "--customers", "20", "--terminals", "20", "--days", "2", "--output", "/proc/x.parquet"], "/proc"
    )


@pytest.mark.parametrize("output", ["/proc/f.parquet", "/proc/nope/f.parquet", "{data}/sub/f.parquet"])
def test_an_unwritable_output_is_refused_before_any_work_naming_it(output: str, tmp_path: Path, tx: pd.DataFrame):
    data = tmp_path / "tx.csv"
    tx.to_csv(data, index=False)
    output = output.format(data=data)
    result = runner.invoke(app, ["features", "--data", str(data), "--output", output])
    assert result.exit_code == 2, result.output
    text = "".join(result.output.split())  # rich may wrap a long path anywhere
    assert f"error:--output{output}:" in text and ".tmp" not in text, result.output
    assert "buildingfeatures" not in text, "the output is checked before the work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tx.csv"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--drift-start-day", "1", "--drift-amount-factor", "-3"], "--drift-amount-factor"),
        (["--drift-start-day", "1", "--drift-new-fraud-rate", "5"], "--drift-new-fraud-rate"),
        (["--drift-start-day", "1", "--drift-hour-shift", "100"], "--drift-hour-shift"),
        (["--days", "1000000"], "--days"),
        (["--customers", "0"], "--customers"),
        (["--terminals", "100000000"], "--terminals"),
        (["--seed", "-1"], "--seed"),
        (["--start", "2106-01-01"], "must lie within"),
        (["--start", "2099-12-01", "--days", "60"], "must lie within"),
        (["--start", "not-a-date"], "not a date"),
        (["--days", "5", "--drift-start-day", "9"], "past the last day"),
    ],
)
def test_simulate_flags_have_sane_bounds(flags: list[str], message: str, tmp_path: Path):
    out = tmp_path / "tx.parquet"
    _fails_cleanly(["simulate", "--customers", "20", "--terminals", "20", *flags, "--output", str(out)], message, out)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello", b"PAR1" + b"\x00" * 40 + b"PAR1", b"PAR1" + b"\x00" * 40 + b"\xff\xff\xff\x7fPAR1"],
    ids=["empty", "text", "zero-footer", "huge-footer"],
)
def test_a_corrupt_parquet_is_a_one_line_error(content: bytes, tmp_path: Path):
    data = tmp_path / "tx.parquet"
    data.write_bytes(content)
    out = tmp_path / "f.parquet"
    _fails_cleanly(["features", "--data", str(data), "--output", str(out)], str(data), out)
    _fails_cleanly(["train", "--data", str(data), "--output", str(tmp_path / "b")], str(data))


def test_a_truncated_parquet_is_a_one_line_error(tmp_path: Path, tx: pd.DataFrame):
    buf = io.BytesIO()
    tx.to_parquet(buf, index=False)
    data = tmp_path / "tx.parquet"
    data.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _fails_cleanly(["features", "--data", str(data), "--output", str(tmp_path / "f.parquet")], "Parquet")


def test_conflicting_labels_for_one_id_are_refused_by_name(tmp_path: Path):
    labels = tmp_path / "labels.csv"
    labels.write_text("transaction_id,is_fraud,reported_at\nt1,1,2026-01-01\nt1,0,2026-01-02\nt2,1,2026-01-01\n")
    store = tmp_path / "store"
    _fails_cleanly(
        ["labels", "ingest", str(labels), "--store", str(store)],
        f"label file {labels}: 1 transaction id(s) labelled both 0 and 1, e.g. 't1'",
    )
    assert not (store / "labels").exists()


def test_labels_changing_stored_ones_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Across files the latest reported_at wins (documented); each ingest says how many labels it changes."""
    monkeypatch.delenv("FRAUD_ONLINE_STORE", raising=False)
    store = tmp_path / "store"
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("transaction_id,is_fraud,reported_at\nt1,1,2026-01-05\nt2,0,2026-01-05\n")
    second.write_text("transaction_id,is_fraud,reported_at\nt1,0,2026-01-06\nt2,1,2026-01-01\n")
    assert runner.invoke(app, ["labels", "ingest", str(first), "--store", str(store)]).exit_code == 0
    result = runner.invoke(app, ["labels", "ingest", str(second), "--store", str(store)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "1 label(s) correct an earlier stored label of the same id (the latest reported_at wins), e.g. t1" in text
    assert "1 label(s) differ from a later stored report of the same id and take no effect" in text and "t2" in text


def test_repeated_identical_labels_collapse(tmp_path: Path):
    from fraud_detection.monitoring.labels import read_label_file

    labels = tmp_path / "labels.csv"
    labels.write_text("transaction_id,is_fraud,reported_at\nt1,1,2026-01-01\nt1,1,2026-01-02\n")
    assert len(read_label_file(labels)) == 1


def test_unknown_label_ids_are_reported_with_a_count_and_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FRAUD_ONLINE_STORE", raising=False)
    labels = tmp_path / "labels.csv"
    labels.write_text("transaction_id,is_fraud,reported_at\nt1,1,2026-01-01\nt2,0,2026-01-02\n")
    result = runner.invoke(app, ["labels", "ingest", str(labels), "--store", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "2 of 2 label(s) match no prediction" in text and "t1, t2" in text


def test_drift_on_an_empty_store_is_one_line_and_exit_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FRAUD_PUSHGATEWAY_URL", raising=False)
    monkeypatch.setenv("FRAUD_CACHE_DIR", str(tmp_path / "cache"))
    result = runner.invoke(app, ["drift", "--store", str(tmp_path / "empty")])
    assert result.exit_code == 0, result.output
    assert "nothing to monitor" in result.output and result.exception is None


def _one_error_line(args: list[str], message: str, columns: int) -> None:
    """Run ``fraud`` as a user does (the console script's entry point) in a terminal ``columns`` wide: exit 2 and
    exactly one stderr line, starting with ``message``."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": str(columns)},
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert "╭" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--days", "1000000"], "error: Invalid value for '--days'"),
        (["simulate", "--drift-amount-factor", "-3"], "error: Invalid value for '--drift-amount-factor'"),
        (["no-such-command"], "error: No such command 'no-such-command'."),
        (["train", "--no-such-flag"], "error: No such option: --no-such-flag"),
    ],
)
def test_the_fraud_command_reports_a_bad_flag_in_one_line(args: list[str], message: str):
    """One ``error:`` line on stderr and exit 2, no usage box."""
    _one_error_line(args, message, columns=60)


def test_an_expected_error_is_one_line_at_any_terminal_width(tmp_path: Path):
    """A long error message (a refused alias) is not wrapped by the console, however narrow the terminal."""
    args = ["models", "promote", "v1", "--alias", "../x", "--store", str(tmp_path / "store")]
    _one_error_line(args, "error: invalid alias '../x'", columns=40)
