"""deploy_model's body, and the canary deployment behind it (``fraud_detection.rollout.canary``) on a fake API."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any
from unittest import mock

import jsonpatch
import jsonschema
import pytest
import yaml

from components.deploy_model import deploy_model
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.rollout import canary, contract, errors, patches
from fraud_detection.store.local import LocalStore

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def test_deploy_model_skips_without_a_version():
    assert deploy_model.python_func(model_version="", storage_uri="") == "skipped"


def test_deploy_model_skips_cleanly_without_a_cluster(
    no_cluster: None, caplog: pytest.LogCaptureFixture, tmp_path: Path
):
    caplog.set_level("INFO")
    result = deploy_model.python_func(
        model_version="v1", storage_uri="s3://m/models/x/versions/v1", store_uri=str(tmp_path / "store")
    )
    assert result == "skipped"
    assert "no Kubernetes cluster configured" in caplog.text


def chart_isvc(version: str = "v1", **predictor: Any) -> dict[str, Any]:
    """An InferenceService shaped like the chart's (custom predictor container)."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "fraud-detector", "namespace": "fraud-detection", "resourceVersion": "42"},
        "spec": {
            "predictor": {
                "minReplicas": 2,
                **predictor,
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "ghcr.io/fraud-detection/fraud-detection-serve:0.1.0",
                        "env": [
                            {"name": "STORAGE_URI", "value": f"s3://b/models/fraud-detector/versions/{version}"},
                            {"name": "FRAUD_MODEL_VERSION", "value": version},
                            {"name": "FRAUD_PAYLOAD_LOG_ENABLED", "value": "true"},
                        ],
                    }
                ],
            }
        },
    }


@functools.cache
def _isvc_schema() -> dict[str, Any]:
    crd = yaml.load(
        (REPO / "tests/schemas/kserve_serving.kserve.io_inferenceservices.yaml").read_text(), Loader=yaml.CSafeLoader
    )
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    return version["schema"]["openAPIV3Schema"]


class Cluster:
    """An autospec'd CustomObjectsApi over one InferenceService (or none): get, create, JSON-patch."""

    def __init__(self, obj: dict[str, Any] | None, error_status: int = 404) -> None:
        from kubernetes.client import CustomObjectsApi
        from kubernetes.client.exceptions import ApiException

        self.obj = obj
        self.api = mock.create_autospec(CustomObjectsApi, instance=True)
        self.api.get_namespaced_custom_object.side_effect = lambda *a: (
            json.loads(json.dumps(self.obj)) if self.obj else _raise(ApiException(status=error_status, reason="x"))
        )
        self.api.create_namespaced_custom_object.side_effect = self._create
        self.api.patch_namespaced_custom_object.side_effect = self._patch

    def _create(self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        assert (group, version, namespace, plural) == (
            "serving.kserve.io",
            "v1beta1",
            "fraud-detection",
            "inferenceservices",
        )
        self.obj = body
        return body

    def _patch(self, group: str, version: str, namespace: str, plural: str, name: str, body: Any) -> dict[str, Any]:
        assert isinstance(body, list), "the canary must be a JSON patch, not a merge patch"
        self.obj = jsonpatch.apply_patch(self.obj or {}, body)
        return self.obj


def _raise(exc: Exception) -> Any:
    raise exc


def _deploy(cluster: Cluster, version: str = "v2", registry: ModelRegistry | None = None) -> canary.DeployResult:
    return canary.deploy_canary(
        name="fraud-detector",
        namespace="fraud-detection",
        model_name="fraud-detector",
        version=version,
        storage_uri=f"s3://store/models/fraud-detector/versions/{version}",
        canary_traffic_percent=10,
        registry=registry,
        api=cluster.api,
    )


def test_deploy_canary_creates_a_missing_inference_service():
    cluster = Cluster(None)
    result = _deploy(cluster)
    assert result.action == "created"
    created = cluster.obj or {}
    jsonschema.validate(created, _isvc_schema())
    assert patches.read_state(created).model_version == "v2"
    assert patches.read_state(created).storage_uri == "s3://store/models/fraud-detector/versions/v2"
    cluster.api.patch_namespaced_custom_object.assert_not_called()


def test_deploy_canary_starts_the_rollouts_canary_and_moves_the_canary_alias(trained: dict[str, Any], tmp_path: Path):
    registry = ModelRegistry(LocalStore(tmp_path / "store"), "fraud-detector")
    version = registry.publish(Path(trained["bundle"].path))
    cluster = Cluster(chart_isvc("v1"))
    result = _deploy(cluster, version, registry)
    assert (result.action, result.version) == ("canary", version)
    assert "beside v1" in result.reason
    patched = cluster.obj or {}
    jsonschema.validate(patched, _isvc_schema())
    state = patches.read_state(patched)
    assert (state.model_version, state.canary_percent) == (version, 10)
    assert state.storage_uri == f"s3://b/models/fraud-detector/versions/{version}"  # the InferenceService's root
    assert (state.stable_version, state.canary_version) == ("v1", version)
    assert patched["metadata"]["annotations"][contract.VERSION_ANNOTATION] == version
    env = {e["name"]: e["value"] for e in patched["spec"]["predictor"]["containers"][0]["env"]}
    assert env["FRAUD_PAYLOAD_LOG_ENABLED"] == "true"
    assert (registry.get_alias("canary") or {}).get("version") == version


def test_deploy_canary_leaves_an_up_to_date_service_alone():
    cluster = Cluster(chart_isvc("v2"))
    assert _deploy(cluster, "v2").action == "unchanged"
    cluster.api.patch_namespaced_custom_object.assert_not_called()


def test_deploy_canary_refuses_while_another_canary_runs():
    cluster = Cluster(chart_isvc("v2", canaryTrafficPercent=10))
    with pytest.raises(errors.RolloutError, match="runs already"):
        _deploy(cluster, "v3")
    cluster.api.patch_namespaced_custom_object.assert_not_called()


def test_deploy_canary_reports_other_api_errors():
    with pytest.raises(errors.RolloutError, match="HTTP 403"):
        _deploy(Cluster(None, error_status=403))


def test_deploy_canary_skips_without_a_cluster(no_cluster: None):
    result = canary.deploy_canary(
        name="x", namespace="y", model_name="m", version="v1", storage_uri="s3://b/v1", canary_traffic_percent=10
    )
    assert result.action == "skipped"
