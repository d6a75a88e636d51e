"""The compiled ``fraud-training`` YAML (tasks, edges, the gate, parameters, image, Kubernetes wiring, no secrets),
the ``fraud pipeline`` commands that do not run the DAG, and submit/schedule against an autospec'd ``kfp.Client``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import kfp
import pytest
import yaml
from typer.testing import CliRunner

from cli.app import app
from components import PIPELINE_IMAGE
from pipelines import kubeflow
from pipelines.training import CACHED_TASKS, GATED_TASKS, PIPELINE_NAME, compile_pipeline

REPO = Path(__file__).resolve().parents[3]
SECRET_VALUE = "s3cr3t-value-that-must-never-be-compiled"
MAIN_TASKS = {"ingest-data", "validate-data", "build-features", "train-model", "evaluate-model"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The pipeline compiled with credentials present in the environment (they must not leak into it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET_VALUE)
        mp.setenv("AWS_ACCESS_KEY_ID", "AKIA" + SECRET_VALUE[:8])
        mp.setenv("FRAUD_S3_SECRET_KEY", SECRET_VALUE)
        path = compile_pipeline(tmp_path_factory.mktemp("compiled") / "out" / "fraud-training.yaml")
    spec, platform = yaml.safe_load_all(path.read_text())
    return path, spec, platform


def _tasks(spec: dict[str, Any]) -> dict[str, Any]:
    """Every task of the DAG and of its sub-DAGs, by name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def _producers(task: dict[str, Any]) -> set[str]:
    inputs = task.get("inputs", {})
    found = {
        a["taskOutputArtifact"]["producerTask"]
        for a in inputs.get("artifacts", {}).values()
        if "taskOutputArtifact" in a
    }
    found |= {
        p["taskOutputParameter"]["producerTask"]
        for p in inputs.get("parameters", {}).values()
        if "taskOutputParameter" in p
    }
    return found


def _condition(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    (name,) = [n for n in spec["root"]["dag"]["tasks"] if n.startswith("condition-")]
    return name, spec["root"]["dag"]["tasks"][name]


def test_tasks_and_edges(compiled):
    _, spec, _ = compiled
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME
    tasks = _tasks(spec)
    assert set(tasks) == MAIN_TASKS | set(GATED_TASKS) | {_condition(spec)[0]}
    assert _producers(tasks["validate-data"]) == {"ingest-data"}
    assert _producers(tasks["build-features"]) == {"validate-data"}
    assert _producers(tasks["train-model"]) == {"build-features", "ingest-data"}
    assert _producers(tasks["evaluate-model"]) == {"train-model"}
    assert _producers(tasks["deploy-model"]) == {"register-model"}
    register_inputs = tasks["register-model"]["inputs"]["artifacts"]
    assert {a["componentInputArtifact"] for a in register_inputs.values()} == {
        "pipelinechannel--train-model-bundle",
        "pipelinechannel--train-model-test_set",
    }


def test_register_and_deploy_run_only_inside_the_promotion_gate(compiled):
    _, spec, _ = compiled
    _, condition = _condition(spec)
    root_tasks = spec["root"]["dag"]["tasks"]
    assert not set(GATED_TASKS) & set(root_tasks)
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--evaluate-model-Output'] == true"
    )
    assert "evaluate-model" in condition["dependentTasks"]
    gated = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert set(gated) == set(GATED_TASKS)
    assert spec["components"]["comp-evaluate-model"]["outputDefinitions"]["parameters"]["Output"]["parameterType"] == (
        "BOOLEAN"
    )


