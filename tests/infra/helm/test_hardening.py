"""No secret values rendered; every pod hardened and bounded."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import k8s
from tests.infra.helm.chart import VALUE_SETS, Render, serve_container

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------------------------- secrets, pod hardening

SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE|CREDENTIAL|IDENTIFIER_KEY)", re.IGNORECASE)
KNOWN_DEFAULT_CREDENTIALS = ("minioadmin", "minio123", "AKIA", "changeme", "password123")


def walk_env(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for template in k8s.pod_templates(objects):
        for container in template.spec.get("containers", []) + template.spec.get("initContainers", []):
            for env in container.get("env", []):
                yield template.owner, env


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_no_secret_values_are_rendered(chart: Path, values: tuple[str, ...]) -> None:
    files = [arg for v in values for arg in ("-f", str(chart / v))]
    text = k8s.run_tool(["helm", "template", k8s.RELEASE, str(chart), "-n", k8s.NAMESPACE, *files])
    objects = k8s.load_documents(text)
    assert not k8s.find(objects, "Secret"), "the chart must never create a Secret"
    checked = 0
    for owner, env in walk_env(objects):
        if SECRETISH.search(env["name"]):
            checked += 1
            assert "value" not in env, f"{owner}: {env['name']} has a literal value"
            assert set(env["valueFrom"]) == {"secretKeyRef"}, f"{owner}: {env['name']} not from a Secret"
    if values == ("values-aks.yaml",):
        # Workload identity: no static storage keys at all, and the store is Azure Blob. The only secrets are the
        # Azure Cache for Redis password (the online feature store) and the HMAC key of the identifier hashes,
        # both by secretKeyRef (checked above).
        names = {env["name"] for _, env in walk_env(objects) if SECRETISH.search(env["name"])}
        assert names == {"FRAUD_ONLINE_STORE_PASSWORD", "FRAUD_IDENTIFIER_KEY"}, (
            "AKS values must not wire static storage keys"
        )
        assert "FRAUD_AZURE_STORAGE_ACCOUNT_URL" in text
    elif values != ("ci/minimal-values.yaml",):
        assert checked >= 2, "expected the S3 keys to be wired by secretKeyRef"
    for cm in k8s.find(objects, "ConfigMap"):
        for key in cm.get("data", {}):
            assert not SECRETISH.search(key) or key.endswith("_SECRET_NAME"), f"{k8s.describe(cm)}: {key}"
    for literal in KNOWN_DEFAULT_CREDENTIALS:
        assert literal.lower() not in text.lower()


def security_context_ok(container: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """Missing hardening of one container, taking pod-level defaults into account."""
    sc, psc = container.get("securityContext", {}), pod.get("securityContext", {})
    problems = []
    if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
        problems.append("runAsNonRoot")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        problems.append("capabilities.drop ALL")
    if sc.get("capabilities", {}).get("add"):
        problems.append("capabilities.add")
    if sc.get("privileged"):
        problems.append("privileged")
    if sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type") != "RuntimeDefault":
        problems.append("seccompProfile RuntimeDefault")
    resources = container.get("resources", {})
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(section, {}):
                problems.append(f"resources.{section}.{resource}")
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    if "/tmp" not in mounts:
        problems.append("writable /tmp (emptyDir) next to the read-only root filesystem")
    return problems


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_pod_is_hardened_and_bounded(render: Render, values: tuple[str, ...]) -> None:
    templates = list(k8s.pod_templates(render(values)))
    assert templates
    for template in templates:
        pod = template.spec
        containers = pod.get("containers", []) + pod.get("initContainers", [])
        assert containers, template.owner
        for container in containers:
            assert security_context_ok(container, pod) == [], f"{template.owner}/{container['name']}"
        if template.pod_security_expected:
            psc = pod.get("securityContext", {})
            assert psc.get("runAsNonRoot") is True, template.owner
            assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", template.owner
        assert pod.get("automountServiceAccountToken") is False, template.owner
        assert not pod.get("hostNetwork")
        assert not pod.get("hostPID")
        assert not pod.get("hostIPC")
        tmp_volumes = [v for v in pod.get("volumes", []) if v["name"] == "tmp"]
        assert tmp_volumes, template.owner
        assert "emptyDir" in tmp_volumes[0], template.owner


def test_hardening_check_can_fail(render: Render) -> None:
    container = json.loads(json.dumps(serve_container(render())))
    container["securityContext"]["readOnlyRootFilesystem"] = False
    del container["resources"]["limits"]
    assert set(security_context_ok(container, {})) >= {"readOnlyRootFilesystem", "resources.limits.cpu"}
