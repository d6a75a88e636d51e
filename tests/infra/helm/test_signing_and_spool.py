"""Bundle signing (FRAUD_VERIFY_KEY from bundleSigning.verifyKey) and the payload-log spool of the predictor."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import k8s
from tests.infra.helm.chart import ALL_ENABLED, VALUE_SETS, Render, drift_container, predictor, serve_container

pytestmark = pytest.mark.integration

VERIFY = "FRAUD_VERIFY_KEY"
SPOOL_DIR = "FRAUD_PAYLOAD_LOG_SPOOL_DIR"
SPOOL_MAX = "FRAUD_PAYLOAD_LOG_SPOOL_MAX_BYTES"
SPOOL_VOLUME = "payload-log-spool"
SPOOL_PATH = "/var/spool/fraud-payload-log"
#: An Ed25519 public key (``fraud keys generate``); public keys are not secret.
PUBLIC_PEM = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAVTN6G1JVi6TySt+AC5/pD+UJpcANfEMSixLVPnRS9ow=
-----END PUBLIC KEY-----
"""
RAW_BASE64 = "VTN6G1JVi6TySt+AC5/pD+UJpcANfEMSixLVPnRS9ow="
#: Shape of a private key PEM only (not a usable key): the chart must refuse it whatever its content.
PRIVATE_PEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA" + "A" * 43 + "\n-----END PRIVATE KEY-----\n"
#: Values sets that set no verify key (every shipped set but all-enabled).
WITHOUT_KEY = {name: values for name, values in VALUE_SETS.items() if values != ALL_ENABLED}
RAW = ("inferenceService.deploymentMode=RawDeployment",)
LOG_OFF = ("inferenceService.payloadLog.enabled=false",)


