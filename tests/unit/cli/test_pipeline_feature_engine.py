"""``fraud pipeline`` picks the feature step's engine (``--feature-engine``, ``FRAUD_FEATURE_ENGINE``) and compiles the
Spark Operator wiring (``--spark-operator``, ``FRAUD_SPARK_OPERATOR``, implied by the ``spark-operator`` engine), and
refuses the combinations that cannot run, in one line, before anything is compiled or contacted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.app import app
from components.spark_operator.settings import SETTINGS_DIR
from pipelines.training import SPARK_CONFIG_MAP_NAME, compile_pipeline

ENV = ("FRAUD_FEATURE_ENGINE", "FRAUD_SPARK_OPERATOR", "FRAUD_KFP_ENDPOINT", "FRAUD_TRAINING_DATA")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def _compiled(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """The compiled default of ``feature_engine`` and the feature step's ConfigMap volumes."""
    spec, platform = yaml.safe_load_all(path.read_text())
    default = spec["root"]["inputDefinitions"]["parameters"]["feature_engine"]["defaultValue"]
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-build-features"]
    volumes = [
        {k: v[k] for k in ("configMapName", "mountPath", "optional")} for v in executor.get("configMapAsVolume", [])
    ]
    return default, volumes


def _compile(tmp_path: Path, *flags: str) -> tuple[str, list[dict[str, Any]]]:
    out = tmp_path / "fraud-training.yaml"
    result = CliRunner().invoke(app, ["pipeline", "compile", "--output", str(out), *flags])
    assert result.exit_code == 0, result.output
    return _compiled(out)


WIRED = [{"configMapName": SPARK_CONFIG_MAP_NAME, "mountPath": SETTINGS_DIR, "optional": True}]


@pytest.mark.parametrize(
    ("flags", "env", "default", "wired"),
    [
        ((), {}, "memory", False),
        (("--feature-engine", "spark"), {}, "spark", False),
        (("--spark-operator",), {}, "memory", True),
        (("--feature-engine", "spark-operator"), {}, "spark-operator", True),
        ((), {"FRAUD_FEATURE_ENGINE": "spark-operator"}, "spark-operator", True),
        ((), {"FRAUD_SPARK_OPERATOR": "true"}, "memory", True),
        (("--feature-engine", "memory"), {"FRAUD_FEATURE_ENGINE": "spark-operator"}, "memory", False),
    ],
    ids=["default", "spark", "wiring-only", "operator", "operator-from-env", "wiring-from-env", "flag-beats-env"],
)
def test_compile_sets_the_runs_default_engine_and_the_wiring(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: tuple[str, ...],
    env: dict[str, str],
    default: str,
    wired: bool,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    engine, volumes = _compile(tmp_path, *flags)
    assert engine == default
    assert volumes == (WIRED if wired else [])


@pytest.fixture(scope="module")
def unwired(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_pipeline(tmp_path_factory.mktemp("plain") / "p.yaml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["compile", "--feature-engine", "bogus"],
            "--feature-engine 'bogus': use one of memory, spark, spark-operator",
        ),
        (
            ["compile", "--feature-engine", "spark-operator", "--no-spark-operator"],
            "--feature-engine spark-operator needs the Spark Operator wiring",
        ),
        (["run", "--simulate", "--feature-engine", "spark-operator"], "spark-operator runs only on Kubeflow"),
        (
            ["submit", "--data", "s3://b/k", "--feature-engine", "spark-operator", "--package", "{unwired}"],
            "compiled without the Spark Operator wiring",
        ),
        (
            ["schedule", "--data", "s3://b/k", "--spark-operator", "--package", "{unwired}"],
            "--spark-operator is a compile option",
        ),
        (
            ["submit", "--data", "s3://b/k", "--feature-engine", "spark", "--param", "feature_engine=memory"],
            "give the feature engine once",
        ),
    ],
    ids=["unknown", "operator-unwired", "operator-locally", "unwired-package", "wiring-with-package", "twice"],
)
def test_bad_combinations_are_refused_before_any_work(tmp_path: Path, unwired: Path, args: list[str], message: str):
    out = tmp_path / "p.yaml"
    argv = ["pipeline", *[a.replace("{unwired}", str(unwired)) for a in args]]
    if args[0] == "compile":
        argv += ["--output", str(out)]
    # FRAUD_KFP_ENDPOINT is unset: had the command gone on to contact Kubeflow, it would fail on that instead.
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "no Kubeflow Pipelines endpoint" not in result.output
    assert not out.exists()


def test_a_bad_configured_engine_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    """FRAUD_FEATURE_ENGINE is checked like the flag; the user's terminal gets one line and exit 2."""
    done = subprocess.run(
        [sys.executable, "-m", "cli", "pipeline", "run", "--simulate"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "FRAUD_FEATURE_ENGINE": "spark-operator", "COLUMNS": "60"},
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: FRAUD_FEATURE_ENGINE spark-operator"), done.stderr
    assert not (tmp_path / ".fraud").exists()  # refused before the run's work directory was made
