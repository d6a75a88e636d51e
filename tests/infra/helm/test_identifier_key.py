"""The identifier key (FRAUD_IDENTIFIER_KEY, by secretKeyRef only) and the training data (FRAUD_TRAINING_DATA)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import k8s
from tests.infra.helm.chart import ALL_ENABLED, Render, drift_container, serve_container

pytestmark = pytest.mark.integration

KEY = "FRAUD_IDENTIFIER_KEY"
TRAINING = "FRAUD_TRAINING_DATA"
LOG_URI = "FRAUD_PAYLOAD_LOG_URI"
WITH_KEY = ("identifierKey.secretName=hmac-key", "identifierKey.key=hmac")
KEY_REF = {"secretKeyRef": {"name": "hmac-key", "key": "hmac"}}
AKS = ("values-aks.yaml",)
#: Values sets that name no identifier key and no training data.
PLAIN = {
    "default": (),
    "minimal": ("ci/minimal-values.yaml",),
    "canary": ("ci/canary-values.yaml",),
    "raw-deployment": ("ci/raw-deployment-values.yaml",),
    "online-store": ("ci/online-store-values.yaml",),
}


def pipeline_config(objects: list[dict[str, Any]]) -> dict[str, str]:
    return k8s.one(objects, "ConfigMap", "fraud-detection-pipeline")["data"]


def all_env(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        env
        for template in k8s.pod_templates(objects)
        for container in template.spec.get("containers", []) + template.spec.get("initContainers", [])
        for env in container.get("env", [])
    ]


def drift_skips(objects: list[dict[str, Any]]) -> list[str]:
    annotations = k8s.one(objects, "CronJob")["metadata"]["annotations"]
    return [v for k, v in annotations.items() if k.startswith("checkov.io/skip")]


# ------------------------------------------------------------------------------------------- identifier key


@pytest.mark.parametrize("values", PLAIN.values(), ids=PLAIN.keys())
def test_no_identifier_key_unless_named(render: Render, values: tuple[str, ...]) -> None:
    objects = render(values)
    assert KEY not in {env["name"] for env in all_env(objects)}
    for cm in k8s.find(objects, "ConfigMap"):
        assert KEY not in cm.get("data", {}), k8s.describe(cm)


def test_identifier_key_by_secret_key_ref(render: Render) -> None:
    objects = render(sets=WITH_KEY)
    assert k8s.validate_all(objects) == []
    for container in (serve_container(objects), drift_container(objects)):
        (entry,) = [env for env in container["env"] if env["name"] == KEY]
        assert "value" not in entry, f"{container['name']}: {KEY} has a literal value"
        assert entry["valueFrom"] == KEY_REF, container["name"]
    # Only those two containers: the other pods never see it, and the pipeline reads it from its own Secret.
    assert [env["name"] for env in all_env(objects)].count(KEY) == 2
    assert KEY not in pipeline_config(objects)
    assert not k8s.find(objects, "Secret")


def test_identifier_key_default_secret_key(render: Render) -> None:
    objects = render(sets=("identifierKey.secretName=fraud-identifier-key",))
    ref = {"secretKeyRef": {"name": "fraud-identifier-key", "key": KEY}}
    assert k8s.env_of(serve_container(objects))[KEY] == ref
    assert k8s.env_of(drift_container(objects))[KEY] == ref


@pytest.mark.parametrize("values", [AKS, ALL_ENABLED], ids=["aks", "all-enabled"])
def test_identifier_key_in_the_worked_values(render: Render, values: tuple[str, ...]) -> None:
    objects = render(values)
    ref = {"secretKeyRef": {"name": "fraud-identifier-key", "key": KEY}}
    assert k8s.env_of(serve_container(objects))[KEY] == ref
    assert k8s.env_of(drift_container(objects))[KEY] == ref


def test_drift_job_secret_env_suppression_names_the_key(render: Render) -> None:
    """checkov's CKV_K8S_35 (secrets as env) is suppressed exactly when the drift job reads a Secret, with why."""
    no_secrets = ("store.credentials.existingSecret=",)
    assert not [s for s in drift_skips(render(sets=no_secrets)) if s.startswith("CKV_K8S_35=")]
    (only_key,) = [s for s in drift_skips(render(sets=(*no_secrets, *WITH_KEY))) if s.startswith("CKV_K8S_35=")]
    assert KEY in only_key
    (s3_only,) = [s for s in drift_skips(render()) if s.startswith("CKV_K8S_35=")]
    assert "S3" in s3_only and KEY not in s3_only


