"""Canary rollout on a real cluster (KServe in Knative (Serverless) mode, the chart installed). Skipped by default.

Run with ``pytest -m e2e tests/e2e/test_rollout_cluster.py`` and:

* a kubeconfig (or an in-cluster ServiceAccount) allowed to get and patch InferenceServices;
* ``FRAUD_SERVING_NAMESPACE`` / ``FRAUD_INFERENCE_SERVICE`` (default ``fraud-detection`` / ``fraud-detector``);
* ``FRAUD_E2E_CANARY_VERSION``: a complete version in the store other than the one being served;
* optionally ``FRAUD_E2E_URL`` (the InferenceService's URL reachable from here) and ``FRAUD_PROMETHEUS_URL`` to
  also drive traffic and analyse it.

Each test leaves the InferenceService serving the version it found, with no canary.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import urllib.request
from collections.abc import Iterator

import pytest

from fraud_detection.data.schema import FEATURES
from fraud_detection.rollout import analysis, canary, contract, errors, kube, patches, prometheus
from fraud_detection.store.local import LocalStore

pytestmark = pytest.mark.e2e

NAMESPACE = os.environ.get("FRAUD_SERVING_NAMESPACE", "fraud-detection")
NAME = os.environ.get("FRAUD_INFERENCE_SERVICE", "fraud-detector")
MODEL = os.environ.get("FRAUD_MODEL_NAME", "fraud-detector")
READY_TIMEOUT = float(os.environ.get("FRAUD_E2E_READY_TIMEOUT", "600"))


@pytest.fixture
def isvc() -> Iterator[kube.InferenceServiceClient]:
    version = os.environ.get("FRAUD_E2E_CANARY_VERSION")
    if not version:
        pytest.skip("set FRAUD_E2E_CANARY_VERSION to a stored version to roll out")
    try:
        client = kube.InferenceServiceClient.connect(NAMESPACE, NAME)
        original = patches.read_state(client.get())
    except errors.RolloutError as exc:
        pytest.skip(f"no usable cluster: {exc}")
    assert not original.canary_running, f"a canary already runs on {NAMESPACE}/{NAME}; finish it first"
    yield client
    # Leave the service as found: the original version at 100 %, no canary.
    state = patches.read_state(client.get())
    if state.model_version != original.model_version or state.canary_percent is not None:
        manual = canary.manual_decision(
            analysis.Decision.ROLLBACK,
            model_name=MODEL,
            stable_version=str(original.model_version),
            canary_version=str(state.model_version),
            reason="e2e clean-up",
        )
        canary.apply_decision(manual, isvc=client, registry=None, store=_scratch_store(), wait_seconds=READY_TIMEOUT)


def _scratch_store() -> LocalStore:
    return LocalStore(tempfile.mkdtemp(prefix="rollout-e2e-"))


def _wait_ready(client: kube.InferenceServiceClient) -> patches.ServiceState:
    generation = (client.get().get("metadata") or {}).get("generation")
    assert client.wait_latest_ready(generation, READY_TIMEOUT, interval=5), "the new revision never became ready"
    return patches.read_state(client.get())


def test_canary_then_rollback_restores_the_stable_version(isvc: kube.InferenceServiceClient):
    canary_version = os.environ["FRAUD_E2E_CANARY_VERSION"]
    stable_version = patches.read_state(isvc.get()).model_version
    started = canary.start_canary(isvc, canary_version, percent=20)
    assert started.stable_version == stable_version
    state = _wait_ready(isvc)
    assert state.canary_percent == 20
    assert sorted(p for _, p, _ in state.traffic) == [20, 80]

    decision = canary.manual_decision(
        analysis.Decision.ROLLBACK,
        model_name=MODEL,
        stable_version=str(stable_version),
        canary_version=canary_version,
        reason="e2e",
    )
    store = _scratch_store()
    record = canary.apply_decision(decision, isvc=isvc, registry=None, store=store, wait_seconds=READY_TIMEOUT)
    assert record["completed"], record
    state = patches.read_state(isvc.get())
    assert state.model_version == stable_version
    assert state.canary_percent is None
    assert [p for _, p, _ in state.traffic] == [100]
    assert state.annotations[contract.ANNOTATION_DECISION] == "rollback"
    assert json.loads(state.annotations[contract.ANNOTATION_REASONS]) == ["manual rollback: e2e"]


def test_canary_with_traffic_is_analysed_from_prometheus(isvc: kube.InferenceServiceClient):
    url, prometheus_url = os.environ.get("FRAUD_E2E_URL"), os.environ.get("FRAUD_PROMETHEUS_URL")
    if not url or not prometheus_url:
        pytest.skip("set FRAUD_E2E_URL and FRAUD_PROMETHEUS_URL to drive traffic and analyse it")
    canary_version = os.environ["FRAUD_E2E_CANARY_VERSION"]
    started = canary.start_canary(isvc, canary_version, percent=50)
    _wait_ready(isvc)
    # One valid row: every feature at 1.0 lies within the data contract's ranges.
    inputs = [{"name": f, "datatype": "FP64", "shape": [1], "data": [1.0]} for f in FEATURES]
    body = json.dumps({"inputs": inputs}).encode()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"{url.rstrip('/')}/v2/models/{MODEL}/infer", data=body, headers={"Content-Type": "application/json"}
        )
        with contextlib.suppress(OSError):  # the decision counts the failures too
            urllib.request.urlopen(request, timeout=10).read()
    decision = canary.analyse(
        prometheus.PrometheusClient(prometheus_url),
        model_name=MODEL,
        stable_version=started.stable_version,
        canary_version=canary_version,
        window="3m",
        thresholds=analysis.Thresholds(min_requests=50, min_scored_rows=50),
        namespace=NAMESPACE,
    )
    assert decision.decision in (analysis.Decision.PROMOTE, analysis.Decision.ROLLBACK), decision.reasons
    assert decision.check("traffic").outcome is analysis.Outcome.PASS
