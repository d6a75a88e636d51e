"""Start, promote and roll back on a fake cluster: patches, annotations, records, the store's aliases."""

from __future__ import annotations

import copy
import json
import re

import pytest

from fraud_detection.rollout import analysis, canary, contract, errors, kube, patches, records
from tests.unit.rollout.support import (
    CANARY,
    MODEL,
    STABLE,
    FakeCluster,
    _no_nan,
    _started,
    alias,
    client_for,
    decide,
    env,
    make_registry,
    metrics,
)

# -------------------------------------------------------------------------------- actions on a fake cluster


def test_start_canary_patches_the_service_and_moves_the_canary_alias(chart_isvc, tmp_path):
    cluster = FakeCluster(chart_isvc)
    registry = make_registry(tmp_path, STABLE, CANARY)
    result = canary.start_canary(client_for(cluster), CANARY, percent=15, registry=registry)
    assert (result.stable_version, result.canary_version, result.percent, result.applied) == (STABLE, CANARY, 15, True)
    assert cluster.obj["spec"]["predictor"]["canaryTrafficPercent"] == 15
    assert alias(registry, "canary", "version") == CANARY
    cluster.get_namespaced_custom_object("serving.kserve.io", "v1beta1", "fraud-detection", "inferenceservices", MODEL)
    assert cluster.served_share("fraud-detector-predictor-00002") == 15
    assert cluster.served_share("fraud-detector-predictor-00001") == 85


def test_start_canary_refuses_unknown_versions_running_canaries_and_dry_runs_change_nothing(chart_isvc, tmp_path):
    cluster = FakeCluster(chart_isvc)
    registry = make_registry(tmp_path, STABLE, CANARY)
    with pytest.raises(errors.RolloutError, match="not complete"):
        canary.start_canary(client_for(cluster), "nope", registry=registry)
    dry = canary.start_canary(client_for(cluster), CANARY, registry=registry, dry_run=True)
    assert not dry.applied and dry.patch and not cluster.patches
    assert registry.get_alias("canary") is None
    canary.start_canary(client_for(cluster), CANARY, registry=registry)
    third = "20260301-000000-cccccccc"
    with pytest.raises(errors.RolloutError, match="runs already"):
        canary.start_canary(client_for(cluster), third)
    replaced = canary.start_canary(client_for(cluster), third, force=True)
    assert replaced.stable_version == STABLE  # the stable version survives a replaced canary
    assert cluster.obj["metadata"]["annotations"][contract.ANNOTATION_STABLE] == STABLE


def test_promote_sends_everything_to_the_canary_and_records_why(chart_isvc, tmp_path):
    cluster, registry = _started(chart_isvc, tmp_path)
    decision = decide(metrics(STABLE), metrics(CANARY))
    record = canary.apply_decision(
        decision, isvc=client_for(cluster), registry=registry, store=registry.store, extra={"prometheus_url": "x"}
    )
    assert cluster.served_share("fraud-detector-predictor-00002") == 100
    assert "canaryTrafficPercent" not in cluster.obj["spec"]["predictor"]
    assert alias(registry, "production", "version") == CANARY
    assert alias(registry, "production", "previous") == STABLE
    assert registry.get_alias("canary") is None
    # The record in the store, atomic and complete.
    keys = registry.store.list(f"rollouts/{MODEL}/")
    assert keys == [record["record_key"]]
    assert re.fullmatch(rf"rollouts/{MODEL}/\d{{8}}T\d{{12}}Z\.json", keys[0])
    stored = json.loads(registry.store.read_bytes(keys[0]), parse_constant=_no_nan)
    assert stored["decision"] == "promote" and stored["completed"] is True and stored["error"] is None
    assert stored["prometheus_url"] == "x"
    assert stored["inference_service"] == f"fraud-detection/{MODEL}"
    assert [a["action"] for a in stored["actions"]] == ["promote", "alias", "alias-removed"]
    assert {c["name"]: c["outcome"] for c in stored["checks"]}["error_rate"] == "pass"
    assert stored["service_before"]["canary_percent"] == 10
    # The annotations on the InferenceService.
    annotations = cluster.obj["metadata"]["annotations"]
    assert annotations[contract.ANNOTATION_DECISION] == "promote"
    assert json.loads(annotations[contract.ANNOTATION_REASONS]) == list(decision.reasons)
    assert annotations[contract.ANNOTATION_TIME] == decision.decided_at
    assert annotations[contract.ANNOTATION_RECORD] == keys[0]
    assert records.latest_records(registry.store, MODEL)[0]["record_key"] == keys[0]


def test_rollback_pins_traffic_waits_for_the_restored_revision_then_releases(chart_isvc, tmp_path, monkeypatch):
    cluster, registry = _started(chart_isvc, tmp_path, ready_after=2)
    registry.set_alias("production", CANARY)  # as if the training pipeline had moved it already
    decision = decide(metrics(STABLE), metrics(CANARY, errors=100))
    sleeps: list[float] = []
    isvc = client_for(cluster)
    original_wait = isvc.wait_latest_ready

    def observed_wait(generation, timeout, *, interval=5.0):
        # Right after the first patch, before the restored revision is ready, the canary gets nothing.
        assert cluster.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
        assert cluster.served_share("fraud-detector-predictor-00001") == 100
        return original_wait(generation, timeout, interval=interval, sleep=sleeps.append)

    monkeypatch.setattr(isvc, "wait_latest_ready", observed_wait)
    record = canary.apply_decision(decision, isvc=isvc, registry=registry, store=registry.store, poll_interval=1)
    assert sleeps == [1, 1]
    assert "canaryTrafficPercent" not in cluster.obj["spec"]["predictor"]
    assert cluster.served_share("fraud-detector-predictor-00003") == 100
    assert env(cluster.obj)["FRAUD_MODEL_VERSION"] == STABLE
    assert alias(registry, "production", "version") == STABLE
    assert registry.get_alias("canary") is None
    assert [a["action"] for a in record["actions"]] == ["pin-stable", "release-pin", "alias", "alias-removed"]
    annotations = cluster.obj["metadata"]["annotations"]
    assert annotations[contract.ANNOTATION_DECISION] == "rollback"
    assert "error rate" in json.loads(annotations[contract.ANNOTATION_REASONS])[0]


