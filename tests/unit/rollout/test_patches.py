"""InferenceService JSON patches, applied to the chart's own InferenceService and validated against KServe's CRD."""

from __future__ import annotations

import copy

import jsonpatch
import jsonschema
import pytest

from fraud_detection.rollout import contract, errors, patches
from tests import k8s
from tests.unit.rollout.support import CANARY, JSON_PATCH_SCHEMA, MODEL, STABLE, _in_canary, env, valid

# --------------------------------------------------------------------------------------- JSON patch applier


def test_the_chart_renders_what_the_rollout_expects(chart_isvc):
    state = patches.read_state(chart_isvc)
    assert state.model_version == STABLE
    assert state.storage_uri == f"s3://fraud-detection/models/{MODEL}/versions/{STABLE}"
    assert state.canary_percent is None and not state.canary_running
    assert chart_isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"


def test_canary_patch_is_a_guarded_json_patch_that_keeps_the_container(chart_isvc):
    patch = patches.canary_patch(chart_isvc, CANARY, 10)
    jsonschema.validate(patch, JSON_PATCH_SCHEMA)
    assert {"op": "test", "path": "/spec/predictor/containers/0/name", "value": "kserve-container"} in patch
    assert not any(op["path"] == "/spec/predictor/containers" for op in patch), "never replace the containers"
    out = valid(jsonpatch.apply_patch(chart_isvc, patch))
    before, after = chart_isvc["spec"]["predictor"]["containers"][0], out["spec"]["predictor"]["containers"][0]
    assert env(out)["STORAGE_URI"] == f"s3://fraud-detection/models/{MODEL}/versions/{CANARY}"
    assert env(out)["FRAUD_MODEL_VERSION"] == CANARY
    assert out["spec"]["predictor"]["canaryTrafficPercent"] == 10
    # Everything else of the container is untouched (image, args, probes, the other env vars in their order).
    assert {k: v for k, v in after.items() if k != "env"} == {k: v for k, v in before.items() if k != "env"}
    assert [e["name"] for e in after["env"]] == [e["name"] for e in before["env"]]
    changed = [a for a, b in zip(after["env"], before["env"], strict=True) if a != b]
    assert {e["name"] for e in changed} == {"STORAGE_URI", "FRAUD_MODEL_VERSION"}
    annotations = out["metadata"]["annotations"]
    assert annotations[contract.ANNOTATION_STABLE] == STABLE
    assert annotations[contract.ANNOTATION_CANARY] == CANARY
    assert annotations["fraud-detection.io/model-version"] == CANARY  # what deploy.served_version reads
    assert annotations["serving.kserve.io/deploymentMode"] == "Knative"


def test_canary_patch_fails_when_the_env_moved_meanwhile(chart_isvc):
    patch = patches.canary_patch(chart_isvc, CANARY, 10)
    moved = copy.deepcopy(chart_isvc)
    moved["spec"]["predictor"]["containers"][0]["env"].insert(0, {"name": "EXTRA", "value": "1"})
    with pytest.raises(jsonpatch.JsonPatchTestFailed, match="is not equal to tested value"):
        jsonpatch.apply_patch(moved, patch)


@pytest.mark.parametrize("percent", [0, 100, -5])
def test_canary_patch_rejects_percentages(chart_isvc, percent):
    with pytest.raises(ValueError, match="between 1 and 99"):
        patches.canary_patch(chart_isvc, CANARY, percent)


def test_canary_patch_refuses_the_same_version_and_foreign_layouts(chart_isvc):
    with pytest.raises(errors.RolloutError, match="already serves"):
        patches.canary_patch(chart_isvc, STABLE)
    odd = copy.deepcopy(chart_isvc)
    for item in odd["spec"]["predictor"]["containers"][0]["env"]:
        if item["name"] == "STORAGE_URI":
            item["value"] = "s3://bucket/model.joblib"
    with pytest.raises(errors.RolloutError, match="does not follow"):
        patches.canary_patch(odd, CANARY)
    renamed = copy.deepcopy(chart_isvc)
    renamed["spec"]["predictor"]["containers"][0]["name"] = "main"
    with pytest.raises(errors.RolloutError, match="kserve-container"):
        patches.canary_patch(renamed, CANARY)


def test_the_crd_check_catches_a_bad_patch(chart_isvc):
    """The validation used throughout can fail: a string percentage and an unknown field are rejected."""
    bad = jsonpatch.apply_patch(
        chart_isvc, [{"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": "10"}]
    )
    assert any(
        "canaryTrafficPercent" in e for e in k8s.validate_object({k: v for k, v in bad.items() if k != "status"})
    )
    bad = jsonpatch.apply_patch(chart_isvc, [{"op": "add", "path": "/spec/predictor/canaryPercent", "value": 10}])
    assert k8s.validate_object({k: v for k, v in bad.items() if k != "status"})


def test_promote_patch_removes_the_split_and_records_the_decision(chart_isvc):
    canary = _in_canary(chart_isvc)
    annotations = {
        contract.ANNOTATION_DECISION: "promote",
        contract.ANNOTATION_REASONS: '["ok"]',
        contract.ANNOTATION_TIME: "t",
    }
    patch = patches.promote_patch(canary, CANARY, annotations)
    jsonschema.validate(patch, JSON_PATCH_SCHEMA)
    out = valid(jsonpatch.apply_patch(canary, patch))
    assert "canaryTrafficPercent" not in out["spec"]["predictor"]
    assert env(out)["FRAUD_MODEL_VERSION"] == CANARY
    assert out["spec"]["predictor"]["containers"] == canary["spec"]["predictor"]["containers"]  # no new revision
    meta = out["metadata"]["annotations"]
    assert meta[contract.ANNOTATION_DECISION] == "promote" and meta[contract.ANNOTATION_STABLE] == CANARY
    assert contract.ANNOTATION_CANARY not in meta
    assert meta["fraud-detection.io/model-version"] == CANARY


def test_rollback_patch_pins_traffic_and_restores_the_stable_spec(chart_isvc):
    canary = _in_canary(chart_isvc)
    patch = patches.rollback_patch(canary, STABLE, {contract.ANNOTATION_DECISION: "rollback"})
    jsonschema.validate(patch, JSON_PATCH_SCHEMA)
    out = valid(jsonpatch.apply_patch(canary, patch))
    assert out["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert env(out)["FRAUD_MODEL_VERSION"] == STABLE
    assert out["spec"]["predictor"]["containers"] == chart_isvc["spec"]["predictor"]["containers"]
    assert out["metadata"]["annotations"]["fraud-detection.io/model-version"] == STABLE
    finished = valid(jsonpatch.apply_patch(out, patches.finish_rollback_patch(out)))
    assert "canaryTrafficPercent" not in finished["spec"]["predictor"]
    assert finished["spec"] == chart_isvc["spec"]
    assert patches.finish_rollback_patch(finished) == []


def test_annotation_ops_escape_keys_and_create_the_map():
    ops = patches.annotation_ops({"metadata": {}}, {"a/b": "1", "gone": None})
    assert ops == [{"op": "add", "path": "/metadata/annotations", "value": {"a/b": "1"}}]
    ops = patches.annotation_ops(
        {"metadata": {"annotations": {"gone": "x"}}}, {"a/b": "1", "gone": None, "absent": None}
    )
    assert ops == [
        {"op": "add", "path": "/metadata/annotations/a~1b", "value": "1"},
        {"op": "remove", "path": "/metadata/annotations/gone"},
    ]
