"""The laptop end-to-end run (``make run``) after the training pipeline: serve, replay traffic, check drift.

The production model is served, a week of drifted traffic is replayed through it, and the drift job runs on what
the server logged.

Everything stays on this machine: the model server listens on 127.0.0.1 on a free port and every request goes there.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cli.loopback import free_port, stop_process, wait_ready
from fraud_detection.data import schema
from fraud_detection.data.simulate import DriftConfig, SimulationConfig, simulate
from fraud_detection.features.offline import build_features

LOG = logging.getLogger(__name__)
MODEL = "fraud-detector"
SEED_BODY = {
    "features": {
        "amount": 100,
        "hour_of_day": 14,
        "avg_monthly_spend": 500,
        "customer_tenure_days": 365,
        "num_prev_tx_24h": 5,
    }
}


@dataclass(frozen=True)
class TrafficSummary:
    """What the replayed traffic did.

    Attributes:
        requests: v2 infer requests sent.
        rows: Transactions scored.
        flagged: Transactions the model flagged as fraud.
        true_fraud: Transactions that were fraud (simulator labels).
        caught: Flagged transactions that were fraud.
        seed_response: The v1 response to the original project's request body.
        explained: A v2 response with reason codes for the highest-scored row.
    """

    requests: int
    rows: int
    flagged: int
    true_fraud: int
    caught: int
    seed_response: dict[str, Any]
    explained: dict[str, Any]


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return dict(json.loads(resp.read()))


def drifted_traffic(n_rows: int = 5_000, seed: int = 11) -> pd.DataFrame:
    """Feature rows of a simulated seven weeks whose last week drifts (inflated amounts, later hours, a new pattern).

    Args:
        n_rows: Rows to sample from the drifted week.
        seed: Simulator seed (not the training data's).

    Returns:
        Feature rows with labels.
    """
    # Same population size as the default training data, another draw; 42 days of history warm the 30-day and
    # delayed terminal windows up before the drifted week.
    drift = DriftConfig(start_day=42, amount_factor=1.5, hour_shift_hours=4.0, new_fraud_rate=0.002)
    raw = simulate(SimulationConfig(n_days=49, seed=seed, drift=drift))
    frame = build_features(raw)
    week = frame[frame[schema.EVENT_TIME] >= frame[schema.EVENT_TIME].min().floor("D") + pd.Timedelta(days=42)]
    return week.sample(min(n_rows, len(week)), random_state=seed).sort_values(schema.EVENT_TIME)


def replay(url: str, traffic: pd.DataFrame, batch: int = 50) -> TrafficSummary:
    """Score the traffic through the v2 REST API in batches; send the seed body and one explained request.

    Args:
        url: Server base URL (loopback).
        traffic: Feature rows with labels and transaction ids.
        batch: Rows per request.

    Returns:
        A summary of the responses.
    """
    infer = f"{url}/v2/models/{MODEL}/infer"
    flagged = caught = requests = 0
    for start in range(0, len(traffic), batch):
        rows = traffic.iloc[start : start + batch]
        body = {
            "inputs": [
                {"name": f, "datatype": "FP64", "shape": [len(rows)], "data": rows[f].astype(float).tolist()}
                for f in schema.FEATURES
            ]
            + [
                {
                    "name": schema.TRANSACTION_ID,
                    "datatype": "BYTES",
                    "shape": [len(rows)],
                    "data": rows[schema.TRANSACTION_ID].astype(str).tolist(),
                }
            ]
        }
        outputs = {o["name"]: o["data"] for o in _post(infer, body)["outputs"]}
        decisions = [bool(d) for d in outputs["is_fraud"]]
        labels = rows[schema.LABEL].astype(bool).tolist()
        flagged += sum(decisions)
        caught += sum(d and y for d, y in zip(decisions, labels, strict=True))
        requests += 1
    top = traffic.iloc[[int(traffic[schema.AMOUNT].to_numpy().argmax())]]
    explained = _post(
        infer,
        {
            "inputs": [{"name": "features", "datatype": "FP64", "shape": [1, len(schema.FEATURES)],
                        "data": top[list(schema.FEATURES)].astype(float).to_numpy().ravel().tolist()}],
            "outputs": [{"name": "fraud_score"}, {"name": "is_fraud"}, {"name": "reason_codes"}],
        },
    )  # fmt: skip
    seed = _post(f"{url}/v1/models/{MODEL}:predict", SEED_BODY)
    return TrafficSummary(requests, len(traffic), flagged, int(traffic[schema.LABEL].sum()), caught, seed, explained)


def serve_and_monitor(store_uri: str, work_dir: Path, n_rows: int = 5_000) -> dict[str, Any]:
    """Serve the production model on loopback, replay drifted traffic, stop the server, run the drift job.

    Args:
        store_uri: The store holding the production alias (local directory or s3://).
        work_dir: Where the server log goes.
        n_rows: Transactions to replay.

    Returns:
        The traffic summary and the drift job's result as a dict.
    """
    from fraud_detection.settings import DriftSettings
    from monitoring.drift_job import run_from_settings

    work_dir.mkdir(parents=True, exist_ok=True)
    traffic = drifted_traffic(n_rows)
    http_port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    log_path = work_dir / "serving.log"
    cmd = [
        sys.executable, "-m", "serving", "--model_name", MODEL, "--host", "127.0.0.1",
        "--http_port", str(http_port), "--grpc_port", str(grpc_port),
        "--store_uri", store_uri, "--model_ref", "production",
        "--payload_log", "on", "--payload_log_flush_seconds", "2",
    ]  # fmt: skip
    LOG.info("starting the model server on %s (log %s)", url, log_path)
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(proc, f"{url}/v2/health/ready", name="the model server", log_path=log_path, timeout=120)
        LOG.info("replaying %d drifted transactions through the v2 REST API", len(traffic))
        summary = replay(url, traffic)
    finally:
        stop_process(proc, timeout=60)  # the server flushes its payload log on shutdown
    LOG.info(
        "scored %d transactions in %d requests: %d flagged, %d of %d frauds caught",
        summary.rows,
        summary.requests,
        summary.flagged,
        summary.caught,
        summary.true_fraud,
    )
    settings = DriftSettings().model_copy(update={"store_uri": store_uri, "drift_window_hours": 1.0})
    result = run_from_settings(settings)
    return {"traffic": summary, "drift": result}
