"""The real kubernetes client on the wire, against a loopback API server."""

from __future__ import annotations

import copy
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from fraud_detection.rollout import canary, kube, patches
from tests.unit.rollout.support import CANARY, MODEL, _KubeHandler


def test_the_kubernetes_client_sends_json_patches(chart_isvc):
    from kubernetes import client

    state: dict[str, Any] = {"obj": copy.deepcopy(chart_isvc), "requests": []}
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_KubeHandler,), {"state": state}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
        isvc = kube.InferenceServiceClient.from_configuration("fraud-detection", MODEL, configuration)
        canary.start_canary(isvc, CANARY, percent=20)
    finally:
        server.shutdown()
        server.server_close()
    path = f"/apis/serving.kserve.io/v1beta1/namespaces/fraud-detection/inferenceservices/{MODEL}"
    assert [(m, p) for m, p, _, _ in state["requests"]] == [("GET", path), ("PATCH", path)]
    _, _, content_type, body = state["requests"][1]
    assert content_type == "application/json-patch+json"
    assert body == patches.canary_patch(chart_isvc, CANARY, 20)
    assert state["obj"]["spec"]["predictor"]["canaryTrafficPercent"] == 20
