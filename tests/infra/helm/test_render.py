"""The chart renders, lints and validates; the InferenceService follows the values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import k8s
from tests.infra.helm.chart import (
    ALL_ENABLED,
    VALUE_SETS,
    Render,
    drift_container,
    kinds_and_names,
    predictor,
    serve_container,
)

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------------------ lint, validate


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict(chart: Path, values: tuple[str, ...]) -> None:
    args = ["helm", "lint", "--strict", str(chart), "--namespace", k8s.NAMESPACE]
    for v in values:
        args += ["--values", str(chart / v)]
    out = k8s.run_tool(args)
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out, out
    assert "[ERROR]" not in out, out


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rendered_objects_validate(render: Render, values: tuple[str, ...]) -> None:
    objects = render(values)
    assert objects, "nothing rendered"
    assert k8s.validate_all(objects) == []


def test_validation_catches_unknown_fields(render: Render) -> None:
    """The validators are strict: a misspelt field anywhere fails, for core kinds and custom resources alike."""
    objects = json.loads(json.dumps(render()))
    serve_container(objects)["imagePullPolicyy"] = "Always"
    k8s.one(objects, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["portnumber"] = 8080
    k8s.one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartpolicy"] = "Never"
    k8s.one(objects, "PrometheusRule")["metadata"]["label"] = {}
    errors = "\n".join(k8s.validate_all(objects))
    for field in ("imagePullPolicyy", "portnumber", "restartpolicy", "'label'"):
        assert field in errors
    # Istio kinds: structure only (their CRDs are not vendored); anything unknown is an error, not a pass.
    envoy = json.loads(json.dumps(k8s.one(render(ALL_ENABLED), "EnvoyFilter", "fraud-detection-ratelimit")))
    envoy["specs"] = envoy.pop("spec")
    assert k8s.validate_object(envoy)
    assert k8s.validate_object({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_default_objects(render: Render) -> None:
    assert kinds_and_names(render()) >= {
        ("InferenceService", "fraud-detector"),
        ("ServiceAccount", "fraud-detection"),
        ("ServiceAccount", "fraud-detection-rollout"),
        ("Role", "fraud-detection-rollout"),
        ("RoleBinding", "fraud-detection-rollout"),
        ("CronJob", "fraud-detection-drift"),
        ("PodMonitor", "fraud-detection-predictor"),
        ("PrometheusRule", "fraud-detection"),
        ("NetworkPolicy", "fraud-detection-predictor"),
        ("NetworkPolicy", "fraud-detection-drift"),
        ("ConfigMap", "fraud-detection-pipeline"),
    }
    kinds = {o["kind"] for o in render()}
    # Off by default: the development MinIO and the Istio protections; never: Secrets.
    assert kinds.isdisjoint({"Deployment", "Service", "PersistentVolumeClaim", "Secret", "EnvoyFilter"})
    assert kinds.isdisjoint({"RequestAuthentication", "AuthorizationPolicy", "Namespace"})


def test_every_namespaced_object_is_in_the_release_namespace(render: Render) -> None:
    for obj in render(ALL_ENABLED):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("-pipeline"):
            assert namespace == "kubeflow"
        elif obj["kind"] == "ConfigMap" and "-dashboard-" in obj["metadata"]["name"]:
            assert namespace == "monitoring"  # dashboards.namespace in all-enabled
        else:
            assert namespace == k8s.NAMESPACE, k8s.describe(obj)


# ---------------------------------------------------------------------------------------- InferenceService


def test_inference_service_defaults(render: Render) -> None:
    objects = render()
    isvc = k8s.one(objects, "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    # Knative mode with Knative's HPA class: canary and CPU autoscaling together (tests/infra/helm/test_admission.py).
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert isvc["metadata"]["annotations"]["autoscaling.knative.dev/class"] == "hpa.autoscaling.knative.dev"
    assert "serving.kserve.io/autoscalerClass" not in isvc["metadata"]["annotations"]
    spec = predictor(objects)
    assert (spec["minReplicas"], spec["maxReplicas"], spec["scaleMetric"], spec["scaleTarget"]) == (2, 10, "cpu", 70)
    assert "canaryTrafficPercent" not in spec
    assert spec["serviceAccountName"] == "fraud-detection"
    assert spec["labels"]["app.kubernetes.io/component"] == "predictor"
    container = serve_container(objects)
    assert container["name"] == "kserve-container"
    assert container["image"] == "ghcr.io/fraud-detection/fraud-detection-serve:0.1.0"
    assert container["args"] == [
        "--model_name", "fraud-detector", "--model_dir", "/mnt/models", "--http_port", "8080", "--grpc_port", "8081",
        "--no-expose_threshold",
    ]  # fmt: skip
    # Knative routes one port; gRPC is exposed in Standard mode only.
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http1", 8080)]
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    env = k8s.env_of(container)
    assert env["STORAGE_URI"] == "s3://fraud-detection/models/fraud-detector/versions/1"
    assert env["FRAUD_MODEL_VERSION"] == "1"
    assert env["FRAUD_MODEL_NAME"] == "fraud-detector"
    assert env["FRAUD_STORE_URI"] == "s3://fraud-detection"
    assert env["FRAUD_S3_ENDPOINT"] == "http://minio-service.kubeflow.svc:9000"
    assert env["FRAUD_PAYLOAD_LOG_ENABLED"] == "true"
    assert env["FRAUD_PAYLOAD_LOG_IDENTIFIERS"] == "false"
    assert {"FRAUD_PAYLOAD_LOG_FLUSH_ROWS", "FRAUD_PAYLOAD_LOG_FLUSH_SECONDS"} <= env.keys()
    for key, secret_key in (
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ):
        assert env[key] == {"secretKeyRef": {"name": "fraud-s3-credentials", "key": secret_key}}
    # Knative: no pod-level securityContext (Knative rejects it); the container carries the hardening.
    assert "securityContext" not in spec
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_values_reach_the_inference_service(render: Render) -> None:
    objects = render(
        sets=(
            "model.version=20240101.3",
            "model.name=card-fraud",
            "inferenceService.name=card-fraud-isvc",
            "inferenceService.minReplicas=3",
            "inferenceService.maxReplicas=7",
            "inferenceService.scaleTarget=55",
            "inferenceService.payloadLog.enabled=false",
            "store.uri=s3://other-bucket/prefix/",
        )
    )
    isvc = k8s.one(objects, "InferenceService")
    assert isvc["metadata"]["name"] == "card-fraud-isvc"
    spec = predictor(objects)
    assert (spec["minReplicas"], spec["maxReplicas"], spec["scaleTarget"]) == (3, 7, 55)
    env = k8s.env_of(serve_container(objects))
    assert env["STORAGE_URI"] == "s3://other-bucket/prefix/models/card-fraud/versions/20240101.3"
    assert env["FRAUD_MODEL_VERSION"] == "20240101.3"
    assert env["FRAUD_PAYLOAD_LOG_ENABLED"] == "false"
    assert serve_container(objects)["args"][1] == "card-fraud"
    # Everything that selects the predictor pods follows the InferenceService name.
    for kind in ("PodMonitor", "NetworkPolicy"):
        selectors = [
            o["spec"].get("selector", o["spec"].get("podSelector"))["matchLabels"]
            for o in k8s.find(objects, kind)
            if o["metadata"]["name"].endswith("-predictor")
        ]
        assert selectors == [{"serving.kserve.io/inferenceservice": "card-fraud-isvc"}]


def test_canary_values(render: Render) -> None:
    objects = render(("ci/canary-values.yaml",))
    spec = predictor(objects)
    assert spec["canaryTrafficPercent"] == 10
    env = k8s.env_of(serve_container(objects))
    assert env["FRAUD_MODEL_VERSION"] == "2"
    assert env["STORAGE_URI"].endswith("/models/fraud-detector/versions/2")


def test_raw_deployment_mode(render: Render) -> None:
    objects = render(("ci/raw-deployment-values.yaml",))
    annotations = k8s.one(objects, "InferenceService")["metadata"]["annotations"]
    # The legacy name RawDeployment is rendered as Standard, the only value KServe's webhook pairs with the HPA.
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    assert "autoscaling.knative.dev/class" not in annotations
    spec = predictor(objects)
    assert (spec["minReplicas"], spec["maxReplicas"], spec["scaleMetric"], spec["scaleTarget"]) == (2, 10, "cpu", 70)
    assert spec["securityContext"]["runAsNonRoot"] is True
    container = serve_container(objects)
    assert {(p["name"], p["containerPort"]) for p in container["ports"]} == {("http1", 8080), ("grpc", 8081)}
    digest = "sha256:" + "0" * 63 + "1"
    assert container["image"] == f"registry.example.com/fraud/fraud-detection-serve@{digest}"
    assert drift_container(objects)["image"].endswith("fraud-detection-drift@sha256:" + "0" * 63 + "2")
    # Pinned images carry no digest suppression for checkov.
    annotations = k8s.one(objects, "CronJob")["metadata"]["annotations"]
    assert not any("CKV_K8S_43" in v for v in annotations.values())


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("inferenceService.deploymentMode=RawDeployment", "canary.enabled=true"), "canary.enabled needs"),
        (("inferenceService.deploymentMode=Standard", "inferenceService.scaleMetric=rps"), "must be cpu or memory"),
        (("inferenceService.minReplicas=5", "inferenceService.maxReplicas=2"), "must not exceed"),
        (("prometheusRule.enabled=true", "bogus=1"), "bogus"),
        (("inferenceService.minReplicas=two",), "minReplicas"),
        (("containerSecurityContext.readOnlyRootFilesystem=false",), "readOnlyRootFilesystem"),
        (("podSecurityContext.runAsNonRoot=false",), "runAsNonRoot"),
        (("canary.trafficPercent=101",), "trafficPercent"),
        (("store.uri=https://bucket",), "uri"),
        (("inferenceService.resources.limits=null",), "limits"),
    ],
    ids=[
        "canary-needs-serverless", "hpa-metric", "min-gt-max", "unknown-key", "wrong-type",
        "writable-root", "root-user", "percent-range", "store-scheme", "limits-required",
    ],
)  # fmt: skip
def test_invalid_values_are_rejected(chart: Path, sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(k8s.ToolError, match=message):
        k8s.helm_template(chart, set_values=sets)
