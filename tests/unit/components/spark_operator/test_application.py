"""The feature SparkApplication validates strictly against the Spark Operator's CRD (tests/helpers/sparkapplication.py),
a broken one does not; the settings it is built from are checked field by field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from components.spark_operator.application import (
    application_name,
    build_application,
    spark_uri,
)
from components.spark_operator.settings import SparkSettings, SparkSettingsError, settings_from_mapping
from tests.helpers.sparkapplication import crd_errors

INPUT, OUTPUT = "s3a://fraud/spark/app/input/validated.parquet", "s3a://fraud/spark/app/features"
MINIMAL = SparkSettings(image="registry.example/fraud-spark:1", namespace="kubeflow", service_account="fraud-spark")
FULL_JSON = {
    "image": "myacr.azurecr.io/fraud-detection-spark@sha256:" + "a" * 64,
    "namespace": "spark-jobs",
    "serviceAccount": "fraud-detection-spark",
    "mainApplicationFile": "local:///opt/fraud-detection/spark_features.py",
    "sparkVersion": "4.3.0",
    "imagePullPolicy": "Always",
    "driverCores": 2,
    "driverMemory": "3g",
    "executorCores": 2,
    "executorMemory": "8g",
    "executorInstances": 6,
    "nodeSelector": "fraud-detection/pool=training",
    "toleration": "kubernetes.azure.com/scalesetpriority=spot:NoSchedule",
    "secretName": "fraud-s3-credentials",
    "s3Endpoint": "https://minio.example:9000",
    "timeToLiveSeconds": 600,
    "timeoutSeconds": 3600,
    "pollSeconds": 5,
}


def errors(obj: dict[str, Any]) -> list[str]:
    return crd_errors(obj)


def full() -> dict[str, Any]:
    settings = settings_from_mapping(FULL_JSON)
    return build_application(application_name("s3://mlpipeline/run-1"), settings, INPUT, OUTPUT, 3, "A=amount,B=x")


def test_the_default_application_validates_against_the_crd():
    app = build_application("fraud-features-0123456789ab", MINIMAL, INPUT, OUTPUT)
    assert errors(app) == []
    spec = app["spec"]
    assert (spec["type"], spec["mode"], spec["restartPolicy"]) == ("Python", "cluster", {"type": "Never"})
    assert spec["arguments"] == ["--input", INPUT, "--output", OUTPUT, "--label-delay-days", "7"]
    assert spec["driver"]["serviceAccount"] == spec["executor"]["serviceAccount"] == "fraud-spark"
    assert spec["executor"]["instances"] == 2
    assert "hadoopConf" not in spec  # AWS S3: no endpoint override
    # No store Secret configured: no credentials at all, not even references.
    assert [e["name"] for e in spec["driver"]["env"]] == ["PYTHONUNBUFFERED"]


def test_a_fully_configured_application_validates_and_carries_every_setting():
    app = full()
    assert errors(app) == []
    spec = app["spec"]
    assert app["metadata"]["namespace"] == "spark-jobs"
    assert spec["image"] == FULL_JSON["image"] and spec["imagePullPolicy"] == "Always"
    assert spec["timeToLiveSeconds"] == 600
    assert spec["arguments"][-2:] == ["--column-map", "A=amount,B=x"]
    assert spec["hadoopConf"] == {
        "fs.s3a.endpoint": "https://minio.example:9000",
        "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": "true",
    }
    spot = {
        "key": "kubernetes.azure.com/scalesetpriority",
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    }
    for role, cores, memory in (("driver", 2, "3g"), ("executor", 2, "8g")):
        pod = spec[role]
        assert (pod["cores"], pod["memory"]) == (cores, memory), role
        assert pod["nodeSelector"] == {"fraud-detection/pool": "training"}, role
        assert pod["tolerations"] == [spot], role
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["env"] if "valueFrom" in e}
        assert refs == {
            k: {"name": "fraud-s3-credentials", "key": k, "optional": True}
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        }, role
    assert spec["executor"]["instances"] == 6
    # Store keys only by reference: no literal value of a credential anywhere in the manifest.
    for pod in (spec["driver"], spec["executor"]):
        assert all("value" not in e for e in pod["env"] if e["name"].startswith("AWS_"))


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda a: a["spec"].update(type="Pyspark"), "spec.type: 'Pyspark' is not one of"),
        (lambda a: a["spec"].pop("mainApplicationFile"), "'mainApplicationFile' is a required property"),
        (lambda a: a["spec"]["driver"].update(cpus=2), "Additional properties are not allowed ('cpus'"),
        (lambda a: a["spec"]["executor"].update(instances="two"), "spec.executor.instances: 'two' is not of type"),
        (lambda a: a["spec"].update(restartPolicy={"type": "Sometimes"}), "spec.restartPolicy.type"),
        (lambda a: a["metadata"].update(labelz={}), "metadata.: Additional properties are not allowed"),
    ],
    ids=["wrong-type", "missing-required", "unknown-field", "wrong-kind-of-value", "bad-enum", "bad-metadata"],
)
def test_a_broken_application_is_rejected(breakage, expected):
    app = copy.deepcopy(full())
    breakage(app)
    found = errors(app)
    assert any(expected in e for e in found), found


def test_application_names_are_dns_labels_stable_per_run():
    name = application_name("s3://mlpipeline/v2/artifacts/fraud-training/run-1/build-features/features")
    assert name == application_name("s3://mlpipeline/v2/artifacts/fraud-training/run-1/build-features/features")
    assert name != application_name("s3://mlpipeline/v2/artifacts/fraud-training/run-2/build-features/features")
    assert name.startswith("fraud-features-") and len(name) <= 63
    long = application_name("x", prefix="p" * 80)
    assert len(long) <= 63 and long[-13] == "-"


def test_store_uris_map_to_hadoop_uris_and_a_local_store_is_refused():
    assert spark_uri("s3://fraud/spark/a/features") == "s3a://fraud/spark/a/features"
    assert (
        spark_uri("az://models/spark/a/features", "https://fraudsa01.blob.core.windows.net")
        == "abfss://models@fraudsa01.dfs.core.windows.net/spark/a/features"
    )
    with pytest.raises(ValueError, match="storage account URL"):
        spark_uri("az://models/x")
    with pytest.raises(ValueError, match="must be s3:// or az://"):
        spark_uri("/home/fraud/.fraud/store/spark/a")


def test_settings_are_checked_field_by_field():
    assert settings_from_mapping(FULL_JSON).tolerations[0]["operator"] == "Equal"
    minimal = settings_from_mapping({"image": "i", "namespace": "n", "serviceAccount": "s", "secretName": ""})
    assert minimal == SparkSettings(image="i", namespace="n", service_account="s")
    bad = [
        ({**FULL_JSON, "image": ""}, "missing image"),
        ({**FULL_JSON, "executorInstances": 0}, "executorInstances must be a positive number"),
        ({**FULL_JSON, "driverCores": "2"}, "driverCores must be a positive number"),
        ({**FULL_JSON, "executorMemry": "8g"}, "unknown field(s) executorMemry"),
        ({**FULL_JSON, "nodeSelector": "pool"}, "expected key=value"),
        ({**FULL_JSON, "nodeSelector": ""}, "a toleration needs a nodeSelector"),
        ({**FULL_JSON, "toleration": "k=v:Sometimes"}, "expected key[=value][:Effect]"),
    ]
    for raw, message in bad:
        with pytest.raises(SparkSettingsError) as err:
            settings_from_mapping(raw)
        assert message in str(err.value), (raw, str(err.value))


def test_settings_load_from_the_mounted_file_or_fail_naming_what_to_enable(tmp_path):
    from components.spark_operator.settings import load_settings

    with pytest.raises(SparkSettingsError, match="spark_operator=True"):
        load_settings(tmp_path)
    (tmp_path / "settings.json").write_text(json.dumps(FULL_JSON))
    assert load_settings(tmp_path).executor_instances == 6
    (tmp_path / "settings.json").write_text("[1]")
    with pytest.raises(SparkSettingsError, match="expected a JSON object"):
        load_settings(tmp_path)


def test_an_azure_store_authenticates_with_aks_workload_identity():
    account = "https://fraudsa01.blob.core.windows.net"
    source = spark_uri("az://models/spark/app/input/validated.parquet", account)
    target = spark_uri("az://models/spark/app/features", account)
    app = build_application("fraud-features-0123456789ab", MINIMAL, source, target)
    assert errors(app) == []
    spec = app["spec"]
    assert spec["arguments"][:4] == ["--input", source, "--output", target]
    for pod in (spec["driver"], spec["executor"]):
        assert pod["labels"]["azure.workload.identity/use"] == "true"  # the AKS webhook injects the identity
        assert pod["serviceAccount"] == "fraud-spark"  # the one the chart annotates with the client id
        assert not [e for e in pod["env"] if e["name"].startswith("AWS_")]  # no store Secret on MINIMAL
    conf = spec["hadoopConf"]
    assert conf["fs.azure.account.auth.type"] == "OAuth"
    assert conf["fs.azure.account.oauth.provider.type"] == (
        "org.apache.hadoop.fs.azurebfs.oauth2.WorkloadIdentityTokenProvider"
    )
    assert conf["fs.azure.account.oauth2.client.id"] == "${env.AZURE_CLIENT_ID}"
    assert conf["fs.azure.account.oauth2.msi.tenant"] == "${env.AZURE_TENANT_ID}"
    assert conf["fs.azure.account.oauth2.token.file"] == "${env.AZURE_FEDERATED_TOKEN_FILE}"
    # Nothing identifying or secret in the manifest: only the pods' injected environment is referenced.
    text = json.dumps(app)
    assert "fraudsa01.dfs.core.windows.net" in text
    assert "secret" not in json.dumps(conf).lower()
    assert all(v == "OAuth" or v.startswith(("org.apache.", "${env.AZURE_")) for v in conf.values())


def test_an_s3_store_gets_no_azure_settings():
    app = full()
    spec = app["spec"]
    assert not any(k.startswith("fs.azure.") for k in spec["hadoopConf"])
    assert "azure.workload.identity/use" not in spec["driver"]["labels"]
    assert "azure.workload.identity/use" not in spec["executor"]["labels"]


@pytest.mark.parametrize("bad", [{"fs.azure.account.auth.type": 1}, {"fs.azure.account.auth.type": None}])
def test_a_broken_azure_setting_is_rejected(bad):
    account = "https://fraudsa01.blob.core.windows.net"
    app = build_application(
        "fraud-features-0123456789ab",
        MINIMAL,
        spark_uri("az://models/in.parquet", account),
        spark_uri("az://models/out", account),
    )
    broken = copy.deepcopy(app)
    broken["spec"]["hadoopConf"].update(bad)
    assert errors(broken) != []
