import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "tx.parquet"
    result = runner.invoke(
        app,
        ["simulate", "--customers", "300", "--terminals", "600", "--days", "60", "--seed", "7", "--output", str(out)],
    )
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_a_bundle_and_evaluate_reads_it(data: Path, tmp_path: Path):
    bundle = tmp_path / "bundle"
    result = runner.invoke(
        app, ["train", "--data", str(data), "--output", str(bundle), "--test-days", "10", "--max-iter", "30"]
    )
    assert result.exit_code == 0, result.output
    assert (bundle / "MANIFEST.json").exists()
    metrics_json = tmp_path / "m.json"
    plots = tmp_path / "plots"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--data",
            str(data),
            "--bundle",
            str(bundle),
            "--output-json",
            str(metrics_json),
            "--plots",
            str(plots),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(metrics_json.read_text())["roc_auc"] > 0.8
    assert (plots / "roc.png").exists() and (plots / "pr.png").exists()


def test_train_registers_then_refuses_a_model_that_is_not_better(data: Path, tmp_path: Path):
    store = tmp_path / "store"
    args = ["train", "--data", str(data), "--store", str(store), "--test-days", "10", "--max-iter", "30"]
    assert runner.invoke(app, args).exit_code == 0
    versions = list((store / "models/fraud-detector/versions").iterdir())
    assert len(versions) == 1
    # Same data, same model: AP is not strictly better, so production stays.
    assert runner.invoke(app, args).exit_code == 0
    assert len(list((store / "models/fraud-detector/versions").iterdir())) == 1
    listed = runner.invoke(app, ["models", "list", "--store", str(store)])
    assert versions[0].name in listed.output and "production" in listed.output
    shown = runner.invoke(app, ["models", "show", "production", "--store", str(store)])
    assert json.loads(shown.stdout)["version"] == versions[0].name
    promoted = runner.invoke(app, ["models", "promote", versions[0].name, "--alias", "canary", "--store", str(store)])
    assert promoted.exit_code == 0 and json.loads(promoted.stdout)["version"] == versions[0].name


def test_backtest_writes_per_fold_and_mean_std_json(data: Path, tmp_path: Path):
    out = tmp_path / "bt.json"
    args = ["backtest", "--data", str(data), "--model", "logreg", "--start", "2018-04-10", "--folds", "2"]
    result = runner.invoke(app, [*args, "--output-json", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert len(payload["folds"]) == 2
    assert set(payload["mean"]) >= {"roc_auc", "average_precision", "card_precision_at_100"}
    assert set(payload["std"]) >= {"roc_auc", "average_precision", "card_precision_at_100"}


def test_backtest_with_column_map_on_handbook_style_csv(data: Path, tmp_path: Path):
    import pandas as pd

    df = pd.read_parquet(data).rename(columns={"amount": "AMT", "event_time": "WHEN"})
    csv = tmp_path / "other.csv"
    df.to_csv(csv, index=False)
    result = runner.invoke(
        app,
        [
            "backtest",
            "--data",
            str(csv),
            "--column-map",
            "AMT=amount",
            "--column-map",
            "WHEN=event_time",
            "--start",
            "2018-04-10",
            "--folds",
            "1",
            "--model",
            "logreg",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "average_precision" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "/nonexistent.csv"], "no such file"),
        (["backtest", "--data", "{data}", "--model", "xgb"], "choose from"),
        (["backtest", "--data", "{data}", "--start", "2030-01-01", "--folds", "1"], "no data"),
        (["simulate", "--start", "yesterday", "--output", "{tmp}/x.parquet"], "is not a date"),
        (["train", "--data", "{data}", "--column-map", "oops"], "SRC=DST"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message(args, message, data: Path, tmp_path: Path):
    argv = [a.format(data=data, tmp=tmp_path) for a in args]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")


def test_bad_csv_content_names_the_column(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("transaction_id,event_time,customer_id,terminal_id,amount,is_fraud\n1,2024-01-01,1,1,-3,0\n")
    result = runner.invoke(app, ["features", "--data", str(bad), "--output", str(tmp_path / "f.parquet")])
    assert result.exit_code == 2
    assert "negative amount" in result.output
    assert not (tmp_path / "f.parquet").exists()


def test_split_defaults_of_the_commands_are_the_shared_constants():
    import inspect

    from cli import model as cli_model
    from cli import pipeline as cli_pipeline
    from fraud_detection.data.splits import BACKTEST_SPLIT, TRAINING_SPLIT

    assert (TRAINING_SPLIT.train, TRAINING_SPLIT.delay, TRAINING_SPLIT.test) == (28, 7, 14)
    assert (BACKTEST_SPLIT.train, BACKTEST_SPLIT.delay, BACKTEST_SPLIT.test) == (7, 7, 7)
    for command, split in (
        (cli_model.train_cmd, TRAINING_SPLIT),
        (cli_pipeline.run_cmd, TRAINING_SPLIT),
        (cli_model.backtest_cmd, BACKTEST_SPLIT),
    ):
        params = inspect.signature(command).parameters
        defaults = (params["train_days"].default, params["delay_days"].default, params["test_days"].default)
        assert defaults == (split.train, split.delay, split.test), command.__name__


def test_labels_go_beside_the_payload_log_unless_store_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    labels = tmp_path / "labels.csv"
    labels.write_text("transaction_id,is_fraud,reported_at\n1,1,2024-01-02T00:00:00Z\n2,0,2024-01-02T00:00:00Z\n")
    monkeypatch.setenv("FRAUD_STORE_URI", str(tmp_path / "models"))
    monkeypatch.setenv("FRAUD_PAYLOAD_LOG_URI", str(tmp_path / "payload"))
    result = runner.invoke(app, ["labels", "ingest", str(labels)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "payload" / result.stdout.strip()).is_file()
    assert not (tmp_path / "models").exists()
    result = runner.invoke(app, ["labels", "ingest", str(labels), "--store", str(tmp_path / "other")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "other" / result.stdout.strip()).is_file()
    monkeypatch.delenv("FRAUD_PAYLOAD_LOG_URI")
    result = runner.invoke(app, ["labels", "ingest", str(labels)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "models" / result.stdout.strip()).is_file()


def test_a_training_command_ignores_settings_of_other_processes(data: Path, tmp_path: Path, monkeypatch):
    # An invalid drift or serving value does not concern `fraud train`: only PipelineSettings is read.
    monkeypatch.setenv("FRAUD_DRIFT_SHARE", "not a share")
    monkeypatch.setenv("FRAUD_MAX_BATCH_SIZE", "many")
    bundle = tmp_path / "bundle"
    result = runner.invoke(
        app, ["train", "--data", str(data), "--output", str(bundle), "--test-days", "10", "--max-iter", "20"]
    )
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("FRAUD_REVIEW_COST", "-1")
    result = runner.invoke(app, ["models", "list", "--store", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "review_cost" in result.output
