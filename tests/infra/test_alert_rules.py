"""Prometheus alert and recording rules: promtool check/test, test coverage of every alert, rule conventions."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.prometheus import promtool

ROOT = Path(__file__).resolve().parents[2]
ALERTS_DIR = ROOT / "monitoring" / "alerts"
RULE_FILE = ALERTS_DIR / "fraud-detection.rules.yaml"
TEST_FILES = sorted((ALERTS_DIR / "tests").glob("*.yaml"))
PROMETHEUS_RULE_CRD = ROOT / "tests" / "schemas" / "prometheus-operator_monitoring.coreos.com_prometheusrules.yaml"
RUNBOOK = "docs/RUNBOOK.md"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load(RULE_FILE)["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _alert_cases() -> list[tuple[str, str, dict[str, Any]]]:
    """Every ``alert_rule_test`` entry of every test file as ``(file name, test name, entry)``."""
    cases = []
    for path in TEST_FILES:
        for test in _load(path).get("tests", []):
            for entry in test.get("alert_rule_test", []) or []:
                cases.append((path.name, test.get("name", "?"), entry))
    return cases


def coverage(cases: list[tuple[str, str, dict[str, Any]]]) -> tuple[set[str], set[str]]:
    """Alert names with a firing case and alert names with a non-firing case."""
    firing = {entry["alertname"] for _, _, entry in cases if entry.get("exp_alerts")}
    quiet = {entry["alertname"] for _, _, entry in cases if not entry.get("exp_alerts")}
    return firing, quiet


def test_rule_and_test_files_exist() -> None:
    assert RULE_FILE.is_file()
    assert TEST_FILES, "no promtool test files under monitoring/alerts/tests/"
    assert _alerts(), "the rule file defines no alert"


def test_rule_file_is_a_plain_rule_file() -> None:
    """The chart embeds `groups` into a PrometheusRule: nothing else may sit at the top level."""
    document = _load(RULE_FILE)
    assert list(document) == ["groups"]
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names)), f"duplicate group names: {names}"


def test_rule_groups_fit_the_prometheusrule_crd() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    crd = yaml.load(PROMETHEUS_RULE_CRD.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    spec_schema = _python_regexes(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
    jsonschema.validate({"groups": _load(RULE_FILE)["groups"]}, spec_schema)


def _python_regexes(schema: Any) -> Any:
    """Move Go's mid-pattern ``^(?i)`` flag to the front, where Python's ``re`` accepts it."""
    if isinstance(schema, dict):
        return {
            key: value.replace("^(?i)", "(?i)^") if key == "pattern" else _python_regexes(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_python_regexes(item) for item in schema]
    return schema


def test_promtool_check_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULE_FILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", *(str(p) for p in TEST_FILES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_test_files_load_the_rule_file() -> None:
    for path in TEST_FILES:
        rule_files = [(path.parent / name).resolve() for name in _load(path).get("rule_files", [])]
        assert rule_files == [RULE_FILE.resolve()], f"{path.name}: rule_files is {rule_files}"


def test_every_alert_has_a_firing_and_a_non_firing_case() -> None:
    alerts = set(_alerts())
    firing, quiet = coverage(_alert_cases())
    assert not alerts - firing, f"alerts without a test case where they fire: {sorted(alerts - firing)}"
    assert not alerts - quiet, f"alerts without a test case where they do not fire: {sorted(alerts - quiet)}"
    unknown = (firing | quiet) - alerts
    assert not unknown, f"test cases for alerts the rule file does not define: {sorted(unknown)}"


def test_coverage_counts_cases_correctly() -> None:
    """The coverage check itself: an entry without exp_alerts is a non-firing case."""
    cases = [
        ("f", "t", {"alertname": "A", "eval_time": "1m", "exp_alerts": [{"exp_labels": {}}]}),
        ("f", "t", {"alertname": "A", "eval_time": "2m", "exp_alerts": []}),
        ("f", "t", {"alertname": "B", "eval_time": "1m"}),
    ]
    assert coverage(cases) == ({"A"}, {"A", "B"})


def test_firing_cases_assert_labels_and_annotations() -> None:
    alerts = _alerts()
    for file_name, test_name, entry in _alert_cases():
        rule = alerts[entry["alertname"]]
        for expected in entry.get("exp_alerts") or []:
            where = f"{file_name} / {test_name} / {entry['alertname']} at {entry['eval_time']}"
            labels = expected.get("exp_labels", {})
            for key, value in rule["labels"].items():
                assert labels.get(key) == value, f"{where}: exp_labels must include {key}={value}"
            annotations = expected.get("exp_annotations", {})
            assert set(annotations) == set(rule["annotations"]), f"{where}: expected annotations incomplete"


def test_alerts_have_severity_team_and_annotations() -> None:
    for name, rule in _alerts().items():
        assert re.fullmatch(r"Fraud[A-Za-z0-9]+", name), name
        labels = rule.get("labels", {})
        assert labels.get("severity") in {"critical", "warning"}, f"{name}: severity {labels.get('severity')}"
        assert labels.get("team"), f"{name}: no team label"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name}: annotation {key} missing"
        assert annotations["runbook_url"] == f"{RUNBOOK}#{name.lower()}", f"{name}: runbook_url"
        assert "for" in rule, f"{name}: no `for:`, a single bad evaluation would page"


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in _rules() if "alert" in rule]
    assert len(names) == len(set(names))


def test_recording_rules_follow_the_naming_convention() -> None:
    records = [rule["record"] for rule in _rules() if "record" in rule]
    assert records, "no recording rules"
    for name in records:
        assert re.fullmatch(r"fraud:[a-z0-9_]+:[a-z0-9_]+", name), f"{name}: expected fraud:<metric>:<operation>"
    assert len(records) == len(set(records))
