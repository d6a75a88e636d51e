"""The heavy steps' node pool (the AKS spot training pool): off by default, and in the compiled YAML when configured.

docs/AZURE.md promises that the pipeline's training runs use the spot ``training`` pool (infra/modules/aks.bicep:
label ``fraud-detection/pool=training``, taint ``kubernetes.azure.com/scalesetpriority=spot:NoSchedule``). Pods
land there only with that node selector and toleration in the compiled platform spec, so these tests compile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.app import app
from pipelines import kubeflow
from pipelines.training import POOL_TASKS, NodePool, compile_pipeline

SELECTOR = "fraud-detection/pool=training"
TOLERATION = "kubernetes.azure.com/scalesetpriority=spot:NoSchedule"
SPOT = {"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}
POOL_ENV = {"FRAUD_TRAINING_NODE_SELECTOR": SELECTOR, "FRAUD_TRAINING_TOLERATION": TOLERATION}


def placement(path: Path) -> dict[str, dict[str, Any]]:
    """Task name -> its node selector and tolerations in the compiled Kubernetes platform spec."""
    _, platform = yaml.safe_load_all(path.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {
        name.removeprefix("exec-"): {k: v for k, v in config.items() if k in ("nodeSelector", "tolerations")}
        for name, config in executors.items()
    }


@pytest.fixture(scope="module")
def default_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_pipeline(tmp_path_factory.mktemp("default") / "p.yaml")


@pytest.fixture(scope="module")
def spot_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_pipeline(tmp_path_factory.mktemp("spot") / "p.yaml", node_pool=NodePool.parse(SELECTOR, TOLERATION))


def test_off_by_default(default_package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(p == {} for p in placement(default_package).values())
    from fraud_detection.settings import DriftSettings, PipelineSettings

    for name in POOL_ENV:
        monkeypatch.delenv(name, raising=False)
    for cls in (PipelineSettings, DriftSettings):
        settings = cls()
        assert NodePool.parse(settings.training_node_selector, settings.training_toleration) is None


def test_the_heavy_steps_select_the_spot_pool_and_tolerate_its_taint(spot_package: Path) -> None:
    tasks = placement(spot_package)
    assert set(POOL_TASKS) < tasks.keys()
    for name in POOL_TASKS:
        assert tasks[name] == {"nodeSelector": {"labels": {"fraud-detection/pool": "training"}}, "tolerations": [SPOT]}
    # Register and deploy stay on regular nodes: a spot eviction there would leave a half-published version or a
    # half-applied canary.
    assert tasks["register-model"] == tasks["deploy-model"] == {}


@pytest.mark.parametrize(
    ("selector", "toleration", "expected"),
    [
        (None, None, None),
        ("", "", None),
        ("pool=gpu", None, NodePool("pool", "gpu")),
        ("pool=gpu", "dedicated:NoExecute", NodePool("pool", "gpu", "dedicated", None, "NoExecute")),
        ("pool=gpu", "dedicated", NodePool("pool", "gpu", "dedicated")),
        (
            SELECTOR,
            TOLERATION,
            NodePool("fraud-detection/pool", "training", "kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule"),
        ),
    ],
)
def test_parse(selector: str | None, toleration: str | None, expected: NodePool | None) -> None:
    assert NodePool.parse(selector, toleration) == expected


@pytest.mark.parametrize(
    ("selector", "toleration", "message"),
    [
        ("pool", None, "expected key=value"),
        ("=training", None, "expected key=value"),
        ("pool=training", "spot:Sometimes", "expected key"),
        (None, TOLERATION, "needs FRAUD_TRAINING_NODE_SELECTOR"),
    ],
)
def test_parse_refuses_malformed_settings(selector: str | None, toleration: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NodePool.parse(selector, toleration)


def test_an_exists_toleration_compiles(tmp_path: Path) -> None:
    path = compile_pipeline(tmp_path / "p.yaml", node_pool=NodePool.parse("pool=gpu", "dedicated:NoSchedule"))
    assert placement(path)["train-model"]["tolerations"] == [
        {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}
    ]


@pytest.mark.parametrize("configured", [False, True], ids=["unset", "spot"])
def test_cli_compile_follows_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: bool) -> None:
    for name, value in POOL_ENV.items():
        if configured:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)
    out = tmp_path / "fraud-training.yaml"
    result = CliRunner().invoke(app, ["pipeline", "compile", "--output", str(out)])
    assert result.exit_code == 0, result.output
    spot = {"nodeSelector": {"labels": {"fraud-detection/pool": "training"}}, "tolerations": [SPOT]}
    assert placement(out)["train-model"] == (spot if configured else {})


def test_cli_compile_reports_a_malformed_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_TRAINING_NODE_SELECTOR", "training")
    result = CliRunner().invoke(app, ["pipeline", "compile", "--output", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2 and "expected key=value" in result.output


def test_the_drift_jobs_retraining_runs_use_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """submit_training_run (the drift job's trigger) compiles with the DriftSettings' pool."""
    from fraud_detection.settings import DriftSettings, settings_from

    submitted: list[dict[str, dict[str, Any]]] = []

    def fake_submit(client: Any, package: Path, **kwargs: Any) -> str:
        submitted.append(placement(package))
        return "run-1"

    monkeypatch.setattr(kubeflow, "make_configured_client", lambda settings: object())
    monkeypatch.setattr(kubeflow, "submit", fake_submit)
    settings = settings_from(DriftSettings, {"FRAUD_KFP_ENDPOINT": "https://kfp.example", **POOL_ENV})
    assert kubeflow.submit_training_run(settings, run_name="drift-retrain", data_source="payload-log") == "run-1"
    assert submitted[0]["build-features"]["tolerations"] == [SPOT]
    assert submitted[0]["deploy-model"] == {}
