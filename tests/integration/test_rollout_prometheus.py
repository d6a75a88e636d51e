"""The canary analysis against a real Prometheus scraping real model servers.

Two tiny bundles of different versions are trained with the CLI. Four ``python -m serving`` processes serve them
on loopback: for model ``fraud-equal`` a stable and a canary that get the same kind of traffic, and for model
``fraud-worse`` a stable and a canary that receives a share of malformed requests (HTTP 400, counted in
``fraud_serving_errors_total``). Debian's Prometheus scrapes all four every second. The test drives bounded
traffic at them, waits until Prometheus holds the final counter values (polling its API with a deadline), and runs
:func:`fraud_detection.rollout.analyse` with real PromQL: the equal canary is promoted, the worse one rolled back,
and a window without traffic is inconclusive.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data.schema import FEATURES
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.rollout import analysis
from fraud_detection.rollout import canary as canary_step
from fraud_detection.rollout.prometheus import PrometheusClient
from fraud_detection.store.local import LocalStore
from tests.helpers.net import free_port, http_ok, stop_process, wait_until
from tests.helpers.prometheus import PROMETHEUS, SCRAPE_INTERVAL_SECONDS
from tests.helpers.prometheus import prometheus as start_prometheus

LOG = logging.getLogger(__name__)
pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TRAFFIC_SECONDS = 18.0
ROWS_PER_REQUEST = 8
BAD_SHARE = 0.3  # share of the worse canary's requests that are malformed
# Enough for a decision with ~20 requests/s per server over the traffic phase, far below what is sent.
THRESHOLDS = analysis.Thresholds(min_requests=100, min_scored_rows=300)


def _fraud_cli() -> list[str]:
    script = Path(sys.executable).parent / "fraud"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli"]


def _run(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


@dataclass
class Server:
    """One model server process."""

    model_name: str
    version: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    sent: int = 0
    bad: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def infer(self, body: bytes) -> int:
        request = urllib.request.Request(
            f"{self.url}/v2/models/{self.model_name}/infer",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status = int(response.status)
                response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.read()
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        return status


@dataclass
class Lab:
    """The running servers, Prometheus, and what the traffic phase did."""

    prometheus: PrometheusClient
    servers: dict[str, Server]
    stable_version: str
    canary_version: str
    traffic_start: float
    traffic_end: float
    analysed_at: float

    @property
    def window_seconds(self) -> int:
        return math.ceil(self.analysed_at - self.traffic_start) + 2

    @property
    def window(self) -> str:
        return f"{self.window_seconds}s"

    def seen(self, counted: float, sent: int) -> bool:
        """Whether ``increase()`` over the window counted what was sent, allowing Prometheus's extrapolation.

        The counter is flat before and after the traffic, so ``increase()`` is at least what was sent. It scales
        the sampled increase up to the window's edges, at most 1.1 scrape intervals on each side (Prometheus's
        ``extrapolatedRate``): never more than ``sent * window / (window - 2.2 * interval)``.
        """
        bound = self.window_seconds / (self.window_seconds - 2.2 * 1.05 * SCRAPE_INTERVAL_SECONDS)  # 5 % scrape jitter
        return sent * 0.999 <= counted <= sent * bound * 1.001


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real bundles of different versions.

    The canary has two more boosting iterations: a different model digest, nearly the same scores.
    """
    if not PROMETHEUS.exists():
        pytest.fail(f"{PROMETHEUS} is missing: run `python3 tools/bootstrap.py` (installs Debian's prometheus)")
    work = tmp_path_factory.mktemp("rollout-bundles")
    data = work / "tx.parquet"
    cli = _fraud_cli()
    _run([*cli, "simulate", "--customers", "300", "--terminals", "600", "--days", "60", "--output", str(data)], work)
    out = []
    for name, iterations in (("stable", "40"), ("canary", "42")):
        target = work / name
        _run(
            [
                *cli,
                "train",
                "--data",
                str(data),
                "--output",
                str(target),
                "--test-days",
                "10",
                "--max-iter",
                iterations,
            ],
            work,
        )
        out.append(target)
    return out[0], out[1]


def _version(bundle: Path) -> str:
    return str(json.loads((bundle / "metadata.json").read_text())["version"])