def values_file(tmp_path: Path, values: dict[str, Any]) -> tuple[str, ...]:
    """A values file in tmp_path (absolute, so the renderer's chart-relative join keeps it as is)."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return (str(path),)


def with_key(tmp_path: Path, key: str = PUBLIC_PEM) -> tuple[str, ...]:
    return values_file(tmp_path, {"bundleSigning": {"verifyKey": key}})


def pipeline_config(objects: list[dict[str, Any]]) -> dict[str, str]:
    return k8s.one(objects, "ConfigMap", "fraud-detection-pipeline")["data"]


def containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        container
        for template in k8s.pod_templates(objects)
        for container in template.spec.get("containers", []) + template.spec.get("initContainers", [])
    ]


def verify_key_sites(objects: list[dict[str, Any]]) -> list[str]:
    """Where FRAUD_VERIFY_KEY is rendered: container names and ConfigMap names."""
    sites = [c["name"] for c in containers(objects) for env in c.get("env", []) if env["name"] == VERIFY]
    sites += [cm["metadata"]["name"] for cm in k8s.find(objects, "ConfigMap") if VERIFY in cm.get("data", {})]
    return sites


def spool_volumes(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in predictor(objects).get("volumes", []) if v["name"] == SPOOL_VOLUME]


def spool_mounts(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in container.get("volumeMounts", []) if m["name"] == SPOOL_VOLUME]


# ---------------------------------------------------------------------------------------------- verify key


@pytest.mark.parametrize("values", WITHOUT_KEY.values(), ids=WITHOUT_KEY.keys())
def test_no_verify_key_by_default(render: Render, values: tuple[str, ...]) -> None:
    assert verify_key_sites(render(values)) == []


def trust_unsigned(objects: list[dict[str, Any]]) -> list[str]:
    """FRAUD_TRUST_UNSIGNED of the predictor, the drift job and the pipeline ConfigMap, in that order."""
    return [
        k8s.env_of(serve_container(objects))["FRAUD_TRUST_UNSIGNED"],
        k8s.env_of(drift_container(objects))["FRAUD_TRUST_UNSIGNED"],
        pipeline_config(objects)["FRAUD_TRUST_UNSIGNED"],
    ]


def test_nothing_unsigned_is_trusted_by_default_with_or_without_a_key(render: Render, tmp_path: Path) -> None:
    assert trust_unsigned(render()) == ["false", "false", "false"]
    assert trust_unsigned(render(with_key(tmp_path))) == ["false", "false", "false"]
    (tmp_path / "development").mkdir()  # another file name: renders are cached by their values files
    development = values_file(tmp_path / "development", {"bundleSigning": {"trustUnsigned": True}})
    assert trust_unsigned(render(development)) == ["true", "true", "true"]


@pytest.mark.parametrize("key", [PUBLIC_PEM, RAW_BASE64], ids=["pem", "raw-base64"])
def test_verify_key_in_predictor_drift_job_and_pipeline(render: Render, tmp_path: Path, key: str) -> None:
    objects = render(with_key(tmp_path, key))
    assert k8s.validate_all(objects) == []
    assert sorted(verify_key_sites(objects)) == sorted(["kserve-container", "drift", "fraud-detection-pipeline"])
    # A literal value (a public key is not secret), the PEM's line breaks kept.
    assert k8s.env_of(serve_container(objects))[VERIFY] == key
    assert k8s.env_of(drift_container(objects))[VERIFY] == key
    assert pipeline_config(objects)[VERIFY] == key
    assert not k8s.find(objects, "Secret")


def test_verify_key_in_every_mode(render: Render, tmp_path: Path) -> None:
    objects = render(with_key(tmp_path), RAW)
    assert k8s.validate_all(objects) == []
    assert k8s.env_of(serve_container(objects))[VERIFY] == PUBLIC_PEM


def test_all_enabled_sets_a_verify_key(render: Render) -> None:
    objects = render(ALL_ENABLED)
    assert sorted(verify_key_sites(objects)) == sorted(["kserve-container", "drift", "fraud-detection-pipeline"])
    assert k8s.env_of(serve_container(objects))[VERIFY].startswith("-----BEGIN PUBLIC KEY-----")


def test_verify_key_follows_the_components(render: Render, tmp_path: Path) -> None:
    off = ("inferenceService.enabled=false", "drift.enabled=false")
    assert verify_key_sites(render(with_key(tmp_path), off)) == ["fraud-detection-pipeline"]


@pytest.mark.parametrize("key", [PRIVATE_PEM, "not a key"], ids=["private-key", "garbage"])
def test_a_private_key_or_garbage_is_refused(render: Render, tmp_path: Path, key: str) -> None:
    with pytest.raises(k8s.ToolError):
        render(with_key(tmp_path, key))


# ---------------------------------------------------------------------------------------------------- spool


@pytest.mark.parametrize("sets", [(), RAW], ids=["serverless", "raw-deployment"])
def test_spool_with_the_payload_log(render: Render, sets: tuple[str, ...]) -> None:
    objects = render(sets=sets)
    assert k8s.validate_all(objects) == []
    (volume,) = spool_volumes(objects)
    assert volume == {"name": SPOOL_VOLUME, "emptyDir": {"sizeLimit": "512Mi"}}
    container = serve_container(objects)
    assert spool_mounts(container) == [{"name": SPOOL_VOLUME, "mountPath": SPOOL_PATH}]
    env = k8s.env_of(container)
    assert env[SPOOL_DIR] == SPOOL_PATH
    assert env[SPOOL_MAX] == str(256 * 2**20)
    assert env["FRAUD_PAYLOAD_LOG_ENABLED"] == "true"
    # Only the model server spools.
    assert spool_mounts(drift_container(objects)) == []
    assert SPOOL_DIR not in k8s.env_of(drift_container(objects))


def test_no_spool_without_the_payload_log(render: Render) -> None:
    objects = render(sets=LOG_OFF)
    assert k8s.validate_all(objects) == []
    assert spool_volumes(objects) == []
    container = serve_container(objects)
    assert spool_mounts(container) == []
    assert not {SPOOL_DIR, SPOOL_MAX} & set(k8s.env_of(container))
    assert k8s.env_of(container)["FRAUD_PAYLOAD_LOG_ENABLED"] == "false"
    # /tmp stays.
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]


def test_spool_size_from_the_values(render: Render) -> None:
    objects = render(
        sets=(
            "inferenceService.payloadLog.spool.sizeLimit=2Gi",
            "inferenceService.payloadLog.spool.maxBytes=1073741824",
        )
    )
    assert k8s.validate_all(objects) == []
    (volume,) = spool_volumes(objects)
    assert volume["emptyDir"] == {"sizeLimit": "2Gi"}
    assert k8s.env_of(serve_container(objects))[SPOOL_MAX] == "1073741824"


@pytest.mark.parametrize(
    "sets",
    [
        ("inferenceService.payloadLog.spool.sizeLimit=256Mi",),  # not above the 256 MiB cap
        ("inferenceService.payloadLog.spool.maxBytes=1073741824",),  # cap above the default 512Mi
        ("inferenceService.payloadLog.spool.sizeLimit=lots",),
    ],
    ids=["limit-equals-cap", "cap-above-limit", "not-a-quantity"],
)
def test_spool_limit_must_exceed_the_cap(render: Render, sets: tuple[str, ...]) -> None:
    with pytest.raises(k8s.ToolError):
        render(sets=sets)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_spool_in_every_values_set(render: Render, values: tuple[str, ...]) -> None:
    objects = render(values)
    if not k8s.find(objects, "InferenceService"):
        return
    container = serve_container(objects)
    logging = k8s.env_of(container)["FRAUD_PAYLOAD_LOG_ENABLED"] == "true"
    assert bool(spool_volumes(objects)) is logging
    assert (k8s.env_of(container).get(SPOOL_DIR) == SPOOL_PATH) is logging


# ---------------------------------------------------------------------------------------------------- notes


def notes(chart: Path, dest: Path, values: tuple[str, ...] = ()) -> str:
    """NOTES.txt as rendered (helm template skips it, and helm install --dry-run needs a cluster): a copy of the
    chart renders it into a ConfigMap through a named template."""
    copy = dest / "chart"
    shutil.copytree(chart, copy)
    text = (copy / "templates" / "NOTES.txt").read_text()
    (copy / "templates" / "_notes_probe.tpl").write_text('{{- define "notes-probe" -}}\n' + text + "{{- end }}\n")
    (copy / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-probe\n"
        'data:\n  notes: {{ include "notes-probe" . | quote }}\n'
    )
    objects = k8s.helm_template(copy, [chart / v for v in values])
    return str(k8s.one(objects, "ConfigMap", "notes-probe")["data"]["notes"])


def test_notes_say_nothing_loads_without_a_verify_key(chart: Path, tmp_path: Path) -> None:
    note = "NOTE: bundleSigning.verifyKey is not set, so the predictor, the drift job and the pipeline refuse every"
    assert note in " ".join(notes(chart, tmp_path / "without").split())
    assert note not in " ".join(notes(chart, tmp_path / "with", with_key(tmp_path)).split())