# ------------------------------------------------------------------------------ training data, payload log


@pytest.mark.parametrize("values", PLAIN.values(), ids=PLAIN.keys())
def test_no_training_data_unless_configured(render: Render, values: tuple[str, ...]) -> None:
    """Nothing to train on is configured by default: the drift job starts no run, `submit` asks for --data."""
    objects = render(values)
    assert TRAINING not in {env["name"] for env in all_env(objects)}
    if k8s.find(objects, "ConfigMap", "fraud-detection-pipeline"):
        assert TRAINING not in pipeline_config(objects)


@pytest.mark.parametrize(
    "data", ["payload-log", "s3://bank-exports/transactions/2025-06/", "/mnt/exports/transactions.parquet"]
)
def test_training_data_in_the_config_map_and_the_drift_job(render: Render, data: str) -> None:
    objects = render(sets=(f"training.data={data}",))
    assert pipeline_config(objects)[TRAINING] == data
    assert k8s.env_of(drift_container(objects))[TRAINING] == data


@pytest.mark.parametrize("values", [AKS, ALL_ENABLED], ids=["aks", "all-enabled"])
def test_worked_values_retrain_on_the_payload_log(render: Render, values: tuple[str, ...]) -> None:
    objects = render(values)
    assert pipeline_config(objects)[TRAINING] == "payload-log"
    assert k8s.env_of(drift_container(objects))[TRAINING] == "payload-log"


def test_payload_log_store_reaches_the_pipeline(render: Render) -> None:
    """The ingest step reads the payload log and labels from the same store as the server and the drift job."""
    assert LOG_URI not in pipeline_config(render())
    objects = render(sets=("store.payloadLogUri=s3://fraud-payload-logs",))
    assert pipeline_config(objects)[LOG_URI] == "s3://fraud-payload-logs"
    assert k8s.env_of(drift_container(objects))[LOG_URI] == "s3://fraud-payload-logs"
    assert k8s.env_of(serve_container(objects))[LOG_URI] == "s3://fraud-payload-logs"
    aks = render(AKS)
    assert pipeline_config(aks)[LOG_URI] == "az://payload-logs"
    assert k8s.env_of(drift_container(aks))[LOG_URI] == "az://payload-logs"


# ------------------------------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("training.data=simulate",), "data"),
        (("training.data=relative/transactions.parquet",), "data"),
        (("training.data=s3://",), "data"),
        (("training.data=az://exports/transactions",), "data"),
        (("training.data=payload-log ",), "data"),
        (("identifierKey.secretName=Not_A_Secret",), "secretName"),
        (("identifierKey.key=",), "key"),
        (("identifierKey.key=a key",), "key"),
        (("identifierKey.value=hunter2",), "value"),
        (
            (*WITH_KEY, "training.data=payload-log", "pipeline.existingSecret="),
            "pipeline.existingSecret",
        ),
    ],
    ids=[
        "simulate", "relative-path", "empty-bucket", "az-not-read-by-ingest", "trailing-space", "bad-secret-name",
        "empty-key", "bad-key", "no-literal-key", "payload-log-without-pipeline-secret",
    ],
)  # fmt: skip
def test_invalid_values_are_rejected(chart: Path, sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(k8s.ToolError, match=message):
        k8s.helm_template(chart, set_values=sets)
