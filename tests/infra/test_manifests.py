"""The kustomize manifests (manifests/): render each overlay, validate it, and keep it apart from the chart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import k8s

pytestmark = pytest.mark.integration

OVERLAYS = {p.name: p for p in k8s.overlays()}
CHART_VALUE_SETS = ((), ("ci/all-enabled-values.yaml",), ("values-aks.yaml",), ("ci/raw-deployment-values.yaml",))
RUNNER = {"kind": "ServiceAccount", "name": "fraud-pipeline-runner", "namespace": "kubeflow"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each overlay rendered once with kubectl kustomize."""
    return {name: k8s.kustomize(path) for name, path in OVERLAYS.items()}


@pytest.fixture(scope="module")
def chart_objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every object the chart can render (default values and the value sets that switch pieces on)."""
    chart = k8s.materialize_chart(tmp_path_factory.mktemp("chart") / "fraud-detection")
    objects: list[dict[str, Any]] = []
    for values in CHART_VALUE_SETS:
        objects += k8s.helm_template(chart, [chart / v for v in values])
    return objects


def parse_quantity(value: str | int) -> Decimal:
    """Parse a Kubernetes quantity (the suffixes the manifests and chart use) into a plain number."""
    text = str(value)
    suffixes = {"m": Decimal("0.001"), "Ki": Decimal(1024), "Mi": Decimal(1024) ** 2, "Gi": Decimal(1024) ** 3}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * factor
    return Decimal(text)


def test_both_overlays_exist() -> None:
    assert set(OVERLAYS) == {"dev", "prod"}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_objects_validate(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    assert objects
    assert k8s.validate_all(objects) == []


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_contents(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    identities = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in rendered[overlay]}
    assert identities == {
        ("Namespace", None, "fraud-detection"),
        ("LimitRange", "fraud-detection", "fraud-detection-defaults"),
        ("ResourceQuota", "fraud-detection", "fraud-detection-quota"),
        ("ServiceAccount", "kubeflow", "fraud-pipeline-runner"),
        ("Role", "kubeflow", "fraud-pipeline-runner"),
        ("RoleBinding", "kubeflow", "fraud-pipeline-runner"),
        ("Role", "fraud-detection", "fraud-pipeline-deployer"),
        ("RoleBinding", "fraud-detection", "fraud-pipeline-deployer"),
    }
    for obj in rendered[overlay]:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "fraud-detection"
        assert labels["fraud-detection.io/environment"] == overlay


def test_pipeline_runner_may_only_deploy_inference_services(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for objects in rendered.values():
        deployer = k8s.one(objects, "Role", "fraud-pipeline-deployer")
        assert deployer["metadata"]["namespace"] == "fraud-detection"
        assert deployer["rules"] == [
            {
                "apiGroups": ["serving.kserve.io"],
                "resources": ["inferenceservices"],
                "verbs": ["get", "list", "watch", "create", "update", "patch"],
            }
        ]
        for name in ("fraud-pipeline-deployer", "fraud-pipeline-runner"):
            binding = k8s.one(objects, "RoleBinding", name)
            assert binding["subjects"] == [RUNNER]
            assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        runner = k8s.one(objects, "Role", "fraud-pipeline-runner")
        for rule in runner["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
            if "secrets" in rule["resources"] or "configmaps" in rule["resources"]:
                assert rule.get("resourceNames"), "Secrets and ConfigMaps only by name"
        assert not k8s.find(objects, "ClusterRole")
        assert not k8s.find(objects, "ClusterRoleBinding")


def test_namespace_guard_rails(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, objects in rendered.items():
        labels = k8s.one(objects, "Namespace")["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
        assert labels["pod-security.kubernetes.io/warn"] == "restricted"
        assert labels["pod-security.kubernetes.io/audit"] == "restricted"
        assert labels["istio-injection"] == ("enabled" if overlay == "prod" else "disabled")
        limits = k8s.one(objects, "LimitRange")["spec"]["limits"]
        container = next(limit for limit in limits if limit["type"] == "Container")
        assert {"cpu", "memory"} <= container["defaultRequest"].keys()
        assert {"cpu", "memory"} <= container["default"].keys()


@pytest.mark.parametrize("overlay", ["prod"])
def test_quota_fits_the_chart_at_full_scale(
    rendered: dict[str, list[dict[str, Any]]], chart_objects: list[dict[str, Any]], overlay: str
) -> None:
    """prod admits the predictor at maxReplicas twice over (stable and canary revisions) plus the drift job."""
    hard = k8s.one(rendered[overlay], "ResourceQuota")["spec"]["hard"]
    isvc = next(o for o in chart_objects if o["kind"] == "InferenceService")
    spec = isvc["spec"]["predictor"]
    (container,) = spec["containers"]
    cronjob = next(o for o in chart_objects if o["kind"] == "CronJob")
    (drift,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    limit_range = k8s.one(rendered[overlay], "LimitRange")["spec"]["limits"][0]
    for section, sidecar in (("requests", limit_range["defaultRequest"]), ("limits", limit_range["default"])):
        for resource in ("cpu", "memory"):
            per_pod = parse_quantity(container["resources"][section][resource]) + 2 * parse_quantity(sidecar[resource])
            needed = 2 * spec["maxReplicas"] * per_pod + parse_quantity(drift["resources"][section][resource])
            assert parse_quantity(hard[f"{section}.{resource}"]) >= needed, f"{section}.{resource}"
    assert int(hard["pods"]) >= 2 * spec["maxReplicas"] + 1


def test_no_object_is_owned_by_both_chart_and_manifests(
    rendered: dict[str, list[dict[str, Any]]], chart_objects: list[dict[str, Any]]
) -> None:
    def key(obj: dict[str, Any]) -> tuple[str, str | None, str]:
        return (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])

    chart = {key(o) for o in chart_objects}
    assert len(chart) > 10
    for overlay, objects in rendered.items():
        both = chart & {key(o) for o in objects}
        assert both == set(), f"{overlay}: in both the chart and the manifests: {sorted(both)}"
    assert not [o for o in chart_objects if o["kind"] == "Namespace"], "namespaces belong to the manifests"


def test_manifests_create_the_chart_namespace(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for objects in rendered.values():
        assert k8s.one(objects, "Namespace")["metadata"]["name"] == k8s.NAMESPACE


def test_render_manifests_tool(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """`make manifests` (tools/render_manifests.py) writes one file per overlay, equal to kubectl kustomize."""
    env = {**os.environ, "PATH": f"{k8s.BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [sys.executable, str(k8s.REPO / "tools" / "render_manifests.py"), "--output-dir", str(tmp_path)],
        check=True, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.yaml" for name in sorted(OVERLAYS)]
    for name, objects in rendered.items():
        assert [d for d in yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text()) if d] == objects
    bad = subprocess.run(
        [sys.executable, str(k8s.REPO / "tools" / "render_manifests.py"), "--output-dir", str(tmp_path), "staging"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "unknown overlay" in bad.stderr


def test_checkov_kustomize(tmp_path: Path) -> None:
    """checkov's Kubernetes policies on every overlay: nothing fails."""
    env = {
        **os.environ,
        "BC_SKIP_MAPPING": "TRUE",
        "PATH": f"{k8s.BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [k8s.tool("checkov"), "-d", str(k8s.MANIFESTS_DIR), "--framework", "kustomize", "--output", "json"]
    proc = subprocess.run(
        [*command, "--compact"], capture_output=True, text=True, env=env, timeout=600, check=False, cwd=tmp_path
    )
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    kustomize = [r for r in reports if r.get("check_type") == "kustomize"]
    assert kustomize, f"checkov scanned nothing (stderr: {proc.stderr[-2000:]})"
    results = kustomize[0]["results"]
    failed = [(c["check_id"], c["resource"]) for c in results.get("failed_checks", [])]
    assert failed == []
    assert kustomize[0]["summary"]["passed"] >= 40
    # Resource ids look like "Overlay:overlays/prod:Role.kubeflow.fraud-pipeline-runner".
    scanned = {c["resource"].split(":")[1] for c in results.get("passed_checks", []) if c["resource"].count(":") >= 2}
    assert scanned >= {f"overlays/{name}" for name in OVERLAYS}, f"overlays scanned: {scanned}"
    for skipped in results.get("skipped_checks", []):
        comment = skipped.get("check_result", {}).get("suppress_comment", "")
        assert comment, skipped["check_id"]
        assert comment != "No comment provided", skipped["check_id"]
