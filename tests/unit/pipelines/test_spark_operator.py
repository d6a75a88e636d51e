"""The pipeline's Spark engines: the ``feature_engine`` parameter, and the Spark Operator wiring of the feature step
only when compiled with ``spark_operator=True`` (store Secret by reference, the chart's settings ConfigMap mounted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.spark_operator.settings import SETTINGS_DIR
from pipelines.training import SPARK_CONFIG_MAP_NAME, compile_pipeline


def _compiled(path: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], path.read_text()


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], str]:
    return _compiled(compile_pipeline(tmp_path_factory.mktemp("default") / "p.yaml"))


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], str]:
    return _compiled(compile_pipeline(tmp_path_factory.mktemp("spark") / "p.yaml", spark_operator=True))


def test_feature_engine_is_a_run_parameter_defaulting_to_memory(default) -> None:
    spec, _, _ = default
    param = spec["root"]["inputDefinitions"]["parameters"]["feature_engine"]
    assert (param["parameterType"], param["defaultValue"]) == ("STRING", "memory")
    task = spec["root"]["dag"]["tasks"]["build-features"]["inputs"]["parameters"]
    assert task["feature_engine"] == {"componentInputParameter": "feature_engine"}


def test_by_default_the_feature_step_has_no_spark_operator_wiring(default) -> None:
    _, executors, _ = default
    features = executors["exec-build-features"]
    assert "secretAsEnv" not in features and "configMapAsVolume" not in features


def test_spark_operator_wiring_mounts_the_settings_and_references_the_store_secret(operator, default) -> None:
    _, executors, text = operator
    features = executors["exec-build-features"]
    (volume,) = features["configMapAsVolume"]
    assert (volume["configMapName"], volume["mountPath"], volume["optional"]) == (
        SPARK_CONFIG_MAP_NAME,
        SETTINGS_DIR,
        True,
    )
    (secret,) = features["secretAsEnv"]
    assert secret["secretName"] == "fraud-s3-credentials" and secret["optional"] is True
    assert {m["envVar"] for m in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    # Every other task is wired exactly as without the option.
    _, plain, _ = default
    assert {k: v for k, v in executors.items() if k != "exec-build-features"} == {
        k: v for k, v in plain.items() if k != "exec-build-features"
    }
    assert "secretKeyRef" not in text and "AWS_SECRET_ACCESS_KEY:" not in text