def test_parameters_cover_data_window_hyperparameters_and_thresholds(compiled):
    _, spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    expected = {
        "data_source": ("STRING", None),
        "source_version": ("STRING", None),
        "window_end": ("STRING", None),
        "window_days": ("NUMBER_INTEGER", 0),
        "train_days": ("NUMBER_INTEGER", 28),
        "test_days": ("NUMBER_INTEGER", 14),
        "delay_days": ("NUMBER_INTEGER", 7),
        "model_type": ("STRING", "rf"),
        "min_samples_leaf": ("NUMBER_INTEGER", 0),
        "max_iter": ("NUMBER_INTEGER", 300),
        "learning_rate": ("NUMBER_DOUBLE", 0.03),
        "review_cost": ("NUMBER_DOUBLE", 10.0),
        "min_ap_gain": ("NUMBER_DOUBLE", 0.0),
        "max_cp_loss": ("NUMBER_DOUBLE", 0.0),
        "n_customers": ("NUMBER_INTEGER", 5000),
        "n_terminals": ("NUMBER_INTEGER", 10000),
        "n_days": ("NUMBER_INTEGER", 183),
        "canary_traffic_percent": ("NUMBER_INTEGER", 10),
    }
    for name, (kind, default) in expected.items():
        assert params[name]["parameterType"] == kind, name
        if default is not None:
            assert params[name]["defaultValue"] == default, name
    evaluate = spec["root"]["dag"]["tasks"]["evaluate-model"]["inputs"]["parameters"]
    assert evaluate["min_ap_gain"] == {"componentInputParameter": "min_ap_gain"}
    assert evaluate["max_cp_loss"] == {"componentInputParameter": "max_cp_loss"}


def test_caching_is_on_for_the_data_steps_only(compiled):
    _, spec, _ = compiled
    for name, task in _tasks(spec).items():
        if name.startswith("condition-"):
            continue
        assert task.get("cachingOptions", {}).get("enableCache", False) is (name in CACHED_TASKS), name


def test_every_task_runs_the_pipeline_image_without_installing_anything(compiled):
    path, spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == len(MAIN_TASKS) + len(GATED_TASKS)
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == PIPELINE_IMAGE, name
        command = " ".join(container["command"] + container.get("args", []))
        assert "pip install" not in command, name
        assert "kfp.dsl.executor_main" in command, name
    assert "pip install" not in path.read_text()


def test_store_credentials_come_from_a_secret_and_no_secret_value_is_compiled(compiled):
    path, _, platform = compiled
    text = path.read_text()
    assert SECRET_VALUE not in text
    assert SECRET_VALUE[:8] not in text
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    with_secret = {name for name, cfg in executors.items() if cfg.get("secretAsEnv")}
    assert with_secret == {"exec-ingest-data", "exec-evaluate-model", "exec-register-model", "exec-deploy-model"}
    optional = {
        "exec-ingest-data": {"FRAUD_IDENTIFIER_KEY"},
        "exec-register-model": {"FRAUD_SIGNING_KEY"},
        "exec-deploy-model": {"FRAUD_ONLINE_STORE_PASSWORD"},
    }
    for name in with_secret:
        store_secret, *extra = executors[name]["secretAsEnv"]
        assert store_secret["secretName"] == "fraud-s3-credentials"
        assert {m["envVar"] for m in store_secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert store_secret["optional"] is True  # AKS: workload identity, no keys in the Secret
        # The identifier key, the signing key and the online store password: same Secret, optional, only where
        # they are used.
        assert [{m["envVar"] for m in e["keyToEnv"]} for e in extra] == ([optional[name]] if name in optional else [])
        assert all(e["optional"] is True and e["secretName"] == "fraud-s3-credentials" for e in extra)
    for name, cfg in executors.items():
        (config_map,) = cfg["configMapAsEnv"]
        assert config_map["configMapName"] == "fraud-detection-pipeline", name
        assert config_map["optional"] is True
        # The public verify key comes from the ConfigMap (every task loads bundles); the signing key never does.
        keys = {m["envVar"] for m in config_map["keyToEnv"]}
        assert "FRAUD_VERIFY_KEY" in keys and "FRAUD_SIGNING_KEY" not in keys, name


def test_the_package_loads_back_as_a_pipeline(compiled):
    path, _, _ = compiled
    loaded = kfp.components.load_component_from_file(str(path))
    assert loaded.name == PIPELINE_NAME
    assert "max_iter" in loaded.component_spec.inputs


def test_compile_options_change_image_and_wiring(tmp_path: Path):
    path = compile_pipeline(
        tmp_path / "p.yaml", image="registry.example/fraud-detection-pipeline:1.2.3", secret_name=None
    )
    spec, platform = yaml.safe_load_all(path.read_text())
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        "registry.example/fraud-detection-pipeline:1.2.3"
    }
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert not any("secretAsEnv" in cfg for cfg in executors.values())
    no_platform = compile_pipeline(tmp_path / "q.yaml", secret_name=None, config_map_name=None)
    assert len(list(yaml.safe_load_all(no_platform.read_text()))) == 1


