"""The feature engine reaches Kubeflow: ``fraud pipeline submit``/``schedule`` and the drift job's retraining trigger
upload a package compiled with the Spark Operator wiring and start runs with ``feature_engine=spark-operator`` when
asked (flag or ``FRAUD_FEATURE_ENGINE``), and neither when not. Against a KFP API on loopback (tests/helpers/kfp_api.py)
that records what it receives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.settings import DriftSettings, settings_from
from monitoring.drift_job import _retrain_trigger
from pipelines.training import SPARK_CONFIG_MAP_NAME
from tests.helpers.kfp_api import KfpApi, kfp_api

pytestmark = pytest.mark.integration


@pytest.fixture
def kfp(monkeypatch: pytest.MonkeyPatch) -> Iterator[KfpApi]:
    for name in ("FRAUD_FEATURE_ENGINE", "FRAUD_SPARK_OPERATOR", "FRAUD_TRAINING_DATA", "FRAUD_KFP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with kfp_api() as api:
        monkeypatch.setenv("FRAUD_KFP_ENDPOINT", api.endpoint)
        yield api


def _wired(package: str | dict[str, Any]) -> bool:
    """Whether an uploaded package (YAML) or a recurring run's embedded spec mounts the Spark settings."""
    platform = package["platform_spec"] if isinstance(package, dict) else list(yaml.safe_load_all(package))[1]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    volumes = executors["exec-build-features"].get("configMapAsVolume", [])
    return [v["configMapName"] for v in volumes] == [SPARK_CONFIG_MAP_NAME]


def _params(body: dict[str, Any]) -> dict[str, Any]:
    return body["runtime_config"]["parameters"]


def test_the_drift_jobs_retraining_follows_the_configured_engine(kfp: KfpApi) -> None:
    env = {"FRAUD_KFP_ENDPOINT": kfp.endpoint, "FRAUD_TRAINING_DATA": "payload-log"}
    for configured in ({"FRAUD_FEATURE_ENGINE": "spark-operator"}, {}):
        retrain = _retrain_trigger(settings_from(DriftSettings, env | configured))
        assert retrain is not None and retrain(["dataset drift"]) is True
    (spark_package, plain_package), (spark_run, plain_run) = kfp.packages, kfp.runs
    assert _wired(spark_package) and _params(spark_run) == {
        "data_source": "payload-log",
        "feature_engine": "spark-operator",
    }
    assert not _wired(plain_package) and _params(plain_run) == {"data_source": "payload-log"}


def test_submit_passes_the_engine_and_compiles_the_wiring(kfp: KfpApi, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["pipeline", "submit", "--data", "s3://raw/tx", "--feature-engine", "spark-operator"])
    assert result.exit_code == 0, result.output
    assert _wired(kfp.packages[-1]) and _params(kfp.runs[-1])["feature_engine"] == "spark-operator"

    monkeypatch.setenv("FRAUD_FEATURE_ENGINE", "spark")  # the setting, when no flag is given
    result = runner.invoke(app, ["pipeline", "submit", "--data", "s3://raw/tx"])
    assert result.exit_code == 0, result.output
    assert not _wired(kfp.packages[-1]) and _params(kfp.runs[-1])["feature_engine"] == "spark"
    assert _params(kfp.runs[-1])["data_source"] == "s3://raw/tx"


def test_schedule_passes_the_engine_to_the_recurring_run(kfp: KfpApi) -> None:
    result = CliRunner().invoke(app, ["pipeline", "schedule", "--data", "s3://raw/tx", "--spark-operator"])
    assert result.exit_code == 0, result.output
    # A recurring run embeds its package (pipeline_spec and platform_spec) rather than uploading it.
    assert _wired(kfp.recurring_runs[-1]["pipeline_spec"])
    assert "feature_engine" not in _params(kfp.recurring_runs[-1])  # wiring only: the compiled default (memory)
    result = CliRunner().invoke(
        app, ["pipeline", "schedule", "--data", "s3://raw/tx", "--feature-engine", "spark-operator"]
    )
    assert result.exit_code == 0, result.output
    assert _params(kfp.recurring_runs[-1])["feature_engine"] == "spark-operator"
    assert _wired(kfp.recurring_runs[-1]["pipeline_spec"])
    result = CliRunner().invoke(app, ["pipeline", "schedule", "--data", "s3://raw/tx"])
    assert result.exit_code == 0, result.output
    assert not _wired(kfp.recurring_runs[-1]["pipeline_spec"]) and "feature_engine" not in _params(
        kfp.recurring_runs[-1]
    )
