"""The `fraud rollout` commands."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from cli.app import app
from fraud_detection.rollout import analysis, canary, kube, records
from tests.unit.rollout.support import (
    CANARY,
    MODEL,
    STABLE,
    FakeCluster,
    alias,
    canned,
    client_for,
    decide,
    make_registry,
    metrics,
    runner,
)

# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_analyse_without_a_cluster_prints_and_writes_the_decision(fake_prometheus, tmp_path):
    url, seen = fake_prometheus(canned({STABLE: metrics(STABLE), CANARY: metrics(CANARY, errors=80)}))
    out = tmp_path / "decision.json"
    result = runner.invoke(
        app,
        [
            "rollout",
            "analyse",
            "--no-cluster",
            "--prometheus-url",
            url,
            "--store",
            str(tmp_path / "store"),
            "--stable-version",
            STABLE,
            "--canary-version",
            CANARY,
            "--window",
            "20m",
            "--metrics-namespace",
            "",
            "--min-requests",
            "10",
            "--output-json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rollback" in result.output and "error_rate" in result.output
    data = json.loads(out.read_text())
    assert data["decision"] == "rollback" and data["thresholds"]["min_requests"] == 10
    assert seen and not any("namespace=" in q for q in seen)
    assert not (tmp_path / "store").exists(), "analysing without --apply records nothing"


def test_cli_matches_the_metrics_namespace_by_default(fake_prometheus, tmp_path):
    url, seen = fake_prometheus(canned({}))
    result = runner.invoke(
        app,
        [
            *("rollout", "analyse", "--no-cluster", "--prometheus-url", url, "--store", str(tmp_path)),
            *("--stable-version", STABLE, "--canary-version", CANARY, "-n", "payments"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "inconclusive" in result.output
    assert all('namespace="payments"' in q for q in seen)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analyse", "--window", "5x", "--no-cluster", "--stable-version", "a", "--canary-version", "b"], "window"),
        (["analyse", "--no-cluster", "--stable-version", "a", "--canary-version", "b"], "no Prometheus URL"),
        (
            ["analyse", "--no-cluster", "--apply", "--prometheus-url", "http://127.0.0.1:9", "--stable-version", "a"],
            "--apply",
        ),
        (["analyse", "--no-cluster", "--prometheus-url", "http://127.0.0.1:9"], "cannot tell the versions apart"),
        (
            [
                *("analyse", "--no-cluster", "--prometheus-url", "http://127.0.0.1:9"),
                *("--stable-version", "a", "--canary-version", "b"),
            ],
            "cannot reach Prometheus",
        ),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(args, message, tmp_path, monkeypatch):
    monkeypatch.delenv("FRAUD_PROMETHEUS_URL", raising=False)
    result = runner.invoke(app, ["rollout", *args, "--store", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_cli_percent_out_of_range_is_rejected():
    result = runner.invoke(app, ["rollout", "start", "--model-version", CANARY, "--percent", "100"])
    assert result.exit_code == 2
    assert "percent" in result.output


def test_cli_status_without_a_cluster_shows_aliases_and_the_latest_decision(tmp_path):
    registry = make_registry(tmp_path, STABLE, CANARY)
    registry.set_alias("production", STABLE)
    registry.set_alias("canary", CANARY)
    decision = decide(metrics(STABLE), metrics(CANARY, errors=90))
    canary.apply_decision(decision, isvc=None, registry=registry, store=registry.store)
    result = runner.invoke(app, ["rollout", "status", "--no-cluster", "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["aliases"] == {"production": STABLE, "canary": None}
    assert data["latest_decision"]["decision"] == "rollback"
    assert data["latest_decision"]["reasons"][0].startswith("error rate")


def test_importing_rollout_stays_light():
    code = (
        "import sys, fraud_detection.rollout, cli.rollout; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'requests', 'rich', 'sklearn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_manual_decisions_are_promote_or_rollback():
    with pytest.raises(ValueError, match="promote or rollback"):
        canary.manual_decision(
            analysis.Decision.INCONCLUSIVE, model_name=MODEL, stable_version="a", canary_version="b", reason=""
        )
    decision = canary.manual_decision(
        analysis.Decision.PROMOTE, model_name=MODEL, stable_version="a", canary_version="b", reason="hotfix"
    )
    assert decision.source == "manual" and decision.checks == () and decision.reasons == ("manual promote: hotfix",)
    assert replace(decision, window="1m").to_dict()["window"] == "1m"


@pytest.mark.parametrize(
    ("by_version", "expected_exit", "analyses"),
    [
        ({STABLE: metrics(STABLE), CANARY: metrics(CANARY)}, 0, 1),  # promoted at the first analysis
        ({}, 3, 2),  # never any traffic: inconclusive twice, the canary keeps running
    ],
)
def test_cli_run_starts_analyses_and_acts(
    by_version, expected_exit, analyses, chart_isvc, tmp_path, fake_prometheus, monkeypatch
):
    import threading
    import time

    url, _ = fake_prometheus(canned(by_version))
    cluster = FakeCluster(chart_isvc)
    registry = make_registry(tmp_path, STABLE, CANARY)
    registry.set_alias("production", STABLE)
    monkeypatch.setattr(kube.InferenceServiceClient, "connect", classmethod(lambda cls, ns, name: client_for(cluster)))
    slept: list[float] = []
    real_sleep, main = time.sleep, threading.main_thread()

    def sleep(seconds: float) -> None:
        # Only the rollout's own waits (the CLI runs in the main thread); background threads of other libraries
        # still in the process (py4j's, the payload log's) keep sleeping for real.
        if threading.current_thread() is main:
            slept.append(seconds)
        else:
            real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    result = runner.invoke(
        app,
        [
            *("rollout", "run", "--model-version", CANARY, "--window", "90s", "--max-analyses", "2"),
            *("--prometheus-url", url, "--store", str(tmp_path), "--metrics-namespace", ""),
        ],
    )
    assert result.exit_code == expected_exit, result.output
    assert slept == [90.0] * analyses
    stored = records.latest_records(registry.store, MODEL, limit=10)
    expected = ["promote"] if expected_exit == 0 else ["inconclusive"] * 2
    assert [r["decision"] for r in stored] == expected
    if expected_exit == 0:
        assert "canaryTrafficPercent" not in cluster.obj["spec"]["predictor"]
        assert alias(registry, "production") == CANARY
    else:
        assert cluster.obj["spec"]["predictor"]["canaryTrafficPercent"] == 10
        assert "still inconclusive" in result.output
