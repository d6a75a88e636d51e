"""A fake Application Insights ingestion endpoint on 127.0.0.1 (imported explicitly, not a pytest conftest).

The Azure Monitor exporter posts JSON envelopes to ``<IngestionEndpoint>/v2.1/track``; a connection string whose
``IngestionEndpoint`` is this server sends the real exporter's output here instead of to Azure.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: An instrumentation key no real resource has; tests check it never reaches a log.
FAKE_IKEY = "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0"


@dataclass
class Collector:
    """What the fake endpoint received."""

    port: int
    envelopes: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def connection_string(self) -> str:
        return f"InstrumentationKey={FAKE_IKEY};IngestionEndpoint=http://127.0.0.1:{self.port}/"

    def of_type(self, base_type: str) -> list[dict[str, Any]]:
        """Envelopes of one telemetry type (``RequestData``, ``RemoteDependencyData``, ...), as baseData."""
        with self.lock:
            return [e["data"]["baseData"] | {"_tags": e.get("tags", {})} for e in self.envelopes
                    if e.get("data", {}).get("baseType") == base_type]  # fmt: skip


@contextmanager
def fake_ingestion() -> Iterator[Collector]:
    """Serve the fake ingestion endpoint on a free loopback port.

    Yields:
        The collector.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    collector = Collector(port=int(server.server_address[1]))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            items = json.loads(body) if body.strip().startswith(b"[") else [
                json.loads(line) for line in body.splitlines() if line.strip()
            ]  # fmt: skip
            with collector.lock:
                collector.paths.append(self.path)
                collector.envelopes.extend(items)
            reply = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        server.shutdown()
        server.server_close()


def exporter_env(collector: Collector) -> dict[str, str]:
    """Environment of a process that exports to the fake endpoint, and nowhere else.

    Args:
        collector: The fake endpoint.

    Returns:
        Variables: the connection string, a short export delay, and no Azure resource detection (IMDS), SDK
        self-telemetry (statsbeat) or remote configuration, which would leave the machine.
    """
    return {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": collector.connection_string,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel",
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
    }