def test_cli_compile_writes_the_package(tmp_path: Path):
    out = tmp_path / "build" / "fraud-training.yaml"
    result = CliRunner().invoke(app, ["pipeline", "compile", "--output", str(out), "--image", "x/python-p:9"])
    assert result.exit_code == 0, result.output
    spec = next(yaml.safe_load_all(out.read_text()))
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {"x/python-p:9"}


def test_the_core_cli_does_not_import_kfp():
    code = "import sys, cli.app, fraud_detection.rollout.canary; sys.exit('kfp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0


def test_fraud_detection_modules_never_import_kfp():
    offenders = [
        p.name
        for p in (REPO / "src" / "fraud_detection").glob("*.py")
        if p.name != "cli_pipeline.py" and ("import kfp" in p.read_text() or "from kfp" in p.read_text())
    ]
    assert offenders == []


# submit / schedule with an autospec'd kfp.Client ---------------------------------------------------------------


class FakeKfp:
    """State behind an autospec'd kfp.Client: pipelines, versions, experiments, runs, recurring runs."""

    def __init__(self) -> None:
        self.client = mock.create_autospec(kfp.Client, instance=True)
        self.pipelines: dict[str, str] = {}
        self.versions: dict[str, list[SimpleNamespace]] = {}
        self.recurring: dict[str, SimpleNamespace] = {}
        self.runs: list[dict[str, Any]] = []
        self.counter = 0
        c = self.client
        c.create_experiment.side_effect = lambda name, namespace=None, **_: SimpleNamespace(experiment_id=f"exp-{name}")
        c.get_pipeline_id.side_effect = self.pipelines.get
        c.upload_pipeline.side_effect = self._upload_pipeline
        c.upload_pipeline_version.side_effect = self._upload_version
        c.list_pipeline_versions.side_effect = self._list_versions
        c.run_pipeline.side_effect = self._run
        c.list_recurring_runs.side_effect = self._list_recurring
        c.create_recurring_run.side_effect = self._create_recurring
        c.delete_recurring_run.side_effect = lambda recurring_run_id: self.recurring.pop(recurring_run_id)

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def _upload_pipeline(self, path: str, pipeline_name: str | None = None, **_: Any) -> SimpleNamespace:
        pid = self._id("pipeline")
        self.pipelines[pipeline_name or ""] = pid
        self.versions[pid] = [SimpleNamespace(pipeline_version_id=self._id("version"), display_name=pipeline_name)]
        return SimpleNamespace(pipeline_id=pid)

    def _upload_version(self, path: str, name: str, pipeline_id: str | None = None, **_: Any) -> SimpleNamespace:
        version = SimpleNamespace(pipeline_version_id=self._id("version"), display_name=name)
        self.versions[pipeline_id or ""].append(version)
        return version

    def _list_versions(self, pipeline_id: str, filter: str | None = None, **_: Any) -> SimpleNamespace:
        versions = self.versions[pipeline_id]
        if filter:
            wanted = json.loads(filter)["predicates"][0]["stringValue"]
            versions = [v for v in versions if v.display_name == wanted]
        return SimpleNamespace(pipeline_versions=list(reversed(versions)) or None)

    def _run(self, **kwargs: Any) -> SimpleNamespace:
        self.runs.append(kwargs)
        return SimpleNamespace(run_id=self._id("run"))

    def _list_recurring(self, filter: str | None = None, **_: Any) -> SimpleNamespace:
        wanted = json.loads(filter)["predicates"][0]["stringValue"] if filter else None
        found = [r for r in self.recurring.values() if wanted in (None, r.display_name)]
        return SimpleNamespace(recurring_runs=found or None, next_page_token="")

    def _create_recurring(self, **kwargs: Any) -> SimpleNamespace:
        run = SimpleNamespace(
            recurring_run_id=self._id("recurring"),
            display_name=kwargs["job_name"],
            description=kwargs["description"],
            kwargs=kwargs,
        )
        self.recurring[run.recurring_run_id] = run
        return run


