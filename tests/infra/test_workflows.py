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
NAMES = ("ci.yml", "retrain-and-deploy.yml", "infra.yml", "images.yml", "deploy.yml")
TARGETS = ("pipeline", "serve", "drift", "spark")

# Scopes a job may be granted, and the only level each may have; packages: write only where images or the chart
# are pushed (below).
ALLOWED_PERMISSIONS = {"contents": {"read"}, "id-token": {"write"}, "packages": {"read", "write"}}
PACKAGE_WRITERS = {("images.yml", "build"), ("images.yml", "chart"), ("deploy.yml", "images")}
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
        if perms.get("packages") == "write":
            assert (name, job_name) in PACKAGE_WRITERS, f"{name}/{job_name} may not write packages"


def test_id_token_only_where_azure_login_happens(workflow: tuple[str, dict[Any, Any]]) -> None:
    name, data = workflow
    for job_name, job in data["jobs"].items():
        if "uses" in job:  # a reusable workflow: its own jobs are checked in its file
            continue
        logs_in = any(str(s.get("uses", "")).startswith("azure/login@") for s in job["steps"])
        has_token = job.get("permissions", data.get("permissions", {})).get("id-token") == "write"
        assert logs_in == has_token, f"{name}/{job_name}"


def test_azure_login_is_oidc_from_variables(workflow: tuple[str, dict[Any, Any]]) -> None:
    name, data = workflow
    for job in data["jobs"].values():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("azure/login@"):
                assert set(step["with"]) == {"client-id", "tenant-id", "subscription-id"}, name
                for value in step["with"].values():
                    assert value.startswith("${{ vars."), value


def test_actions_are_pinned_to_a_commit(workflow: tuple[str, dict[Any, Any]]) -> None:
    name, data = workflow
    for job in data["jobs"].values():
        if "uses" in job:
            assert re.fullmatch(r"\./\.github/workflows/[\w-]+\.yml", job["uses"]), f"{name}: {job['uses']}"
        for step in job.get("steps", []):
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
        for step in job.get("steps", []):
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
            for step in job.get("steps", []):
                run = step.get("run", "")
                assert "${{" not in run, f"{name}: expression inside a script: {run[:80]}"


# --- delivery: images.yml and deploy.yml ------------------------------------------------------------------------


def _step(job: dict[Any, Any], uses_prefix: str, index: int = 0) -> dict[Any, Any]:
    found = [s for s in job["steps"] if str(s.get("uses", "")).startswith(uses_prefix)]
    assert len(found) > index, f"no step #{index} using {uses_prefix}"
    return found[index]


def _position(job: dict[Any, Any], step: dict[Any, Any]) -> int:
    return next(i for i, s in enumerate(job["steps"]) if s is step)


def test_images_builds_every_target_and_scans_before_pushing() -> None:
    data = _load("images.yml")
    build = data["jobs"]["build"]
    assert build["strategy"]["matrix"]["target"] == list(TARGETS)
    scan_build = _step(build, "docker/build-push-action@", 0)
    push = _step(build, "docker/build-push-action@", 1)
    trivy = _step(build, "aquasecurity/trivy-action@")
    assert scan_build["with"]["push"] is False and scan_build["with"]["load"] is True
    assert _position(build, scan_build) < _position(build, trivy) < _position(build, push)
    # The scan fails the job on CRITICAL findings; it scans exactly the image that is then pushed.
    assert trivy["with"]["severity"] == "CRITICAL"
    assert trivy["with"]["exit-code"] == "1"
    assert trivy["with"]["image-ref"] == scan_build["with"]["tags"] == push["with"]["tags"] == "${{ env.IMAGE }}"
    assert "target" in scan_build["with"] and push["with"]["target"] == "${{ matrix.target }}"
    # SBOM and provenance attestations go with every pushed image.
    assert push["with"]["push"] is True
    assert push["with"]["sbom"] is True
    assert str(push["with"]["provenance"]).startswith(("true", "mode="))
    # Pull requests build and scan only.
    assert "pull_request" in data["on"]
    assert push["if"] == "${{ needs.meta.outputs.push == 'true' }}"
    meta_run = " ".join(s.get("run", "") for s in data["jobs"]["meta"]["steps"])
    assert '[ "$EVENT" = pull_request ] && echo false' in meta_run
    assert build["env"]["IMAGE"].startswith("${{ needs.meta.outputs.registry }}/fraud-detection-${{ matrix.target }}")
    assert build["env"]["IMAGE"].endswith(":${{ needs.meta.outputs.tag }}")


