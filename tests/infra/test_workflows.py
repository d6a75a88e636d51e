"""GitHub workflows: actionlint passes; triggers, schedule and concurrency are as designed; permissions are least
privilege; actions are pinned by commit; Azure access is OIDC with no stored secret."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("ci.yml", "retrain-and-deploy.yml", "infra.yml")

# Scopes a job may be granted, and the only level each may have.
ALLOWED_PERMISSIONS = {"contents": {"read"}, "id-token": {"write"}}
# Secrets a workflow may name: none. Azure IDs come from repository variables (vars.*).
SECRET_LITERALS = re.compile(
    r"(?:AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|ghp_[A-Za-z0-9]{20,}|"
    r"(?:password|client[-_]secret|account[-_]?key)\s*[:=]\s*['\"]?[A-Za-z0-9+/=]{8,})",
    re.IGNORECASE,
)


def _load(name: str) -> dict[Any, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    # YAML 1.1 reads the key `on` as True.
    if True in data:
        data["on"] = data.pop(True)
    return data


@pytest.fixture(scope="module", params=NAMES)
def workflow(request: pytest.FixtureRequest) -> tuple[str, dict[Any, Any]]:
    return request.param, _load(request.param)


def _actionlint() -> str:
    local = ROOT / ".venv" / "bin" / "actionlint"
    found = str(local) if local.exists() else shutil.which("actionlint")
    assert found, "actionlint is not installed (make install)"
    return found


def test_all_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS.glob("*.yml")} >= set(NAMES)


def test_actionlint_passes() -> None:
    proc = subprocess.run(
        [_actionlint(), *(str(WORKFLOWS / n) for n in NAMES)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n      - uses: actions/checkout\n",
        encoding="utf-8",
    )
    proc = subprocess.run([_actionlint(), str(bad)], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode != 0


def test_retrain_runs_mondays_at_0500_utc_and_on_demand() -> None:
    triggers = _load("retrain-and-deploy.yml")["on"]
    assert triggers["schedule"] == [{"cron": "0 5 * * 1"}]
    minute, hour, day, month, weekday = triggers["schedule"][0]["cron"].split()
    assert (minute, hour, day, month, weekday) == ("0", "5", "*", "*", "1")  # GitHub cron is UTC
    assert "inputs" in triggers["workflow_dispatch"]


def test_ci_runs_on_pull_requests_and_main() -> None:
    triggers = _load("ci.yml")["on"]
    assert "pull_request" in triggers
    assert triggers["push"]["branches"] == ["main"]
    steps = [s.get("run", "") for job in _load("ci.yml")["jobs"].values() for s in job["steps"]]
    assert any("bash .ci/run" in r for r in steps)
    assert any("make infra-lint" in r for r in steps)


def test_infra_what_if_on_pull_requests_and_deploy_on_main() -> None:
    data = _load("infra.yml")
    assert "infra/**" in data["on"]["pull_request"]["paths"]
    assert data["on"]["push"]["branches"] == ["main"]
    runs = {name: " ".join(s.get("run", "") for s in job["steps"]) for name, job in data["jobs"].items()}
    assert "az deployment sub what-if" in runs["what-if"]
    assert "pull_request" in data["jobs"]["what-if"]["if"]
    assert "az deployment sub create" in runs["deploy-dev"] and "az deployment sub create" in runs["deploy-prod"]
    assert "refs/heads/main" in data["jobs"]["deploy-dev"]["if"]
    assert data["jobs"]["deploy-prod"]["environment"] == "infra-prod"


def test_every_workflow_has_a_concurrency_group(workflow: tuple[str, dict[Any, Any]]) -> None:
    name, data = workflow
    assert data.get("concurrency", {}).get("group"), name


def test_permissions_are_least_privilege(workflow: tuple[str, dict[Any, Any]]) -> None:
    name, data = workflow
    top = data.get("permissions")
    assert top is not None, f"{name}: no top-level permissions (the default token is broad)"
    assert top in ({}, {"contents": "read"}), f"{name}: top-level permissions {top}"
    for job_name, job in data["jobs"].items():
        perms = job.get("permissions", top)
        assert isinstance(perms, dict), f"{name}/{job_name}: permissions must be a mapping, not {perms!r}"
        for scope, level in perms.items():
            assert level in ALLOWED_PERMISSIONS.get(scope, set()), f"{name}/{job_name}: {scope}: {level}"


def test_id_token_only_where_azure_login_happens(workflow: tuple[str, dict[Any, Any]]) -> None:
    name, data = workflow
    for job_name, job in data["jobs"].items():
        logs_in = any(str(s.get("uses", "")).startswith("azure/login@") for s in job["steps"])
        has_token = job.get("permissions", data.get("permissions", {})).get("id-token") == "write"
        assert logs_in == has_token, f"{name}/{job_name}"


def test_azure_login_is_oidc_from_variables(workflow: tuple[str, dict[Any, Any]]) -> None:
    name, data = workflow
    for job in data["jobs"].values():
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("azure/login@"):
                assert set(step["with"]) == {"client-id", "tenant-id", "subscription-id"}, name
                for value in step["with"].values():
                    assert value.startswith("${{ vars."), value


def test_actions_are_pinned_to_a_commit(workflow: tuple[str, dict[Any, Any]]) -> None:
    name, data = workflow
    for job in data["jobs"].values():
        for step in job["steps"]:
            uses = step.get("uses")
            if uses:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", uses), f"{name}: {uses}"


def test_no_secret_literal_and_no_secrets_context() -> None:
    for name in NAMES:
        text = (WORKFLOWS / name).read_text(encoding="utf-8")
        assert "secrets." not in text, f"{name} reads a stored secret"
        assert not SECRET_LITERALS.search(text), name


def test_secret_literal_check_can_fail() -> None:
    assert SECRET_LITERALS.search("client_secret: 'Zm9vYmFyYmF6cXV4MTIzNA=='")
    assert SECRET_LITERALS.search("AKIAABCDEFGHIJKLMNOP")


def test_checkout_does_not_persist_credentials(workflow: tuple[str, dict[Any, Any]]) -> None:
    name, data = workflow
    for job in data["jobs"].values():
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, name


def test_deploying_jobs_are_environment_protected() -> None:
    jobs = _load("retrain-and-deploy.yml")["jobs"]
    assert jobs["train"]["environment"] == "training"
    assert jobs["rollout"]["environment"] == "production"
    assert jobs["rollout"]["needs"] == "train"
    runs = " ".join(s.get("run", "") for job in jobs.values() for s in job["steps"])
    for command in ("make pipeline", "fraud pipeline submit", "az aks get-credentials", "fraud rollout"):
        assert command in runs, command


def test_inputs_never_reach_a_script_directly() -> None:
    for name in NAMES:
        for job in _load(name)["jobs"].values():
            for step in job["steps"]:
                run = step.get("run", "")
                assert "${{" not in run, f"{name}: expression inside a script: {run[:80]}"
