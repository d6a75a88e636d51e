"""With ``spark.enabled`` the chart tells the drift job's retraining runs and the pipeline's settings to build features
on the Spark Operator (``FRAUD_FEATURE_ENGINE=spark-operator``), and the settings read that value as such; without it
neither sets an engine (the pipeline's default, memory)."""

from __future__ import annotations

import pytest

from fraud_detection.settings import DriftSettings, PipelineSettings, settings_from
from tests import k8s
from tests.infra.helm.chart import Render

pytestmark = pytest.mark.integration

SPARK = ("ci/spark-values.yaml",)


def _drift_env(render: Render, values: tuple[str, ...], sets: tuple[str, ...] = ()) -> dict[str, str]:
    cronjob = k8s.one(render(values, sets), "CronJob", "fraud-detection-drift")
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _pipeline_settings(render: Render, values: tuple[str, ...], sets: tuple[str, ...] = ()) -> dict[str, str]:
    return k8s.one(render(values, sets), "ConfigMap", "fraud-detection-pipeline")["data"]


@pytest.mark.parametrize(
    ("values", "sets"), [(SPARK, ()), ((), ("spark.enabled=true",))], ids=["ci-values", "enabled-only"]
)
def test_spark_enabled_sets_the_engine_for_retraining_and_the_pipeline(render: Render, values, sets) -> None:
    drift = _drift_env(render, values, sets)
    assert drift["FRAUD_FEATURE_ENGINE"] == "spark-operator"
    assert _pipeline_settings(render, values, sets)["FRAUD_FEATURE_ENGINE"] == "spark-operator"
    # What the drift job reads from that environment: the engine, which implies the compiled Spark wiring.
    settings = settings_from(DriftSettings, drift)
    assert settings.feature_engine == "spark-operator"
    assert settings_from(PipelineSettings, _pipeline_settings(render, values, sets)).feature_engine == "spark-operator"


@pytest.mark.parametrize("values", [(), ("ci/all-enabled-values.yaml",)], ids=["defaults", "all-enabled"])
def test_without_spark_no_engine_is_set(render: Render, values: tuple[str, ...]) -> None:
    assert "FRAUD_FEATURE_ENGINE" not in _drift_env(render, values)
    assert "FRAUD_FEATURE_ENGINE" not in _pipeline_settings(render, values)
    assert settings_from(DriftSettings, _drift_env(render, values)).feature_engine is None