def test_submit_uploads_once_per_package_and_starts_runs(compiled):
    path, _, _ = compiled
    fake = FakeKfp()
    first = kubeflow.submit(fake.client, path, params={"max_iter": 100}, run_name="r1")
    second = kubeflow.submit(fake.client, path, params={}, run_name="r2")
    assert first != second
    fake.client.upload_pipeline.assert_called_once()
    assert fake.client.upload_pipeline.call_args.kwargs["pipeline_name"] == PIPELINE_NAME
    fake.client.upload_pipeline_version.assert_called_once()  # the content-named version; reused by the 2nd submit
    assert fake.runs[0]["version_id"] != fake.runs[1]["version_id"]  # first: KFP's default version
    third = kubeflow.submit(fake.client, path, params={}, run_name="r3")
    assert fake.client.upload_pipeline_version.call_count == 1
    assert fake.runs[2]["version_id"] == fake.runs[1]["version_id"]
    assert third and fake.runs[0]["params"] == {"max_iter": 100}
    assert fake.runs[0]["experiment_id"] == "exp-fraud-detection"


def test_schedule_is_idempotent_and_updates_instead_of_duplicating(compiled):
    path, _, _ = compiled
    fake = FakeKfp()
    created = kubeflow.schedule(fake.client, path, params={"max_iter": 100})
    assert created.action == "created"
    (run,) = fake.recurring.values()
    assert run.kwargs["cron_expression"] == "0 0 5 * * 1"
    assert run.kwargs["job_name"] == "fraud-training-weekly"
    assert run.kwargs["max_concurrency"] == 1
    assert run.kwargs["no_catchup"] is True
    assert run.kwargs["pipeline_package_path"] == str(path)

    again = kubeflow.schedule(fake.client, path, params={"max_iter": 100})
    assert (again.action, again.recurring_run_id) == ("unchanged", created.recurring_run_id)
    fake.client.delete_recurring_run.assert_not_called()
    assert len(fake.recurring) == 1

    changed = kubeflow.schedule(fake.client, path, params={"max_iter": 200})
    assert changed.action == "replaced"
    assert changed.deleted == (created.recurring_run_id,)
    (run,) = fake.recurring.values()
    assert run.kwargs["params"] == {"max_iter": 200}


def test_schedule_collapses_duplicates_left_by_others(compiled):
    path, _, _ = compiled
    fake = FakeKfp()
    kubeflow.schedule(fake.client, path, params={})
    fake._create_recurring(job_name="fraud-training-weekly", description="made by hand")
    result = kubeflow.schedule(fake.client, path, params={})
    assert result.action == "replaced"
    assert len(result.deleted) == 2
    assert len(fake.recurring) == 1


@pytest.mark.parametrize("cron", ["0 5 * * 1", "0 0 5 * * 1 2020", ""])
def test_schedule_rejects_a_cron_without_six_fields(compiled, cron: str):
    path, _, _ = compiled
    with pytest.raises(ValueError, match="Kubeflow Pipelines needs 6, seconds first"):
        kubeflow.schedule(FakeKfp().client, path, params={}, cron=cron)


