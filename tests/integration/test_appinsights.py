"""Application Insights through OpenTelemetry: off without a connection string; with one, the real Azure Monitor
exporter of a real model server (and of the drift CronJob) delivers one request per scored call to an ingestion
endpoint on 127.0.0.1 (tests/helpers/appinsights.py), and the connection string never reaches a log."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.appinsights import FAKE_IKEY, Collector, exporter_env, fake_ingestion
from tests.helpers.net import wait_until
from tests.helpers.serving import MODEL, ServingProcess, golden, http, run_client, serving_process

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
INFER = f"/v2/models/{MODEL}/infer"


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FRAUD_", "APPLICATIONINSIGHTS_", "OTEL_")) and k != "KUBERNETES_SERVICE_HOST"
    }
    return env | extra


def _requests(collector: Collector, route: str) -> list[dict[str, Any]]:
    return [r for r in collector.of_type("RequestData") if route in r.get("name", "")]


def test_without_a_connection_string_nothing_is_configured() -> None:
    """Neither the distro is imported nor a tracer provider installed; the app is not touched."""
    probe = (
        "import sys\n"
        "from opentelemetry import trace\n"
        "from serving.telemetry import setup_app_insights\n"
        "from monitoring.tracing import run_traced\n"
        "assert setup_app_insights({}, app=object()) is None\n"
        "assert setup_app_insights({'APPLICATIONINSIGHTS_CONNECTION_STRING': '  '}, app=object()) is None\n"
        "assert run_traced(lambda: 7, {}) == 7\n"
        "assert type(trace.get_tracer_provider()).__name__ == 'ProxyTracerProvider', trace.get_tracer_provider()\n"
        "assert not any(m.startswith('azure.monitor') for m in sys.modules), 'distro imported'\n"
        "assert 'opentelemetry.instrumentation.fastapi' not in sys.modules\n"
        "print('off')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=_clean_env({}), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "off"


@pytest.fixture(scope="module")
def traced_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path
) -> Iterator[tuple[ServingProcess, Collector]]:
    with (
        fake_ingestion() as collector,
        serving_process(
            ["--model_dir", str(tiny_bundle)],
            tmp_path_factory.mktemp("appinsights"),
            # Every trace kept (the distro's default samples at 5 traces a second).
            env=exporter_env(collector) | {"FRAUD_APPINSIGHTS_SAMPLING_RATIO": "1.0"},
        ) as server,
    ):
        yield server, collector


def test_every_rest_infer_is_one_request_in_application_insights(
    traced_server: tuple[ServingProcess, Collector],
) -> None:
    server, collector = traced_server
    body = golden("v2_infer.request.json")
    body.pop("_route", None)
    for _ in range(3):
        status, _, _ = http("POST", server.url + INFER, body, {"Content-Type": "application/json"})
        assert status == 200
    bad = {"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    assert http("POST", server.url + INFER, bad, {"Content-Type": "application/json"})[0] == 400
    for probe in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready", "/metrics"):
        assert http("GET", server.url + probe)[0] == 200
    wait_until(lambda: len(_requests(collector, "/infer")) >= 4, timeout=30, interval=0.2, what="4 requests exported")
    requests = _requests(collector, "/infer")
    assert len(requests) == 4, requests
    codes = sorted(r["responseCode"] for r in requests)
    assert codes == ["200", "200", "200", "400"]
    assert [r["success"] for r in requests if r["responseCode"] == "400"] == [False]
    assert all(r["_tags"].get("ai.cloud.role", "").endswith("fraud-detection-serve") for r in requests)
    # Probes and the Prometheus scrape are not request telemetry.
    names = [r.get("name", "") for r in collector.of_type("RequestData")]
    assert not [n for n in names if "/health" in n or "/metrics" in n or n.endswith("/ready")], names
    assert all(path.startswith("/v2.1/track") for path in collector.paths)
    # Only traces: logs (Container Insights has them) and metrics (Prometheus) are not exported; the exporter's
    # _OTELRESOURCE_ envelope carries the resource attributes. One span per request: no ASGI send/receive spans.
    with collector.lock:
        kinds = {(e["data"]["baseType"], e["data"]["baseData"].get("name", "")) for e in collector.envelopes}
    assert {k for k, _ in kinds} <= {"RequestData", "MetricData"}, kinds
    assert all(not name for kind, name in kinds if kind == "MetricData")
    metrics = [m["name"] for d in collector.of_type("MetricData") for m in d["metrics"]]
    assert set(metrics) <= {"_OTELRESOURCE_"}, metrics


def test_grpc_infer_is_request_telemetry_too(traced_server: tuple[ServingProcess, Collector]) -> None:
    server, collector = traced_server
    result = run_client("triton-grpc", server.grpc)
    assert result["ready"] and result["model_ready"]
    wait_until(
        lambda: any("ModelInfer" in r.get("name", "") for r in collector.of_type("RequestData")),
        timeout=30,
        interval=0.2,
        what="a gRPC ModelInfer request exported",
    )
    names = [r.get("name", "") for r in collector.of_type("RequestData")]
    assert not [n for n in names if n.endswith(("/ServerLive", "/ServerReady", "/ModelReady"))], names


def test_the_connection_string_never_reaches_the_log(traced_server: tuple[ServingProcess, Collector]) -> None:
    server, collector = traced_server
    log = server.log.read_text(errors="replace")
    assert "Application Insights on" in log and f"127.0.0.1:{collector.port}" in log
    assert FAKE_IKEY not in log
    assert "InstrumentationKey" not in log


def test_drift_job_run_is_one_span_flushed_before_exit(tmp_path: Path) -> None:
    with fake_ingestion() as collector:
        # As on AKS: the connection string is a file (the Key Vault secret the CSI driver mounts), not a variable.
        secret_file = tmp_path / "connection-string"
        secret_file.write_text(collector.connection_string + "\n")
        env = exporter_env(collector) | {
            "FRAUD_STORE_URI": str(tmp_path / "empty-store"),
            "FRAUD_APPINSIGHTS_CONNECTION_STRING_FILE": str(secret_file),
        }
        env.pop("APPLICATIONINSIGHTS_CONNECTION_STRING")
        env = _clean_env(env)
        job = subprocess.run(
            [sys.executable, "-m", "monitoring.drift_job"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert job.returncode == 0, job.stderr[-3000:]  # an empty store: nothing to monitor, exit 0
        spans = [d for d in collector.of_type("RemoteDependencyData") if d.get("name") == "drift-job"]
    assert len(spans) == 1, collector.envelopes
    assert spans[0]["_tags"].get("ai.cloud.role", "").endswith("fraud-detection-drift")
    assert FAKE_IKEY not in job.stderr + job.stdout


def test_a_malformed_connection_string_stops_the_job_without_echoing_it(tmp_path: Path) -> None:
    secret = "not-a-connection-string-Zm9vYmFy"
    env = _clean_env({"APPLICATIONINSIGHTS_CONNECTION_STRING": secret, "FRAUD_STORE_URI": str(tmp_path)})
    job = subprocess.run(
        [sys.executable, "-m", "monitoring.drift_job"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert job.returncode == 2
    assert "InstrumentationKey" in job.stderr
    assert secret not in job.stderr + job.stdout
