"""A Kubeflow Pipelines API (v2beta1) on loopback, enough for ``kfp.Client`` to upload a pipeline and start runs.

It keeps what it was sent: the uploaded packages (compiled YAML) and the bodies of the runs and recurring runs, so a
test sees exactly what a real KFP would have received. One pipeline, one experiment; nothing is executed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class KfpApi:
    """What the server received.

    Attributes:
        endpoint: ``http://127.0.0.1:<port>`` (``FRAUD_KFP_ENDPOINT``).
        packages: The uploaded pipeline packages (YAML text), in order.
        runs: The JSON bodies of the created runs.
        recurring_runs: The JSON bodies of the created recurring runs (each embeds its package: ``pipeline_spec``).
    """

    endpoint: str = ""
    packages: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    recurring_runs: list[dict[str, Any]] = field(default_factory=list)


def _uploaded_file(content_type: str, body: bytes) -> str:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            return bytes(part.get_payload(decode=True)).decode()
    raise ValueError("no uploadfile in the upload")


def _handler(api: KfpApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path.endswith("/versions"):  # the pipeline's versions: one per uploaded package
                versions = [
                    {"pipeline_id": "p1", "pipeline_version_id": f"v{i}", "display_name": f"v{i}"}
                    for i in range(len(api.packages), 0, -1)
                ]
                self._reply({"pipeline_versions": versions[:1], "total_size": len(versions)})
            else:  # healthz; no pipeline, experiment or recurring run exists yet
                self._reply({})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?")[0]
            if path.endswith("/pipelines/upload"):
                api.packages.append(_uploaded_file(self.headers["Content-Type"], body))
                self._reply({"pipeline_id": "p1", "display_name": "fraud-training"})
            elif path.endswith("/experiments"):
                self._reply({"experiment_id": "e1", "display_name": json.loads(body)["display_name"]})
            elif path.endswith("/recurringruns"):
                api.recurring_runs.append(json.loads(body))
                self._reply({"recurring_run_id": f"rr{len(api.recurring_runs)}", "display_name": "r"})
            elif path.endswith("/runs"):
                api.runs.append(json.loads(body))
                self._reply({"run_id": f"r{len(api.runs)}", "display_name": "r"})
            else:
                self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def kfp_api() -> Iterator[KfpApi]:
    """Serve the API on a free loopback port for the duration of the block.

    Yields:
        The server's record (its endpoint included).
    """
    api = KfpApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