def test_parse_params_types_values_by_the_compiled_signature(compiled):
    path, _, _ = compiled
    assert kubeflow.parse_params(["max_iter=200", "learning_rate=0.1", "model_type=rf"], path) == {
        "max_iter": 200,
        "learning_rate": 0.1,
        "model_type": "rf",
    }
    with pytest.raises(ValueError, match="'ten' is not a valid NUMBER_INTEGER"):
        kubeflow.parse_params(["max_iter=ten"], path)
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        kubeflow.parse_params(["nope=1"], path)


def test_make_client_needs_an_endpoint():
    with pytest.raises(ValueError, match="FRAUD_KFP_ENDPOINT"):
        kubeflow.make_client(None)


def test_cli_schedule_without_endpoint_fails_cleanly(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FRAUD_KFP_ENDPOINT", raising=False)
    result = CliRunner().invoke(app, ["pipeline", "schedule", "--simulate"])
    assert result.exit_code == 2
    assert "FRAUD_KFP_ENDPOINT" in result.output


def test_cli_schedule_uses_the_weekly_cron_and_no_cache_for_external_data(monkeypatch: pytest.MonkeyPatch):
    fake = FakeKfp()
    monkeypatch.setattr(kubeflow, "make_client", lambda *a, **k: fake.client)
    result = CliRunner().invoke(app, ["pipeline", "schedule", "--data", "s3://raw/tx/", "--param", "max_iter=50"])
    assert result.exit_code == 0, result.output
    (run,) = fake.recurring.values()
    assert run.kwargs["cron_expression"] == "0 0 5 * * 1"
    assert run.kwargs["params"] == {"data_source": "s3://raw/tx/", "max_iter": 50}
    assert run.kwargs["enable_caching"] is False
    result = CliRunner().invoke(app, ["pipeline", "schedule", "--simulate"])
    assert result.exit_code == 0, result.output
    (run,) = fake.recurring.values()
    assert run.kwargs["enable_caching"] is None


def test_no_run_trains_on_simulated_data_unless_asked(monkeypatch: pytest.MonkeyPatch):
    fake = FakeKfp()
    monkeypatch.setattr(kubeflow, "make_client", lambda *a, **k: fake.client)
    monkeypatch.delenv("FRAUD_TRAINING_DATA", raising=False)
    for command in ("schedule", "submit"):
        result = CliRunner().invoke(app, ["pipeline", command])
        assert result.exit_code == 2 and "no training data" in result.output, result.output
    assert not fake.runs and not fake.recurring
    monkeypatch.setenv("FRAUD_TRAINING_DATA", "payload-log")
    result = CliRunner().invoke(app, ["pipeline", "submit"])
    assert result.exit_code == 0, result.output
    assert fake.runs[0]["params"]["data_source"] == "payload-log"
    assert fake.runs[0]["params"]["source_version"].startswith("read-")  # a new cache key per read of the log
    result = CliRunner().invoke(app, ["pipeline", "run", "--data", "x.parquet", "--simulate"])
    assert result.exit_code == 2 and "exclusive" in result.output


def test_submit_training_run_uses_the_callers_settings(monkeypatch: pytest.MonkeyPatch):
    from fraud_detection.settings import DriftSettings, settings_from

    fake = FakeKfp()
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(kubeflow, "make_client", lambda *a, **k: calls.append((a, k)) or fake.client)
    settings = settings_from(
        DriftSettings,
        {"FRAUD_KFP_ENDPOINT": "https://kfp.example", "FRAUD_KFP_NAMESPACE": "team", "FRAUD_KFP_TOKEN": SECRET_VALUE},
    )
    run_id = kubeflow.submit_training_run(settings, run_name="drift-retrain", data_source="payload-log", reason="drift")
    assert run_id.startswith("run-") and len(fake.runs) == 1
    assert calls == [(("https://kfp.example",), {"token": SECRET_VALUE, "namespace": "team"})]
    assert fake.runs[0]["job_name"].startswith("drift-retrain-")
    assert fake.runs[0]["params"] == {"data_source": "payload-log"}  # never simulated data


def test_the_drift_job_starts_no_retraining_without_a_configured_data_source(caplog: pytest.LogCaptureFixture):
    from fraud_detection.settings import DriftSettings, settings_from
    from monitoring.drift_job import _retrain_trigger

    base = {"FRAUD_KFP_ENDPOINT": "https://kfp.example"}
    assert _retrain_trigger(settings_from(DriftSettings, base)) is None
    assert "FRAUD_TRAINING_DATA is not set" in caplog.text
    assert _retrain_trigger(settings_from(DriftSettings, base | {"FRAUD_TRAINING_DATA": "payload-log"})) is not None


# split defaults: written once in fraud_detection.data.splits --------------------------------------------------


def test_split_defaults_come_from_one_place(compiled):
    import inspect

    from components.build_features import build_features
    from components.train_model import train_model
    from components.validate_data import validate_data
    from fraud_detection.data.splits import TRAINING_SPLIT

    assert (TRAINING_SPLIT.train, TRAINING_SPLIT.delay, TRAINING_SPLIT.test) == (28, 7, 14)
    _, spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["train_days"]["defaultValue"] == TRAINING_SPLIT.train
    assert params["delay_days"]["defaultValue"] == TRAINING_SPLIT.delay
    assert params["test_days"]["defaultValue"] == TRAINING_SPLIT.test
    # Components ship their source alone (no module globals), so their defaults are literals: they must match.
    for component in (train_model, validate_data):
        signature = inspect.signature(component.python_func).parameters
        assert signature["train_days"].default == TRAINING_SPLIT.train, component.name
        assert signature["delay_days"].default == TRAINING_SPLIT.delay, component.name
        assert signature["test_days"].default == TRAINING_SPLIT.test, component.name
    assert inspect.signature(build_features.python_func).parameters["label_delay_days"].default == TRAINING_SPLIT.delay


def test_model_defaults_are_the_domain_defaults(compiled):
    """The pipeline, its train step and the CLI default to the domain's model (literals where KFP needs them)."""
    import inspect

    from cli.model import backtest_cmd, train_cmd
    from cli.pipeline import run_cmd
    from components.train_model import train_model
    from fraud_detection.model.train import DEFAULT_MODEL_TYPE, TrainConfig

    _, spec, _ = compiled
    assert spec["root"]["inputDefinitions"]["parameters"]["model_type"]["defaultValue"] == DEFAULT_MODEL_TYPE
    signature = inspect.signature(train_model.python_func).parameters
    assert signature["model_type"].default == DEFAULT_MODEL_TYPE
    # 0 leaves the leaf size to TrainConfig, which resolves it per model type
    assert signature["min_samples_leaf"].default == 0
    assert TrainConfig(model_type=DEFAULT_MODEL_TYPE).min_samples_leaf == 5
    assert TrainConfig(model_type="hgb").min_samples_leaf == 20
    for command in (train_cmd, run_cmd):
        assert inspect.signature(command).parameters["model"].default == DEFAULT_MODEL_TYPE, command.__name__
    assert inspect.signature(backtest_cmd).parameters["model"].default is None  # None: [DEFAULT_MODEL_TYPE]


def test_every_component_source_runs_on_its_own():
    """KFP runs a component from its source alone: a default naming a module global would fail in the pod."""
    import importlib

    names = sorted(p.stem for p in (REPO / "components").glob("*.py") if p.stem != "__init__")
    assert names
    for name in names:
        component = getattr(importlib.import_module(f"components.{name}"), name)
        source = component.component_spec.implementation.container.command[-1]
        namespace: dict[str, Any] = {}
        exec(compile(source, f"<{name}>", "exec"), namespace)
        assert callable(namespace[name]), name