def test_images_pushes_the_chart_as_an_oci_artifact_whose_app_version_is_the_image_tag() -> None:
    data = _load("images.yml")
    chart = data["jobs"]["chart"]
    runs = "\n".join(s.get("run", "") for s in chart["steps"])
    assert "helm lint --strict helm/fraud-detection" in runs
    # The chart's default registry becomes the one the images were pushed to (the line it rewrites must exist).
    assert "s|^  registry: ghcr.io/fraud-detection$|  registry: ${REGISTRY}|" in runs
    assert "\n  registry: ghcr.io/fraud-detection\n" in (ROOT / "helm/fraud-detection/values.yaml").read_text()
    assert 'helm package helm/fraud-detection --version "$CHART_VERSION" --app-version "$TAG"' in runs
    assert 'helm push "build/charts/fraud-detection-${CHART_VERSION}.tgz" "oci://${CHART_REPOSITORY}"' in runs
    env = {k: v for s in chart["steps"] for k, v in s.get("env", {}).items()}
    assert env["TAG"] == "${{ needs.meta.outputs.tag }}"
    # The workflow hands the same tag and chart version to its caller.
    outputs = data["on"]["workflow_call"]["outputs"]
    assert outputs["tag"]["value"] == "${{ jobs.meta.outputs.tag }}"
    assert outputs["chart-version"]["value"] == "${{ jobs.meta.outputs.chart-version }}"


def test_images_copy_to_acr_is_oidc_in_its_own_environment() -> None:
    acr = _load("images.yml")["jobs"]["acr"]
    assert acr["environment"] == "images"
    assert "vars.ACR_NAME != ''" in acr["if"]
    assert acr["permissions"] == {"contents": "read", "packages": "read", "id-token": "write"}
    runs = " ".join(s.get("run", "") for s in acr["steps"])
    assert "az acr login" in runs and "docker buildx imagetools create" in runs


def test_deploy_installs_the_built_chart_with_the_built_tag_after_approval_then_smoke_tests() -> None:
    data = _load("deploy.yml")
    assert data["on"]["push"]["branches"] == ["main"]
    images, deploy = data["jobs"]["images"], data["jobs"]["deploy"]
    assert images["uses"] == "./.github/workflows/images.yml"
    assert deploy["needs"] == "images"
    assert deploy["environment"] == "production"
    assert deploy["permissions"]["id-token"] == "write"
    login = _step(deploy, "azure/login@")
    assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}
    # The tag and chart version built by images.yml are the ones installed.
    assert deploy["env"]["IMAGE_TAG"] == "${{ needs.images.outputs.tag }}"
    assert deploy["env"]["CHART_VERSION"] == "${{ needs.images.outputs.chart-version }}"
    install = next(s["run"] for s in deploy["steps"] if "helm upgrade --install" in s.get("run", ""))
    assert '"oci://${CHART_REPOSITORY}/fraud-detection" --version "$CHART_VERSION"' in install
    assert '--set image.tag="$IMAGE_TAG"' in install
    assert "--values helm/fraud-detection/values-aks.yaml" in install and "--wait" in install
    names = [s.get("name", "") for s in deploy["steps"]]
    assert names.index("Install the chart") < names.index("Smoke test")
    smoke = next(s["run"] for s in deploy["steps"] if s.get("name") == "Smoke test")
    assert "--for=condition=Ready" in smoke
    assert "python3 tools/smoke_test.py --url http://127.0.0.1:18080" in smoke


def test_the_caller_grants_what_the_images_workflow_needs() -> None:
    """A reusable workflow's jobs get at most the caller job's permissions."""
    granted = _load("deploy.yml")["jobs"]["images"]["permissions"]
    order = {"read": 1, "write": 2}
    for job_name, job in _load("images.yml")["jobs"].items():
        for scope, level in job.get("permissions", {}).items():
            assert order[granted.get(scope, "none")] >= order[level], f"images.yml/{job_name}: {scope}"


def test_deploy_reads_the_outputs_of_the_deployment_infra_yml_makes() -> None:
    infra_runs = " ".join(s.get("run", "") for s in _load("infra.yml")["jobs"]["deploy-prod"]["steps"])
    assert '--name "fraud-prod"' in infra_runs
    deploy = _load("deploy.yml")["jobs"]["deploy"]
    step = next(s for s in deploy["steps"] if s.get("name") == "Values from the infrastructure outputs")
    assert step["env"]["INFRA_DEPLOYMENT"] == "${{ vars.INFRA_DEPLOYMENT || 'fraud-prod' }}"
    assert 'az deployment sub show --name "$INFRA_DEPLOYMENT"' in step["run"]
    assert "tools/aks_values.py" in step["run"]
