"""Drift-job benchmark: wall time and peak memory for windows of 100k and 1M logged predictions.

Run: ``.venv/bin/python -m bench.drift_bench`` (part of ``make bench``). Each window size runs the real drift job
(payload-log read, Evidently drift per feature and on the score, report written to the store) in its own process.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import update_section

LOG = logging.getLogger("bench.drift")

JOB = r"""
import json, resource, sys, time
from datetime import UTC, datetime
from pathlib import Path
from fraud_detection.monitoring.drift_job import DriftJobConfig, run_drift_job
from fraud_detection.monitoring.payload_log import read_payload_log
from fraud_detection.store import LocalStore
store = LocalStore(sys.argv[1])
t0 = time.perf_counter()
result = run_drift_job(store, DriftJobConfig(window_hours=48), read_window=read_payload_log,
                       now=datetime.fromisoformat(sys.argv[2]), cache_dir=Path(sys.argv[1]) / "cache")
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": result.versions[0].drift.n_current,
                  "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "drifted": result.versions[0].drift.dataset_drifted}))
"""


def _prepare(root: Path, rows: int) -> str:
    """A store with a production bundle and ``rows`` logged predictions (drifted traffic) in the last day."""
    import io
    from datetime import UTC, datetime, timedelta

    import numpy as np
    import pandas as pd

    from fraud_detection.data.simulate import DriftConfig, SimulationConfig, simulate
    from fraud_detection.features.offline import build_features
    from fraud_detection.model.candidate import train_bundle
    from fraud_detection.model.registry import ModelRegistry
    from fraud_detection.model.train import TrainConfig, score
    from fraud_detection.monitoring.payload_columns import BASE_COLUMNS, DECISION_COLUMN, TRANSACTION_KEY
    from fraud_detection.store.local import LocalStore

    store = LocalStore(root)
    frame = build_features(simulate(SimulationConfig(n_customers=1_000, n_terminals=2_000, n_days=90)))
    bundle_dir = root / "bundle"
    meta, _ = train_bundle(frame, bundle_dir, config=TrainConfig(max_iter=50), model_name="fraud-detector")
    registry = ModelRegistry(store, "fraud-detector")
    registry.set_alias("production", registry.publish(bundle_dir))
    drifted = build_features(simulate(SimulationConfig(seed=5, drift=DriftConfig(start_day=120, amount_factor=1.4))))
    sample = drifted.sample(rows, replace=len(drifted) < rows, random_state=0).reset_index(drop=True)
    from fraud_detection.model.bundle import load_bundle

    model = load_bundle(bundle_dir).model
    now = datetime(2026, 1, 2, tzinfo=UTC)
    log = pd.DataFrame(
        {
            "request_id": np.arange(rows).astype(str),
            "row": np.zeros(rows, dtype="int32"),
            "scored_at": pd.Timestamp(now - timedelta(hours=12)) + pd.to_timedelta(np.arange(rows) % 36_000, unit="s"),
            "model_name": "fraud-detector",
            "model_version": meta["version"],
        }
    )
    for name in BASE_COLUMNS:
        if name in sample.columns:
            log[name] = sample[name].to_numpy()
    log["fraud_score"] = score(model, sample)
    log[DECISION_COLUMN] = log["fraud_score"] >= meta["threshold"]
    log["imputed"] = ""
    log[TRANSACTION_KEY] = log["request_id"]
    for i, part in enumerate(np.array_split(log, max(1, rows // 100_000))):
        buf = io.BytesIO()
        part.to_parquet(buf, index=False)
        store.write_bytes(f"payload-logs/fraud-detector/date=2026-01-01/{i:04d}.parquet", buf.getvalue())
    return now.isoformat()


def main() -> None:
    """Run the drift job on 100k and 1M logged predictions and record time and memory."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    rows_out = []
    for rows in (100_000, 1_000_000):
        with tempfile.TemporaryDirectory() as tmp:
            now = _prepare(Path(tmp), rows)
            out = subprocess.run([sys.executable, "-c", JOB, tmp, now], check=True, capture_output=True, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            LOG.info("%d rows: %s", rows, result)
            rows_out.append(
                f"| {rows:,} | {result['seconds']:.1f} | {result['rss_gib']:.2f} GiB | {result['drifted']} |"
            )
    body = "\n".join(
        [
            "Command: `.venv/bin/python -m bench.drift_bench` (part of `make bench`). The real drift job (payload-log",
            "read from a local store, Evidently per-feature and score drift against the bundle's 5,000-row reference,",
            "HTML report written to the store) in a fresh process per window; the drift tests sample the window down",
            "to 200,000 rows (`DriftJobConfig.max_rows`), so reading the log dominates at 1M.",
            "",
            "| logged predictions in the window | wall time (s) | peak RSS | dataset drift found |",
            "|---:|---:|---:|---|",
            *rows_out,
        ]
    )
    LOG.info("wrote %s", update_section("Drift job", body))


if __name__ == "__main__":
    main()