def test_a_rollback_whose_revision_never_gets_ready_stays_pinned_and_says_so(chart_isvc, tmp_path):
    cluster, registry = _started(chart_isvc, tmp_path, ready_after=None)
    isvc = client_for(cluster)
    decision = decide(metrics(STABLE), metrics(CANARY, errors=100))
    with pytest.raises(errors.RolloutError, match="not ready within 0 s"):
        canary.apply_decision(decision, isvc=isvc, registry=registry, store=registry.store, wait_seconds=0)
    assert cluster.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert cluster.served_share("fraud-detector-predictor-00001") == 100
    stored = records.latest_records(registry.store, MODEL)[0]
    assert stored["completed"] is False and "RolloutError" in stored["error"]
    # Once the revision is ready, rolling back again finishes the job.
    cluster.ready_after = 0
    cluster._pending = (cluster.obj["status"]["components"]["predictor"]["latestCreatedRevision"], 0)
    manual = canary.manual_decision(
        analysis.Decision.ROLLBACK, model_name=MODEL, stable_version=STABLE, canary_version=CANARY, reason="finish"
    )
    canary.apply_decision(manual, isvc=isvc, registry=registry, store=registry.store, wait_seconds=0)
    assert "canaryTrafficPercent" not in cluster.obj["spec"]["predictor"]
    assert records.latest_records(registry.store, MODEL)[0]["reasons"] == ["manual rollback: finish"]


def test_inconclusive_only_annotates(chart_isvc, tmp_path):
    cluster, registry = _started(chart_isvc, tmp_path)
    spec_before = copy.deepcopy(cluster.obj["spec"])
    decision = decide(metrics(STABLE), metrics(CANARY, requests=5))
    record = canary.apply_decision(decision, isvc=client_for(cluster), registry=registry, store=registry.store)
    assert cluster.obj["spec"] == spec_before
    assert cluster.obj["metadata"]["annotations"][contract.ANNOTATION_DECISION] == "inconclusive"
    assert alias(registry, "canary", "version") == CANARY and alias(registry, "production", "version") == STABLE
    assert [a["action"] for a in record["actions"]] == ["annotate"]


def test_promote_refuses_without_a_ready_canary(chart_isvc, tmp_path):
    cluster, registry = _started(chart_isvc, tmp_path, ready_after=None)
    with pytest.raises(errors.RolloutError, match="not ready"):
        canary.apply_decision(
            decide(metrics(STABLE), metrics(CANARY)), isvc=client_for(cluster), registry=registry, store=registry.store
        )
    assert cluster.obj["spec"]["predictor"]["canaryTrafficPercent"] == 10
    plain = FakeCluster(chart_isvc)
    with pytest.raises(errors.RolloutError, match="nothing to promote"):
        canary.apply_decision(
            decide(metrics(STABLE), metrics(CANARY)), isvc=client_for(plain), registry=None, store=registry.store
        )


def test_resolve_versions(chart_isvc, tmp_path):
    cluster, registry = _started(chart_isvc, tmp_path)
    state = patches.read_state(cluster.obj)
    assert canary.resolve_versions(state, None) == (STABLE, CANARY)
    assert canary.resolve_versions(None, registry) == (STABLE, CANARY)
    assert canary.resolve_versions(None, None, stable_version="a", canary_version="b") == ("a", "b")
    # A canary started by deploy.py (no rollout annotations) after the pipeline moved `production` to it.
    registry.set_alias("production", CANARY)
    bare = copy.deepcopy(cluster.obj)
    del bare["metadata"]["annotations"][contract.ANNOTATION_STABLE]
    assert canary.resolve_versions(patches.read_state(bare), registry) == (STABLE, CANARY)
    with pytest.raises(errors.RolloutError, match="cannot tell"):
        canary.resolve_versions(patches.read_state(chart_isvc), None)
    with pytest.raises(errors.RolloutError, match="both"):
        canary.resolve_versions(None, None, stable_version="a", canary_version="a")


def test_api_errors_become_rollout_errors(chart_isvc):
    from kubernetes.client.exceptions import ApiException

    class Forbidden:
        def get_namespaced_custom_object(self, *args):
            raise ApiException(status=403, reason="Forbidden")

    isvc = kube.InferenceServiceClient("fraud-detection", MODEL, Forbidden(), Forbidden())  # type: ignore[arg-type]
    with pytest.raises(errors.RolloutError, match="HTTP 403: the identity lacks get/patch"):
        isvc.get()
    cluster = FakeCluster(chart_isvc)
    patch = patches.canary_patch(chart_isvc, CANARY)
    cluster.obj["spec"]["predictor"]["containers"][0]["env"].reverse()  # a concurrent edit
    with pytest.raises(errors.RolloutError, match="HTTP 422"):
        client_for(cluster).patch(patch)
