"""The laptop end-to-end run (``make run``) after the training pipeline: serve raw transactions, check drift.

The online feature store is backfilled from six weeks of simulated history, the production model is served with it,
the first transactions of a drifted week are sent *raw* (id, time, card, terminal, amount) and scored with features
computed on the server, which are checked against the offline features of the same transactions row by row; then the
drift job runs on what the server logged.

Everything stays on this machine: the model server listens on 127.0.0.1 on a free port and every request goes there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cli.loopback import free_port, stop_process, wait_ready
from fraud_detection.data import schema
from fraud_detection.data.simulate import DriftConfig, SimulationConfig, simulate
from fraud_detection.features.materialize import build_snapshot
from fraud_detection.features.offline import FeatureConfig, build_features
from fraud_detection.features.state.uri import open_online_store

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
        features_equal: Rows whose served features equal the offline features (to 1e-9).
        max_feature_difference: Largest absolute difference between served and offline features.
    """

    requests: int
    rows: int
    flagged: int
    true_fraud: int
    caught: int
    seed_response: dict[str, Any]
    explained: dict[str, Any]
    features_equal: int
    max_feature_difference: float


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return dict(json.loads(resp.read()))


DRIFT_START_DAY = 42


def drifted_history(seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seven simulated weeks whose last week drifts (inflated amounts, later hours, a new pattern), with features.

    Args:
        seed: Simulator seed (not the training data's).

    Returns:
        (raw transactions in event order, their offline features).
    """
    drift = DriftConfig(start_day=DRIFT_START_DAY, amount_factor=1.5, hour_shift_hours=4.0, new_fraud_rate=0.002)
    raw = simulate(SimulationConfig(n_days=49, seed=seed, drift=drift))
    raw = raw.sort_values(schema.EVENT_TIME, kind="stable").reset_index(drop=True)
    return raw, build_features(raw)


def split_at_drift(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the six weeks before the drift, the drifted week)."""
    cut = raw[schema.EVENT_TIME].min().floor("D") + pd.Timedelta(days=DRIFT_START_DAY)
    return raw[raw[schema.EVENT_TIME] < cut], raw[raw[schema.EVENT_TIME] >= cut]


def _raw_body(rows: pd.DataFrame) -> dict[str, Any]:
    def text(name: str, values: list[str]) -> dict[str, Any]:
        return {"name": name, "datatype": "BYTES", "shape": [len(values)], "data": values}

    return {
        "inputs": [
            text(schema.TRANSACTION_ID, rows[schema.TRANSACTION_ID].astype(str).tolist()),
            text(schema.EVENT_TIME, [ts.isoformat() for ts in rows[schema.EVENT_TIME]]),
            text(schema.CUSTOMER_ID, rows[schema.CUSTOMER_ID].astype(str).tolist()),
            text(schema.TERMINAL_ID, rows[schema.TERMINAL_ID].astype(str).tolist()),
            {"name": schema.AMOUNT, "datatype": "FP64", "shape": [len(rows)], "data": rows[schema.AMOUNT].tolist()},
        ],
        "parameters": {"return_features": True},
    }


def replay(url: str, live: pd.DataFrame, offline: pd.DataFrame, batch: int = 50) -> TrafficSummary:
    """Send raw transactions in event order through the v2 REST API; compare the served features with the offline ones.

    Args:
        url: Server base URL (loopback).
        live: Raw transactions (with labels), in event order.
        offline: Offline features of the same transactions (same index).
        batch: Rows per request (applied in order, each seeing the ones before it).

    Returns:
        A summary of the responses.
    """
    infer = f"{url}/v2/models/{MODEL}/infer"
    flagged = caught = requests = equal = 0
    worst = 0.0
    for start in range(0, len(live), batch):
        rows = live.iloc[start : start + batch]
        outputs = {o["name"]: o for o in _post(infer, _raw_body(rows))["outputs"]}
        served = np.asarray(outputs["features"]["data"], dtype=np.float64).reshape(len(rows), len(schema.FEATURES))
        expected = offline.loc[rows.index, list(schema.FEATURES)].to_numpy(dtype=np.float64)
        diff = np.abs(served - expected).max(axis=1)
        equal += int((diff <= 1e-9).sum())
        worst = max(worst, float(diff.max()))
        decisions = [bool(d) for d in outputs["is_fraud"]["data"]]
        labels = rows[schema.LABEL].astype(bool).tolist()
        flagged += sum(decisions)
        caught += sum(d and y for d, y in zip(decisions, labels, strict=True))
        requests += 1
    top = offline.loc[[live[schema.AMOUNT].idxmax()]]
    explained = _post(
        infer,
        {
            "inputs": [{"name": "features", "datatype": "FP64", "shape": [1, len(schema.FEATURES)],
                        "data": top[list(schema.FEATURES)].astype(float).to_numpy().ravel().tolist()}],
            "outputs": [{"name": "fraud_score"}, {"name": "is_fraud"}, {"name": "reason_codes"}],
        },
    )  # fmt: skip
    seed = _post(f"{url}/v1/models/{MODEL}:predict", SEED_BODY)
    return TrafficSummary(
        requests, len(live), flagged, int(live[schema.LABEL].sum()), caught, seed, explained, equal, worst
    )


def serve_and_monitor(store_uri: str, work_dir: Path, n_rows: int = 5_000) -> dict[str, Any]:
    """Backfill the online store, serve the production model with it, send raw transactions, run the drift job.

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
    raw, offline = drifted_history()
    history, week = split_at_drift(raw)
    live = week.head(n_rows)
    online_dir = work_dir / "online"
    shutil.rmtree(online_dir, ignore_errors=True)  # a fresh state for the same simulated history
    LOG.info("backfilling the online store %s from %d transactions of history", online_dir, len(history))
    store = open_online_store(str(online_dir), FeatureConfig().label_delay_days)
    store.load(build_snapshot(history, FeatureConfig().label_delay_days)[0])
    store.close()
    http_port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    log_path = work_dir / "serving.log"
    cmd = [
        sys.executable, "-m", "serving", "--model_name", MODEL, "--host", "127.0.0.1",
        "--http_port", str(http_port), "--grpc_port", str(grpc_port),
        "--store_uri", store_uri, "--model_ref", "production",
        "--payload_log", "on", "--payload_log_flush_seconds", "2",
        "--online_store", str(online_dir),
    ]  # fmt: skip
    LOG.info("starting the model server on %s (log %s)", url, log_path)
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(proc, f"{url}/v2/health/ready", name="the model server", log_path=log_path, timeout=120)
        LOG.info("sending %d raw transactions of the drifted week through the v2 REST API", len(live))
        summary = replay(url, live, offline)
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