def _start_server(model_name: str, bundle: Path, logs: Path) -> Server:
    port, grpc_port = free_port(), free_port()
    log = logs / f"{model_name}-{bundle.name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    env.update({"FRAUD_SERVING_HOST": "127.0.0.1", "FRAUD_PAYLOAD_LOG_ENABLED": "false"})
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "serving", "--model_name", model_name, "--model_dir", str(bundle)),
                *("--http_port", str(port), "--grpc_port", str(grpc_port), "--host", "127.0.0.1"),
                *("--payload_log", "off"),
            ],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    return Server(model_name, _version(bundle), port, proc, log)


def _request_body(rows: pd.DataFrame, bad: bool) -> bytes:
    inputs = []
    for name in FEATURES:
        values = rows[name].astype(float).tolist()
        if bad and name == "amount":
            values[0] = -1.0  # the server must answer 400 (negative amount)
        inputs.append({"name": name, "datatype": "FP64", "shape": [len(values)], "data": values})
    return json.dumps({"inputs": inputs}).encode()


def _counter(prometheus: PrometheusClient, server: Server) -> float | None:
    return prometheus.scalar(
        f'sum(fraud_serving_requests_total{{model_name="{server.model_name}",model_version="{server.version}"}})'
    )


@pytest.fixture(scope="module")
def lab(bundles: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    stable_bundle, canary_bundle = bundles
    stable_version, canary_version = _version(stable_bundle), _version(canary_bundle)
    assert stable_version != canary_version
    work = tmp_path_factory.mktemp("rollout-lab")
    servers: dict[str, Server] = {}
    procs: list[subprocess.Popen[bytes]] = []
    stack = ExitStack()
    try:
        for key, (model, bundle) in {
            "equal-stable": ("fraud-equal", stable_bundle),
            "equal-canary": ("fraud-equal", canary_bundle),
            "worse-stable": ("fraud-worse", stable_bundle),
            "worse-canary": ("fraud-worse", canary_bundle),
        }.items():
            servers[key] = _start_server(model, bundle, work)
            procs.append(servers[key].proc)
        for server in servers.values():
            wait_until(
                lambda s=server: bool(s.proc.poll() is None and http_ok(f"{s.url}/v2/health/ready")),  # type: ignore[misc]
                timeout=90,
                interval=0.2,
                what=f"{server.model_name} {server.version} ready (log {server.log})",
            )
        targets = [f"127.0.0.1:{s.port}" for s in servers.values()]
        prom = stack.enter_context(
            start_prometheus(work, [{"job_name": "serving", "static_configs": [{"targets": targets}]}])
        )
        prometheus = PrometheusClient(prom.url)
        # Every server scraped at least once while its counters are still at zero, so increase() sees all traffic.
        wait_until(
            lambda: (prometheus.scalar("count(fraud_serving_model_info == 1)") or 0) == len(servers),
            timeout=30,
            interval=0.5,
            what="first scrape of every model server",
        )

        reference = pd.read_parquet(stable_bundle / "reference.parquet", columns=list(FEATURES))
        rng = np.random.default_rng(0)
        start = time.time()
        deadline = time.monotonic() + TRAFFIC_SECONDS
        while time.monotonic() < deadline:
            tick = time.monotonic()
            for key, server in servers.items():
                rows = reference.iloc[rng.integers(0, len(reference), ROWS_PER_REQUEST)]
                bad = key == "worse-canary" and rng.random() < BAD_SHARE
                status = server.infer(_request_body(rows, bad))
                server.bad += int(bad)
                assert status == (400 if bad else 200), f"{key}: HTTP {status} (log {server.log})"
            time.sleep(max(0.0, 0.05 - (time.monotonic() - tick)))
        end = time.time()
        # Wait (with a deadline) until Prometheus holds every server's final request count.
        wait_until(
            lambda: all(_counter(prometheus, s) == s.sent for s in servers.values()),
            timeout=20,
            interval=0.5,
            what="last scrape of the final counters",
        )
        yield Lab(prometheus, servers, stable_version, canary_version, start, end, time.time())
    finally:
        stack.close()
        for proc in procs:
            stop_process(proc)
        shutil.rmtree(work / "prom-data", ignore_errors=True)


def _analyse(lab: Lab, model_name: str, **kwargs: Any) -> analysis.RolloutDecision:
    decision = canary_step.analyse(
        lab.prometheus,
        model_name=model_name,
        stable_version=lab.stable_version,
        canary_version=lab.canary_version,
        window=kwargs.pop("window", lab.window),
        thresholds=kwargs.pop("thresholds", THRESHOLDS),
        at=kwargs.pop("at", lab.analysed_at),
        **kwargs,
    )
    for check in decision.checks:
        LOG.info("%s %s: %s", model_name, decision.decision.value, check.reason)
    return decision


def _explain(decision: analysis.RolloutDecision) -> str:
    return json.dumps(decision.to_dict(), indent=1, default=str)[:6000]


def test_equal_canary_is_promoted(lab: Lab, tmp_path: Path):
    decision = _analyse(lab, "fraud-equal")
    assert decision.decision is analysis.Decision.PROMOTE, _explain(decision)
    stable, canary = lab.servers["equal-stable"], lab.servers["equal-canary"]
    assert decision.stable is not None and decision.canary is not None
    # Prometheus saw the traffic the test sent, version by version (up to increase()'s bounded extrapolation).
    assert lab.seen(decision.stable.requests, stable.sent), (decision.stable.requests, stable.sent, lab.window)
    assert lab.seen(decision.canary.requests, canary.sent), (decision.canary.requests, canary.sent, lab.window)
    rows = canary.sent * ROWS_PER_REQUEST
    assert lab.seen(decision.canary.scored_rows, rows), (decision.canary.scored_rows, rows, lab.window)
    assert decision.canary.errors == 0 and decision.check("error_rate").value == 0
    ks = decision.check("score_ks").value
    assert ks is not None and ks < THRESHOLDS.max_score_ks
    assert decision.canary.p99_latency_seconds is not None and decision.canary.p99_latency_seconds > 0
    assert all(c.outcome is analysis.Outcome.PASS for c in decision.checks)

    # Carried out on the store side: production moves to the canary, the record keeps the real numbers.
    store = LocalStore(tmp_path / "store")
    for version in (lab.stable_version, lab.canary_version):
        store.write_bytes(f"models/fraud-equal/versions/{version}/MANIFEST.json", b"{}")
    registry = ModelRegistry(store, "fraud-equal")
    registry.set_alias("production", lab.stable_version)
    registry.set_alias("canary", lab.canary_version)
    record = canary_step.apply_decision(decision, isvc=None, registry=registry, store=store)
    assert (registry.get_alias("production") or {}).get("version") == lab.canary_version
    assert registry.get_alias("canary") is None
    stored = json.loads(store.read_bytes(record["record_key"]))
    assert stored["decision"] == "promote" and stored["completed"] is True
    assert stored["canary"]["requests"] == decision.canary.requests


def test_worse_canary_is_rolled_back(lab: Lab):
    decision = _analyse(lab, "fraud-worse")
    assert decision.decision is analysis.Decision.ROLLBACK, _explain(decision)
    canary = lab.servers["worse-canary"]
    assert canary.bad > 0 and canary.statuses[400] == canary.bad
    error_check = decision.check("error_rate")
    assert error_check.outcome is analysis.Outcome.FAIL
    assert error_check.value == pytest.approx(canary.bad / canary.sent, abs=0.03)
    assert error_check.stable == 0
    assert decision.reasons[0] == error_check.reason
    # The stable version of the same model is healthy: the failure is the canary's alone.
    assert decision.stable is not None and decision.stable.errors == 0


def test_a_window_without_traffic_is_inconclusive(lab: Lab):
    """Before the traffic phase both versions were up and scraped but idle: no decision, least of all promote."""
    decision = _analyse(lab, "fraud-equal", window="3s", at=lab.traffic_start - 0.5)
    assert decision.decision is analysis.Decision.INCONCLUSIVE, _explain(decision)
    assert decision.check("traffic").outcome is analysis.Outcome.INSUFFICIENT
    assert decision.check("traffic").value == 0
    # The same traffic is also inconclusive when the operator demands more than was sent.
    sent = lab.servers["equal-canary"].sent
    strict = analysis.Thresholds(min_requests=10 * sent, min_scored_rows=300)
    assert _analyse(lab, "fraud-worse", thresholds=strict).decision is analysis.Decision.INCONCLUSIVE


def test_the_cli_reaches_the_same_decision(lab: Lab, tmp_path: Path):
    from typer.testing import CliRunner

    from cli.app import app

    out = tmp_path / "decision.json"
    result = CliRunner().invoke(
        app,
        [
            *("rollout", "analyse", "--no-cluster", "--prometheus-url", lab.prometheus.url),
            *("--store", str(tmp_path / "store"), "--metrics-namespace", ""),
            *("--stable-version", lab.stable_version, "--canary-version", lab.canary_version),
            *("--window", f"{math.ceil(time.time() - lab.traffic_start) + 2}s"),
            *("--min-requests", "100", "--output-json", str(out)),
        ],
        env={"FRAUD_MODEL_NAME": "fraud-worse"},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["decision"] == "rollback"
