"""The chart's Spark Operator pieces: off by default, minimal RBAC, and settings that build a valid SparkApplication.

The SparkApplication itself is created by the pipeline's feature step, not by the chart; the chart renders what it
needs (the driver's ServiceAccount and Role, the runner's Role on sparkapplications, the settings ConfigMap). The
last test goes the whole way: chart values -> rendered settings.json -> components.spark_operator -> manifest ->
the Spark Operator CRD's schema.
"""

from __future__ import annotations

import json

import pytest

from components.spark_operator.application import application_name, build_application, spark_uri
from components.spark_operator.settings import settings_from_mapping
from pipelines.training import SPARK_CONFIG_MAP_NAME
from tests import k8s
from tests.helpers.sparkapplication import crd_errors
from tests.infra.helm.chart import Render, kinds_and_names

pytestmark = pytest.mark.integration

SPARK = ("ci/spark-values.yaml",)
NAMESPACE = "kubeflow-user-fraud"  # pipeline.namespace in ci/spark-values.yaml
EXPECTED = {
    ("ServiceAccount", "fraud-detection-spark"),
    ("Role", "fraud-detection-spark-driver"),
    ("RoleBinding", "fraud-detection-spark-driver"),
    ("Role", "fraud-detection-spark-runner"),
    ("RoleBinding", "fraud-detection-spark-runner"),
    ("ConfigMap", "fraud-detection-spark"),
}


def _spark_objects(render: Render, values: tuple[str, ...] = SPARK, sets: tuple[str, ...] = ()) -> list[dict]:
    return [o for o in render(values, sets) if o["metadata"]["labels"].get("app.kubernetes.io/component") == "spark"]


def _rules(render: Render, name: str) -> list[tuple[str, frozenset[str], tuple[str, ...]]]:
    role = k8s.one(render(SPARK), "Role", name)
    return [
        (",".join(r["apiGroups"]), frozenset(r["resources"]), tuple(r["verbs"]))
        for r in role["rules"]  # order-insensitive on resources, exact on verbs
    ]


def test_disabled_by_default_renders_nothing(render: Render) -> None:
    for values in ((), ("ci/all-enabled-values.yaml",)):
        objects = render(values)
        assert not kinds_and_names(objects) & EXPECTED, values
        assert not any("spark" in o["metadata"]["name"] for o in objects), values


def test_enabled_renders_the_service_account_rbac_and_settings_and_they_validate(render: Render) -> None:
    objects = _spark_objects(render)
    assert kinds_and_names(objects) == EXPECTED
    assert k8s.validate_all(objects) == []
    assert {o["metadata"]["namespace"] for o in objects} == {NAMESPACE}
    sa = k8s.one(objects, "ServiceAccount", "fraud-detection-spark")
    assert sa["automountServiceAccountToken"] is True  # the driver creates its executors through the API
    assert sa["metadata"]["annotations"] == {"example.com/owner": "fraud-team"}


def test_rbac_verbs_are_minimal(render: Render) -> None:
    driver = _rules(render, "fraud-detection-spark-driver")
    assert driver == [
        ("", frozenset({"pods"}), ("create", "get", "list", "watch", "delete", "deletecollection")),
        (
            "",
            frozenset({"configmaps", "persistentvolumeclaims"}),
            ("create", "get", "list", "delete", "deletecollection"),
        ),
        ("", frozenset({"services"}), ("create", "get", "delete")),
    ]
    runner = _rules(render, "fraud-detection-spark-runner")
    assert runner == [("sparkoperator.k8s.io", frozenset({"sparkapplications"}), ("create", "get", "delete"))]
    for obj in _spark_objects(render):
        for rule in obj.get("rules", []):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            assert not {"update", "patch", "escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert "secrets" not in rule["resources"]


def test_role_bindings_name_the_driver_and_the_pipeline_runner(render: Render) -> None:
    objects = render(SPARK)
    driver = k8s.one(objects, "RoleBinding", "fraud-detection-spark-driver")
    assert driver["roleRef"]["name"] == "fraud-detection-spark-driver"
    assert driver["subjects"] == [{"kind": "ServiceAccount", "name": "fraud-detection-spark", "namespace": NAMESPACE}]
    runner = k8s.one(objects, "RoleBinding", "fraud-detection-spark-runner")
    assert runner["roleRef"]["name"] == "fraud-detection-spark-runner"
    assert runner["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor", "namespace": NAMESPACE}]
    # Defaults: the runner ServiceAccount of manifests/ (runs are submitted with it), in the pipeline namespace.
    default = k8s.one(render((), ("spark.enabled=true",)), "RoleBinding", "fraud-detection-spark-runner")
    assert default["subjects"] == [{"kind": "ServiceAccount", "name": "fraud-pipeline-runner", "namespace": "kubeflow"}]


