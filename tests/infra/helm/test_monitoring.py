"""Monitoring objects: the PodMonitor, the PrometheusRule and the dashboard ConfigMaps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests import k8s
from tests.infra.helm.chart import ALL_ENABLED, Render

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------------------------ monitoring


def test_pod_monitor_scrapes_the_predictor(render: Render) -> None:
    pm = k8s.one(render(), "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert pm["spec"]["selector"] == {"matchLabels": {"serving.kserve.io/inferenceservice": "fraud-detector"}}
    assert pm["spec"]["namespaceSelector"] == {"matchNames": [k8s.NAMESPACE]}
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["portNumber"] == 8080
    labelled = k8s.one(render(ALL_ENABLED), "PodMonitor")
    assert labelled["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_carries_the_alert_rule_files(render: Render) -> None:
    rule_files = sorted((k8s.monitoring_dir() / "alerts").glob("*.rules.yaml"))
    assert rule_files, "no monitoring/alerts/*.rules.yaml: the chart would ship no alerts"
    expected = [g for f in rule_files for g in yaml.safe_load(f.read_text())["groups"]]
    rule = k8s.one(render(), "PrometheusRule")
    assert rule["spec"]["groups"] == expected
    assert {r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]} - {None}, "no alerting rule"
    labelled = k8s.one(render(ALL_ENABLED), "PrometheusRule")
    assert labelled["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_dashboard_configmaps_carry_the_dashboards(render: Render) -> None:
    dashboards = sorted((k8s.monitoring_dir() / "dashboards").glob("*.json"))
    assert dashboards, "no monitoring/dashboards/*.json: the chart would ship no dashboards"
    configmaps = [c for c in k8s.find(render(), "ConfigMap") if "-dashboard-" in c["metadata"]["name"]]
    shipped = {key: json.loads(value) for c in configmaps for key, value in c["data"].items()}
    assert shipped == {d.name: json.loads(d.read_text()) for d in dashboards}
    for cm in configmaps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["namespace"] == k8s.NAMESPACE
    relabelled = render(sets=("dashboards.label=grafana_dashboard_fraud", "dashboards.labelValue=yes"))
    for cm in (c for c in k8s.find(relabelled, "ConfigMap") if "-dashboard-" in c["metadata"]["name"]):
        assert cm["metadata"]["labels"]["grafana_dashboard_fraud"] == "yes"
        assert "grafana_dashboard" not in cm["metadata"]["labels"]


def test_monitoring_files_missing_fail_loudly(chart: Path, tmp_path: Path) -> None:
    bare = tmp_path / "chart"
    k8s.materialize_chart(bare, source=chart)
    for link in ("alerts", "dashboards"):
        for f in (bare / "files" / link).iterdir():
            if f.is_file():
                f.unlink()
    with pytest.raises(k8s.ToolError, match="no files/alerts"):
        k8s.helm_template(bare, set_values=("dashboards.enabled=false",))
    with pytest.raises(k8s.ToolError, match="no files/dashboards"):
        k8s.helm_template(bare, set_values=("prometheusRule.enabled=false",))
    assert k8s.helm_template(bare, set_values=("dashboards.enabled=false", "prometheusRule.enabled=false"))
