"""Who may do what: service accounts, RBAC, the drift CronJob, the pipeline ConfigMap, network policies, Istio."""

from __future__ import annotations

import pytest

from tests import k8s
from tests.infra.helm.chart import ALL_ENABLED, Render, drift_container, serve_container

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------------------- ServiceAccount, RBAC, drift


def test_service_account_lists_the_s3_secret(render: Render) -> None:
    sa = k8s.one(render(), "ServiceAccount", "fraud-detection")
    assert sa["secrets"] == [{"name": "fraud-s3-credentials"}]
    assert sa["automountServiceAccountToken"] is False
    renamed = k8s.one(render(sets=("store.credentials.existingSecret=my-s3",)), "ServiceAccount", "fraud-detection")
    assert renamed["secrets"] == [{"name": "my-s3"}]
    minimal = k8s.one(render(("ci/minimal-values.yaml",)), "ServiceAccount")
    assert "secrets" not in minimal  # no static keys configured
    assert "AWS_ACCESS_KEY_ID" not in k8s.env_of(serve_container(render(("ci/minimal-values.yaml",))))


def test_rollout_rbac_is_minimal(render: Render) -> None:
    objects = render()
    role = k8s.one(objects, "Role", "fraud-detection-rollout")
    assert role["metadata"]["namespace"] == k8s.NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "verbs": ["get", "list", "watch", "patch"],
        }
    ]
    assert not k8s.find(objects, "ClusterRole")
    assert not k8s.find(objects, "ClusterRoleBinding")
    binding = k8s.one(objects, "RoleBinding", "fraud-detection-rollout")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fraud-detection-rollout",
    }  # fmt: skip
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "fraud-detection-rollout", "namespace": k8s.NAMESPACE}
    ]
    extra = k8s.one(render(ALL_ENABLED), "RoleBinding", "fraud-detection-rollout")["subjects"]
    assert {"kind": "ServiceAccount", "name": "fraud-pipeline-runner", "namespace": "kubeflow"} in extra


def test_drift_cronjob(render: Render) -> None:
    objects = render()
    cronjob = k8s.one(objects, "CronJob", "fraud-detection-drift")
    spec = cronjob["spec"]
    assert spec["schedule"] == "0 * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    container = drift_container(objects)
    assert container["image"] == "ghcr.io/fraud-detection/fraud-detection-drift:0.1.0"
    assert "command" not in container
    assert "args" not in container
    env = k8s.env_of(container)
    assert env["FRAUD_STORE_URI"] == "s3://fraud-detection"
    assert env["FRAUD_MODEL_NAME"] == "fraud-detector"
    assert env["FRAUD_PUSHGATEWAY_URL"] == "http://prometheus-pushgateway.monitoring.svc:9091"
    assert env["FRAUD_DRIFT_WINDOW_HOURS"] == "24"
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "fraud-s3-credentials", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "fraud-s3-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    changed = render(sets=("drift.schedule=*/30 * * * *", "drift.windowHours=6"))
    assert k8s.one(changed, "CronJob")["spec"]["schedule"] == "*/30 * * * *"
    assert k8s.env_of(drift_container(changed))["FRAUD_DRIFT_WINDOW_HOURS"] == "6"


def test_pipeline_configmap_wires_the_runner_secret_by_name(render: Render) -> None:
    cm = k8s.one(render(), "ConfigMap", "fraud-detection-pipeline")
    assert cm["metadata"]["namespace"] == "kubeflow"
    assert cm["data"]["FRAUD_PIPELINE_SECRET_NAME"] == "fraud-s3-credentials"
    assert cm["data"]["FRAUD_PIPELINE_IMAGE"] == "ghcr.io/fraud-detection/fraud-detection-pipeline:0.1.0"
    assert cm["data"]["FRAUD_INFERENCE_SERVICE"] == "fraud-detector"
    assert cm["data"]["FRAUD_SERVING_NAMESPACE"] == k8s.NAMESPACE
    assert cm["data"]["FRAUD_PROMETHEUS_URL"].startswith("http")
    moved = k8s.one(render(sets=("pipeline.namespace=kubeflow-user-fraud",)), "ConfigMap", "fraud-detection-pipeline")
    assert moved["metadata"]["namespace"] == "kubeflow-user-fraud"


# --------------------------------------------------------------------------------------- network, Istio


def test_network_policies(render: Render) -> None:
    objects = render()
    pol = k8s.one(objects, "NetworkPolicy", "fraud-detection-predictor")
    assert pol["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = pol["spec"]["ingress"]
    namespaces = {
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for p in rule["from"]
        if "namespaceSelector" in p
    }
    assert namespaces == {"istio-system", "knative-serving", "monitoring", "kubeflow"}
    drift = k8s.one(objects, "NetworkPolicy", "fraud-detection-drift")
    assert drift["spec"]["ingress"] == []
    assert drift["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "drift"
    # The drift pods carry the labels its policy selects.
    pod_labels = k8s.one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert drift["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    egress = render(ALL_ENABLED)
    for policy in k8s.find(egress, "NetworkPolicy"):
        if policy["metadata"]["name"].endswith("-minio"):
            continue
        assert "Egress" in policy["spec"]["policyTypes"]
        assert any(p.get("port") == 53 for r in policy["spec"]["egress"] for p in r.get("ports", []))


def test_istio_auth_and_rate_limit(render: Render) -> None:
    """The JWT validation and the rate limit; the AuthorizationPolicies are tests/infra/helm/test_authorization.py."""
    objects = render(ALL_ENABLED)
    selector = {"serving.kserve.io/inferenceservice": "fraud-detector"}
    authn = k8s.one(objects, "RequestAuthentication")
    assert authn["spec"]["selector"]["matchLabels"] == selector
    (jwt,) = authn["spec"]["jwtRules"]
    assert jwt["issuer"] == "https://login.example.com/"
    assert jwt["audiences"] == ["fraud-detection"]
    assert jwt["forwardOriginalToken"] is False
    names = {p["metadata"]["name"] for p in k8s.find(objects, "AuthorizationPolicy")}
    assert names == {"fraud-detection-predictor", "fraud-detection-predictor-deny"}
    for policy in k8s.find(objects, "AuthorizationPolicy"):
        assert policy["spec"]["selector"]["matchLabels"] == selector
    envoy = k8s.one(objects, "EnvoyFilter", "fraud-detection-ratelimit")
    assert envoy["spec"]["workloadSelector"]["labels"] == selector
    bucket = envoy["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["token_bucket"]
    assert bucket == {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1s"}
    # Off by default: no Istio object at all.
    default = render()
    for kind in ("RequestAuthentication", "AuthorizationPolicy", "EnvoyFilter"):
        assert not k8s.find(default, kind), kind


def test_minio_is_development_only(render: Render) -> None:
    objects = render(ALL_ENABLED)
    deployment = k8s.one(objects, "Deployment", "fraud-detection-minio")
    assert deployment["spec"]["replicas"] == 1
    env = k8s.env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert env[key] == {"secretKeyRef": {"name": "fraud-minio-root", "key": key}}
    pvc = k8s.one(objects, "PersistentVolumeClaim", "fraud-detection-minio")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    service = k8s.one(objects, "Service", "fraud-detection-minio")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
