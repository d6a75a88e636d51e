"""End to end monitoring on loopback: model server -> payload log -> drift job -> Pushgateway -> Prometheus -> alert.

Real processes throughout: `python -m serving` (KServe), Debian's Prometheus and Pushgateway, and
`python -m monitoring.drift_job` (the CronJob's entry point). Traffic comes from the simulator with injected drift.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from fraud_detection.data.schema import FEATURES
from fraud_detection.data.simulate import DriftConfig, SimulationConfig, simulate
from fraud_detection.features.offline import build_features
from fraud_detection.model.candidate import train_bundle
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.model.train import TrainConfig
from fraud_detection.monitoring.payload_reader import read_payload_log
from fraud_detection.store.local import LocalStore
from tests.helpers.net import wait_until
from tests.helpers.prometheus import Prometheus, prometheus, pushgateway
from tests.helpers.serving import http, serving_process

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "alerts" / "fraud-detection.rules.yaml"
CFG = {"n_customers": 500, "n_terminals": 1000, "n_days": 90, "seed": 1}


@dataclass(frozen=True)
class Stack:
    prometheus: Prometheus
    store: Path
    version: str
    job: subprocess.CompletedProcess[str]
    sent_rows: int


def _infer_body(rows: pd.DataFrame) -> dict[str, object]:
    return {
        "inputs": [
            {"name": f, "datatype": "FP64", "shape": [len(rows)], "data": rows[f].astype(float).tolist()}
            for f in FEATURES
        ]
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("monitoring")
    store_dir = work / "store"
    base = build_features(simulate(SimulationConfig(**CFG)))
    bundle = work / "bundle"
    meta, _ = train_bundle(
        base, bundle, config=TrainConfig(model_type="hgb", max_iter=40), model_name="fraud-detector", test_days=14
    )
    registry = ModelRegistry(LocalStore(store_dir), "fraud-detector")
    registry.set_alias("production", registry.publish(bundle))
    drifted = build_features(
        simulate(SimulationConfig(**CFG, drift=DriftConfig(start_day=60, amount_factor=1.6, hour_shift_hours=5)))
    )
    traffic = drifted[drifted.event_time >= pd.Timestamp("2018-06-10", tz="UTC")].sample(2000, random_state=0)
    server_args = [
        "--store_uri", str(store_dir), "--model_ref", "production", "--cache_dir", str(work / "cache"),
        "--payload_log", "on", "--payload_log_flush_rows", "500", "--payload_log_flush_seconds", "1",
    ]  # fmt: skip
    with pushgateway(work) as gateway, serving_process(server_args, work) as server:
        scrape = [
            {"job_name": "serving", "static_configs": [{"targets": [f"127.0.0.1:{server.http_port}"]}]},
            {"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [gateway[7:]]}]},
        ]
        with prometheus(work, scrape, [RULES]) as prom:
            for start in range(0, len(traffic), 100):
                status, body, _ = http(
                    "POST",
                    f"{server.url}/v2/models/fraud-detector/infer",
                    _infer_body(traffic.iloc[start : start + 100]),
                )
                assert status == 200, body
            store = LocalStore(store_dir)
            end = pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=1)
            wait_until(
                lambda: (
                    len(read_payload_log(store, "fraud-detector", end - pd.Timedelta(hours=1), end)) >= len(traffic)
                ),
                timeout=60,
                what="payload log flushed",
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
            env.update(
                {
                    "FRAUD_STORE_URI": str(store_dir),
                    "FRAUD_PUSHGATEWAY_URL": gateway,
                    "FRAUD_DRIFT_WINDOW_HOURS": "1",
                    "FRAUD_CACHE_DIR": str(work / "cache-drift"),
                }
            )
            job = subprocess.run(
                [sys.executable, "-m", "monitoring.drift_job"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            yield Stack(prom, store_dir, meta["version"], job, len(traffic))


def test_drift_job_succeeds_and_writes_its_report(stack: Stack):
    assert stack.job.returncode == 0, stack.job.stderr[-3000:]
    reports = list((stack.store / "reports" / "drift" / "fraud-detector").glob("*.html"))
    assert reports, "no Evidently HTML report in the store"
    summaries = list((stack.store / "reports" / "drift" / "fraud-detector").glob("*.json"))
    summary = json.loads(summaries[0].read_text())
    drifted = summary["versions"][0]["drift"]["drifted_features"]
    assert {"amount", "hour_of_day"} <= set(drifted)


def test_drift_gauges_reach_prometheus(stack: Stack):
    selector = f'{{model_name="fraud-detector",model_version="{stack.version}"}}'
    wait_until(lambda: stack.prometheus.query(f"fraud_drift_dataset_drifted{selector} == 1"), timeout=30, what="gauge")
    amount = stack.prometheus.query(f'fraud_drift_feature_drifted{{feature="amount",model_version="{stack.version}"}}')
    assert amount and amount[0]["value"][1] == "1"
    rows = stack.prometheus.query(f"fraud_drift_window_rows{selector}")
    assert float(rows[0]["value"][1]) == stack.sent_rows
    assert stack.prometheus.query('fraud_drift_last_success_timestamp_seconds{model_name="fraud-detector"}')


def test_server_metrics_reach_prometheus(stack: Stack):
    expr = f'sum(fraud_serving_predictions_total{{model_version="{stack.version}"}})'
    wait_until(
        lambda: (r := stack.prometheus.query(expr)) and float(r[0]["value"][1]) == stack.sent_rows,
        timeout=30,
        what="server metrics scraped",
    )
    assert stack.prometheus.query("fraud_serving_request_duration_seconds_bucket")


def test_drift_alert_becomes_active(stack: Stack):
    def active() -> bool:
        return any(a["labels"]["alertname"] == "FraudDatasetDriftSustained" for a in stack.prometheus.alerts())

    # The rule has `for: 90m`, so within a test it is pending, not yet firing: the expression holds.
    wait_until(active, timeout=30, what="FraudDatasetDriftSustained pending or firing")
    alerts = [a for a in stack.prometheus.alerts() if a["labels"]["alertname"] == "FraudDatasetDriftSustained"]
    assert [a["labels"]["model_version"] for a in alerts] == [stack.version]
    assert alerts[0]["state"] in ("pending", "firing")
