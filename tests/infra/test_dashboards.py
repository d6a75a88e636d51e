"""Grafana dashboards: committed JSON equals build.py's output, panels, variables, PromQL checked with promtool,
metric names from docs/METRICS.md."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.prometheus import promtool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "monitoring" / "dashboards"
BUILD = DASHBOARD_DIR / "build.py"
RULE_FILE = ROOT / "monitoring" / "alerts" / "fraud-detection.rules.yaml"
METRICS_DOC = ROOT / "docs" / "METRICS.md"
EXPECTED_UIDS = {
    "serving.json": "fraud-serving",
    "drift.json": "fraud-drift",
    "model-quality.json": "fraud-model-quality",
}
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}

# Grafana's own variables, replaced by valid values before promtool sees an expression.
GRAFANA_BUILTINS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "6h",
    "__range_s": "21600",
    "__range_ms": "21600000",
    "__interval_ms": "60000",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# ---------------------------------------------------------------------------------------------- helpers


def _dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((DASHBOARD_DIR / name).read_text(encoding="utf-8")) for name in EXPECTED_UIDS}


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, including panels nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard.get("templating", {}).get("list", [])}


def _targets() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(dashboard file, panel, target)`` for every target of every panel."""
    for name, dashboard in _dashboards().items():
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                yield name, panel, target


def _variable_selectors() -> Iterator[tuple[str, str, str]]:
    """``(dashboard file, variable, selector)`` of every ``label_values(selector, label)`` variable query."""
    for name, dashboard in _dashboards().items():
        for variable in _variables(dashboard).values():
            if variable.get("type") != "query":
                continue
            query = variable["query"]
            query = query.get("query", "") if isinstance(query, dict) else query
            match = re.fullmatch(r"\s*label_values\((.+),\s*\w+\s*\)\s*", query)
            assert match, f"{name}: variable {variable['name']} query {query!r} is not label_values(selector, label)"
            yield name, variable["name"], match.group(1)


def substitute(expr: str) -> str:
    """Replace Grafana variables with values that keep the expression valid PromQL."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return GRAFANA_BUILTINS.get(name, "value")

    return VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (strings, matchers, ranges, grouping and functions removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def documented_metrics() -> set[str]:
    """Metric names of docs/METRICS.md's tables, with the series a histogram exposes."""
    names = set()
    for line in METRICS_DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`(fraud_[a-z0-9_]+)`\s*\|\s*([^|]*)\|", line)
        if not match:
            continue
        name, kind = match.group(1), match.group(2).strip()
        names.add(name)
        if kind == "histogram":
            names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
    return names


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULE_FILE.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def recording_rules() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


# ---------------------------------------------------------------------------------------------- tests


