"""Fixtures of the rollout tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from tests import k8s
from tests.unit.rollout.support import STABLE, _PromHandler


@pytest.fixture(scope="module")
def chart_isvc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The InferenceService exactly as the Helm chart renders it, serving STABLE, with a KServe-like status."""
    chart = k8s.materialize_chart(tmp_path_factory.mktemp("chart") / "fraud-detection")
    objects = k8s.helm_template(chart, set_values=[f"model.version={STABLE}"])
    isvc = k8s.one(objects, "InferenceService")
    assert not k8s.validate_object(isvc)
    isvc["metadata"]["generation"] = 1
    isvc["status"] = {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {
            "predictor": {
                "latestCreatedRevision": "fraud-detector-predictor-00001",
                "latestReadyRevision": "fraud-detector-predictor-00001",
                "latestRolledoutRevision": "fraud-detector-predictor-00001",
                "traffic": [{"revisionName": "fraud-detector-predictor-00001", "percent": 100, "latestRevision": True}],
            }
        },
    }
    return isvc


@pytest.fixture
def fake_prometheus() -> Iterator[Callable[[Callable[[str], Any]], tuple[str, list[str]]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[str], Any]) -> tuple[str, list[str]]:
        seen: list[str] = []
        handler = type("Handler", (_PromHandler,), {"answer": staticmethod(answer), "seen": seen})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
