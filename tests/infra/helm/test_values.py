"""values-aks.yaml, the values schema and comments, packaging and checkov."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import k8s
from tests.infra.helm.chart import Render, predictor, serve_container

pytestmark = pytest.mark.integration


# -------------------------------------------------------------------------------------------------- AKS


def test_values_aks(render: Render) -> None:
    objects = render(("values-aks.yaml",))
    images = [c["image"] for t in k8s.pod_templates(objects) for c in t.spec["containers"]]
    assert images
    assert all(i.startswith("<registry>.azurecr.io/fraud-detection-") for i in images)
    sa = k8s.one(objects, "ServiceAccount", "fraud-detection")
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == "<identity-client-id>"
    assert predictor(objects)["labels"]["azure.workload.identity/use"] == "true"
    drift_labels = k8s.one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert drift_labels["azure.workload.identity/use"] == "true"
    env = k8s.env_of(serve_container(objects))
    assert env["STORAGE_URI"] == "https://<account>.blob.core.windows.net/models/models/fraud-detector/versions/1"
    pm = k8s.one(objects, "PodMonitor")
    assert pm["apiVersion"] == "azmonitoring.coreos.com/v1"
    assert (pm["spec"]["labelLimit"], pm["spec"]["labelNameLengthLimit"], pm["spec"]["labelValueLengthLimit"]) == (
        63, 511, 1023,
    )  # fmt: skip
    assert not k8s.find(objects, "PrometheusRule")  # managed Prometheus: rule groups come from Bicep
    assert not [c for c in k8s.find(objects, "ConfigMap") if "-dashboard-" in c["metadata"]["name"]]


# -------------------------------------------------------------------------------- values.yaml and schema


def _leaf_paths(values: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from _leaf_paths(value, (*prefix, key))
    else:
        yield prefix


def _schema_at(schema: dict[str, Any], root: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node = schema
    for key in path:
        while "$ref" in node:
            node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
        if key in node.get("properties", {}):
            node = node["properties"][key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    while "$ref" in node:
        node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_schema_covers_every_value() -> None:
    root = json.loads((k8s.CHART_DIR / "values.schema.json").read_text())
    for path in _leaf_paths(yaml.safe_load((k8s.CHART_DIR / "values.yaml").read_text())):
        node = _schema_at(root, root, path)
        assert node is not None, f"values.schema.json does not describe {'.'.join(path)}"
    # Unknown keys are rejected at every level of the chart's own sections.
    assert root["additionalProperties"] is False
    for key, node in root["properties"].items():
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, key


def test_every_value_is_commented() -> None:
    """Each key has a comment right above it, or sits under a key whose `# --` comment documents the block."""
    lines = (k8s.CHART_DIR / "values.yaml").read_text().splitlines()
    key_line = re.compile(r"^(\s*)([A-Za-z0-9_.\-/]+):")
    stack: list[tuple[int, bool]] = []  # (indent, documents its whole block)
    undocumented = []
    for number, line in enumerate(lines):
        match = key_line.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        above = lines[number - 1].strip() if number else ""
        commented = above.startswith("#")
        if not commented and not any(block for _, block in stack):
            undocumented.append(f"line {number + 1}: {line.strip()}")
        stack.append((indent, above.startswith("# --")))
    assert undocumented == []


# ------------------------------------------------------------------------------------ packaging, checkov


def test_chart_links_the_monitoring_files() -> None:
    for name in ("alerts", "dashboards"):
        link = k8s.CHART_DIR / "files" / name
        assert link.is_symlink(), f"{link} should link to monitoring/{name}"
        assert link.resolve() == (k8s.REPO / "monitoring" / name).resolve()


def test_helm_package_includes_the_linked_files(tmp_path: Path) -> None:
    """helm follows the links when packaging: the released chart carries the rules and dashboards themselves."""
    sources = {f"files/alerts/{p.name}": p for p in (k8s.REPO / "monitoring" / "alerts").glob("*.rules.yaml")} | {
        f"files/dashboards/{p.name}": p for p in (k8s.REPO / "monitoring" / "dashboards").glob("*.json")
    }
    if not sources or not (k8s.REPO / "monitoring" / "dashboards").is_dir():
        pytest.skip("monitoring/alerts or monitoring/dashboards not written yet")
    k8s.run_tool(["helm", "package", str(k8s.CHART_DIR), "--destination", str(tmp_path)])
    (package,) = tmp_path.glob("fraud-detection-*.tgz")
    with tarfile.open(package) as tar:
        names = {n.split("/", 1)[1]: n for n in tar.getnames()}
        for inner, source in sources.items():
            assert inner in names, f"{inner} missing from the package"
            member = tar.extractfile(names[inner])
            assert member is not None
            assert member.read() == source.read_bytes()
        assert not [n for n in names if n.endswith(".py") or "/tests/" in n], "helmignore leaks"


def test_checkov_helm(chart: Path, tmp_path: Path) -> None:
    """checkov's Kubernetes policies on the chart rendered with every optional piece on: nothing fails."""
    env = {
        **os.environ,
        "BC_SKIP_MAPPING": "TRUE",
        "HELM_NAMESPACE": k8s.NAMESPACE,  # what `helm install -n` sets; checkov's CKV_K8S_21 reads it too
        "PATH": f"{k8s.BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(
        [
            k8s.tool("checkov"), "-d", str(chart), "--framework", "helm",
            "--var-file", str(chart / "ci" / "all-enabled-values.yaml"),
            "--output", "json", "--compact",
        ],
        capture_output=True, text=True, env=env, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    helm = [r for r in reports if r.get("check_type") == "helm"]
    assert helm, f"checkov scanned no chart (helm on PATH? stderr: {proc.stderr[-2000:]})"
    summary = helm[0]["summary"]
    failed = [(c["check_id"], c["resource"]) for c in helm[0]["results"].get("failed_checks", [])]
    assert failed == []
    assert summary["failed"] == 0
    assert summary["passed"] >= 100, summary
    for skipped in helm[0]["results"].get("skipped_checks", []):
        comment = skipped.get("check_result", {}).get("suppress_comment", "")
        assert comment, skipped["check_id"]
        assert comment != "No comment provided", skipped["check_id"]