def test_committed_json_matches_build_output(tmp_path: Path) -> None:
    if importlib.util.find_spec("grafana_foundation_sdk") is None:
        message = 'grafana-foundation-sdk is not installed (pip install "grafana-foundation-sdk==1769699379!11.6.0")'
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [sys.executable, str(BUILD), "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == sorted(EXPECTED_UIDS), f"build.py wrote {generated}, temporary files left behind?"
    committed = sorted(p.name for p in DASHBOARD_DIR.glob("*.json"))
    assert committed == sorted(EXPECTED_UIDS)
    for name in EXPECTED_UIDS:
        assert (DASHBOARD_DIR / name).read_text(encoding="utf-8") == (tmp_path / name).read_text(encoding="utf-8"), (
            f"{name} is stale: run `python monitoring/dashboards/build.py` and commit the result"
        )


def test_uids_and_titles_are_stable_and_unique() -> None:
    dashboards = _dashboards()
    assert {name: d.get("uid") for name, d in dashboards.items()} == EXPECTED_UIDS
    uids = [d["uid"] for d in dashboards.values()]
    titles = [d.get("title") for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    assert all(titles)
    assert len(set(titles)) == len(titles)
    for name, dashboard in dashboards.items():
        assert dashboard.get("id") is None, f"{name}: a provisioned dashboard must not carry a database id"


def test_panel_ids_are_unique() -> None:
    for name, dashboard in _dashboards().items():
        ids = []
        for panel in dashboard["panels"]:
            ids.append(panel.get("id"))
            ids.extend(child.get("id") for child in panel.get("panels", []))
        assert None not in ids, f"{name}: panel without id"
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids {ids}"


def test_datasource_and_model_variables() -> None:
    for name, dashboard in _dashboards().items():
        variables = _variables(dashboard)
        datasource = variables.get("datasource")
        assert datasource is not None, f"{name}: no datasource variable"
        assert datasource["type"] == "datasource", name
        assert datasource["query"] == "prometheus", name
        for required in ("model_name", "model_version"):
            assert variables.get(required, {}).get("type") == "query", f"{name}: no query variable {required}"
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable.get("datasource") == DATASOURCE_REF, f"{name}: variable {variable['name']}"


def test_every_panel_has_prometheus_targets_on_the_datasource_variable() -> None:
    for name, dashboard in _dashboards().items():
        panels = list(_panels(dashboard))
        assert panels, f"{name}: no panels"
        for panel in panels:
            where = f"{name}: panel {panel.get('title')!r}"
            assert panel.get("title"), where
            assert panel.get("datasource") == DATASOURCE_REF, where
            targets = panel.get("targets", [])
            assert targets, f"{where} has no target"
            ref_ids = [target.get("refId") for target in targets]
            assert len(set(ref_ids)) == len(ref_ids), f"{where}: duplicate refIds {ref_ids}"
            for target in targets:
                assert target.get("datasource") == DATASOURCE_REF, where
                assert target.get("expr", "").strip(), f"{where}: target {target.get('refId')} has no expr"


def test_variables_used_are_defined() -> None:
    for name, dashboard in _dashboards().items():
        defined = set(_variables(dashboard)) | set(GRAFANA_BUILTINS)
        texts = [panel.get("title", "") for panel in _panels(dashboard)]
        texts += [target["expr"] for panel in _panels(dashboard) for target in panel.get("targets", [])]
        texts += [str(variable.get("query", "")) for variable in _variables(dashboard).values()]
        for text in texts:
            for match in VARIABLE.finditer(text):
                used = next(group for group in match.groups() if group)
                assert used in defined, f"{name}: ${used} in {text!r} is not a dashboard variable"
        repeats = {panel["repeat"] for panel in _panels(dashboard) if panel.get("repeat")}
        assert repeats <= set(_variables(dashboard)), f"{name}: repeat over undefined variables {repeats}"


def test_every_expression_passes_promtool(tmp_path: Path) -> None:
    binary = promtool()
    rules, origin = [], {}
    for index, (name, panel, target) in enumerate(_targets()):
        record = f"dashboard:expr_{index}"
        rules.append({"record": record, "expr": substitute(target["expr"])})
        origin[record] = f"{name}: panel {panel.get('title')!r} target {target.get('refId')}"
    for index, (name, variable, selector) in enumerate(_variable_selectors()):
        record = f"dashboard:variable_{index}"
        rules.append({"record": record, "expr": substitute(selector)})
        origin[record] = f"{name}: variable {variable}"
    assert rules
    rule_file = tmp_path / "dashboard-exprs.rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run(
        [binary, "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr + "\n" + json.dumps(origin, indent=1)
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The check above can fail: promtool rejects an invalid expression written the same way."""
    binary = promtool()
    rule_file = tmp_path / "broken.rules.yaml"
    broken = substitute('sum by (model_version) (rate(fraud_serving_requests_total{model_name=~"$model_name"}))')
    rule_file.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "dashboard:broken", "expr": broken}]}]}),
        encoding="utf-8",
    )
    result = subprocess.run([binary, "check", "rules", str(rule_file)], capture_output=True, text=True, check=False)
    assert result.returncode != 0


def test_substitute_keeps_promql_valid_values() -> None:
    assert substitute('rate(x{a=~"$model_version"}[$__rate_interval])') == 'rate(x{a=~"value"}[5m])'
    assert substitute('x{a="${datasource}", b="[[feature]]", c="${model_name:regex}"}') == (
        'x{a="value", b="value", c="value"}'
    )
    assert substitute("increase(x[$__range])") == "increase(x[6h])"


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (model_version, le) (rate(fraud_a_bucket{model_name=~"value", le="+Inf"}[5m])) '
        "/ on (model_version) group_left () fraud:b:rate5m > bool 1e-09 "
        "or time() - max by (model_name) (fraud_c offset 5m) unless absent(fraud_d) and vector(0)"
    )
    assert metric_names(expr) == {"fraud_a_bucket", "fraud:b:rate5m", "fraud_c", "fraud_d"}
    assert metric_names('histogram_quantile(0.99, sum(rate(x_bucket{a="sum(y)"}[1m])) by (le))') == {"x_bucket"}


def test_documented_metrics_are_parsed() -> None:
    documented = documented_metrics()
    assert "fraud_serving_requests_total" in documented
    assert "fraud_serving_request_duration_seconds_bucket" in documented
    assert "fraud_drift_dataset_drifted" in documented
    assert "fraud_quality_average_precision_ratio" in documented
    assert "fraud_drift_dataset_drifted_bucket" not in documented


def test_dashboards_and_alerts_use_documented_metrics_only() -> None:
    allowed = documented_metrics() | recording_rules()
    sources: list[tuple[str, str]] = [
        (f"{name}: panel {panel.get('title')!r}", substitute(target["expr"])) for name, panel, target in _targets()
    ]
    sources += [
        (f"{name}: variable {variable}", substitute(selector)) for name, variable, selector in _variable_selectors()
    ]
    sources += [(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]) for rule in _rules()]
    for where, expr in sources:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        unknown = names - allowed
        assert not unknown, f"{where}: metrics not in docs/METRICS.md nor recording rules: {sorted(unknown)}"


def test_recording_rules_used_by_dashboards_exist() -> None:
    used = {n for _, _, target in _targets() for n in metric_names(substitute(target["expr"])) if ":" in n}
    assert used <= recording_rules()
