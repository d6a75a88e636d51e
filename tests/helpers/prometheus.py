"""Debian's Prometheus and Pushgateway on loopback, for integration tests (see shared TOOLCHAIN.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.net import free_port, http_ok, stop_process, wait_until

PROMETHEUS = Path("/usr/bin/prometheus")
PUSHGATEWAY = Path("/usr/bin/prometheus-pushgateway")
SCRAPE_INTERVAL_SECONDS = 1  # whole seconds: Prometheus durations take integers


@dataclass(frozen=True)
class Prometheus:
    """A running Prometheus with a query helper."""

    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector."""
        qs = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts."""
        with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=10) as resp:
            return list(json.loads(resp.read())["data"]["alerts"])


def promtool() -> str:
    """Path of promtool; a failure under CI (env CI set), a skip elsewhere."""
    path = shutil.which("promtool")
    if path is None:
        message = (
            "promtool not found on PATH: it comes with Debian's `prometheus` package "
            "(`make install` / tools/bootstrap.py installs it)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextmanager
def pushgateway(workdir: Path) -> Iterator[str]:
    """Run the Pushgateway on a free 127.0.0.1 port; yields its URL."""
    if not PUSHGATEWAY.exists():
        raise RuntimeError(f"{PUSHGATEWAY} missing: run `make install` (Debian prometheus-pushgateway)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(workdir / "pushgateway.log", "wb") as log:
        proc = subprocess.Popen(
            # Debian's build persists to /var/lib/prometheus/pushgateway.data by default: keep this run's state in
            # memory only, so runs never see each other's metrics.
            [str(PUSHGATEWAY), f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: proc.poll() is None and http_ok(f"{url}/-/ready"), timeout=30, what="Pushgateway")
        yield url
    finally:
        stop_process(proc)


@contextmanager
def prometheus(
    workdir: Path, scrape_configs: list[dict[str, Any]], rule_files: list[Path] = ()
) -> Iterator[Prometheus]:  # type: ignore[assignment]
    """Run Prometheus on a free 127.0.0.1 port, scraping and evaluating every second."""
    if not PROMETHEUS.exists():
        raise RuntimeError(f"{PROMETHEUS} missing: run `make install` (Debian prometheus)")
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {
                    "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                    "scrape_timeout": f"{SCRAPE_INTERVAL_SECONDS}s",
                    "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                },
                "rule_files": [str(p) for p in rule_files],
                "scrape_configs": scrape_configs,
            }
        )
    )
    url = f"http://127.0.0.1:{port}"
    with open(workdir / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: proc.poll() is None and http_ok(f"{url}/-/ready"), timeout=60, what="Prometheus")
        yield Prometheus(url)
    finally:
        stop_process(proc)