def test_rendered_settings_build_a_spark_application_that_validates_against_the_crd(render: Render) -> None:
    config_map = k8s.one(render(SPARK), "ConfigMap", SPARK_CONFIG_MAP_NAME)  # the name the pipeline mounts
    raw = json.loads(config_map["data"]["settings.json"])
    assert raw["secretName"] == "fraud-s3-credentials" and "AWS_SECRET_ACCESS_KEY" not in json.dumps(raw)
    settings = settings_from_mapping(raw)
    app = build_application(
        application_name("s3://mlpipeline/run"), settings, "s3a://fraud-detection/i.parquet", "s3a://fraud-detection/o"
    )
    assert crd_errors(app) == []
    spec = app["spec"]
    assert spec["image"] == "ghcr.io/fraud-detection/fraud-detection-spark:0.1.0-spark"
    assert (spec["executor"]["instances"], spec["executor"]["cores"], spec["executor"]["memory"]) == (4, 2, "6g")
    assert spec["driver"]["serviceAccount"] == "fraud-detection-spark"
    assert spec["driver"]["nodeSelector"] == {"fraud-detection/pool": "training"}  # pipeline.nodePool
    assert spec["executor"]["tolerations"][0]["value"] == "spot"
    assert spec["hadoopConf"]["fs.s3a.endpoint"] == "http://minio-service.kubeflow.svc:9000"
    assert app["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("spark.enabled=true", "pipeline.enabled=false"), "spark.enabled needs pipeline.enabled"),
        (("spark.enabled=true", "spark.executor.instances=0"), "minimum"),
        (("spark.enabled=true", "spark.executor.memory=lots"), "does not match pattern"),
        (("spark.enabled=true", "spark.runner.serviceAccount="), "does not match pattern"),
        (("spark.enabled=true", "spark.executorMemory=4g"), "additional properties"),
    ],
)
def test_bad_values_are_refused(render: Render, sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(k8s.ToolError) as failure:
        render((), sets)
    assert message in str(failure.value).lower() or message in str(failure.value)


def test_on_aks_the_spark_pods_use_workload_identity_and_no_keys(render: Render) -> None:
    objects = _spark_objects(render, ("values-aks.yaml",), ("spark.enabled=true", "pipeline.enabled=true"))
    assert {k for k, _ in kinds_and_names(objects)} == {k for k, _ in EXPECTED}
    assert k8s.validate_all(objects) == []
    sa = k8s.one(objects, "ServiceAccount", "fraud-detection-spark")
    assert sa["metadata"]["annotations"] == {"azure.workload.identity/client-id": "<pipeline-identity-client-id>"}
    raw = json.loads(k8s.one(objects, "ConfigMap", SPARK_CONFIG_MAP_NAME)["data"]["settings.json"])
    assert raw["secretName"] == "" and raw["s3Endpoint"] == ""  # no store Secret, no S3 endpoint on Azure
    account = "https://fraudsa01.blob.core.windows.net"
    app = build_application(
        application_name("az://models/run"),
        settings_from_mapping(raw),
        spark_uri("az://models/spark/run/input/validated.parquet", account),
        spark_uri("az://models/spark/run/features", account),
    )
    assert crd_errors(app) == []
    spec = app["spec"]
    for pod in (spec["driver"], spec["executor"]):
        assert pod["serviceAccount"] == "fraud-detection-spark"
        assert pod["labels"]["azure.workload.identity/use"] == "true"
        assert [e["name"] for e in pod["env"]] == ["PYTHONUNBUFFERED"]  # no secretKeyRef at all
        assert pod["nodeSelector"] == {"fraud-detection/pool": "training"}  # pipeline.nodePool of values-aks
    assert spec["hadoopConf"]["fs.azure.account.oauth.provider.type"].endswith(".WorkloadIdentityTokenProvider")
