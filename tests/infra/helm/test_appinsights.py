"""Application Insights in the chart: off by default; when on, the predictor and the drift job get the connection
string as a mounted file only (a Secret's key, or Key Vault through the CSI driver with each workload's identity on
AKS), and deploy.yml's values (tools/aks_values.py, from the Bicep outputs) fill every AKS placeholder it touches."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests import k8s
from tests.infra.helm.chart import Render, drift_container, predictor, serve_container

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
FILE_ENV = "FRAUD_APPINSIGHTS_CONNECTION_STRING_FILE"
PLAIN_ENV = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AKS = ("values-aks.yaml",)
SECRET = ("appInsights.enabled=true", "appInsights.existingSecret=fraud-appinsights")


def _load_aks_values() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aks_values", ROOT / "tools" / "aks_values.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("aks_values", module)
    spec.loader.exec_module(module)
    return module


def _env_names(objects: list[dict[str, Any]]) -> set[str]:
    return {env["name"] for t in k8s.pod_templates(objects) for c in t.spec["containers"] for env in c.get("env", [])}


def _volume(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (volume,) = [v for v in spec.get("volumes", []) if v["name"] == name]
    return volume


def _drift_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(k8s.one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"])


def test_off_by_default(render: Render) -> None:
    objects = render()
    names = _env_names(objects)
    assert FILE_ENV not in names and PLAIN_ENV not in names and "OTEL_SERVICE_NAME" not in names
    assert not k8s.find(objects, "SecretProviderClass")
    assert all(v["name"] != "appinsights" for v in predictor(objects).get("volumes", []))


def test_from_an_existing_secret_as_a_file_never_an_env_value(render: Render) -> None:
    objects = render(sets=SECRET)
    assert k8s.validate_all(objects) == []
    for container, pod, service in (
        (serve_container(objects), predictor(objects), "fraud-detection-serve"),
        (drift_container(objects), _drift_pod(objects), "fraud-detection-drift"),
    ):
        env = k8s.env_of(container)
        assert env[FILE_ENV] == "/mnt/secrets/appinsights/connection-string"
        assert env["OTEL_SERVICE_NAME"] == service
        assert PLAIN_ENV not in env
        assert env["APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"] == "true"
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "appinsights"]
        assert mount == {"name": "appinsights", "mountPath": "/mnt/secrets/appinsights", "readOnly": True}
        volume = _volume(pod, "appinsights")
        assert volume["secret"]["secretName"] == "fraud-appinsights"
        assert volume["secret"]["items"] == [{"key": "connection-string", "path": "connection-string"}]
    assert not k8s.find(objects, "Secret")


def test_enabled_without_a_source_fails(render: Render) -> None:
    with pytest.raises(k8s.ToolError, match=r"appInsights\.existingSecret or appInsights\.keyVault\.enabled"):
        render(sets=("appInsights.enabled=true",))


def test_aks_reads_it_from_key_vault_with_each_workload_identity(render: Render) -> None:
    objects = render(AKS)
    classes = {o["metadata"]["name"]: o for o in k8s.find(objects, "SecretProviderClass")}
    assert set(classes) == {"fraud-detection-appinsights", "fraud-detection-drift-appinsights"}
    serving, drift = classes["fraud-detection-appinsights"], classes["fraud-detection-drift-appinsights"]
    assert serving["spec"]["provider"] == "azure"
    assert serving["spec"]["parameters"]["usePodIdentity"] == "false"
    assert serving["spec"]["parameters"]["clientID"] == "<identity-client-id>"
    assert drift["spec"]["parameters"]["clientID"] == "<drift-identity-client-id>"
    assert "objectName: appinsights-connection-string" in serving["spec"]["parameters"]["objects"]
    assert "secretObjects" not in serving["spec"]  # nothing synced into a Kubernetes Secret
    for pod, spc in ((predictor(objects), serving), (_drift_pod(objects), drift)):
        csi = _volume(pod, "appinsights")["csi"]
        assert csi["driver"] == "secrets-store.csi.k8s.io" and csi["readOnly"] is True
        assert csi["volumeAttributes"]["secretProviderClass"] == spc["metadata"]["name"]
    assert k8s.env_of(serve_container(objects))[FILE_ENV] == "/mnt/secrets/appinsights/appinsights-connection-string"


def test_key_vault_needs_the_workload_identity_annotation(render: Render) -> None:
    sets = ("appInsights.enabled=true", "appInsights.keyVault.enabled=true", "appInsights.keyVault.vaultName=kv1",
            "appInsights.keyVault.tenantId=t")  # fmt: skip
    with pytest.raises(k8s.ToolError, match=r"azure\.workload\.identity/client-id annotation on the predictor"):
        render(sets=sets)


def _fake_outputs() -> dict[str, Any]:
    """An output of each name infra/main.bicep declares (so a renamed output breaks this test)."""
    main = (ROOT / "infra" / "main.bicep").read_text()
    names = re.findall(r"^output (\w+) string", main, re.MULTILINE)
    values = {name: f"{name}-value" for name in names}
    values |= {
        "storageBlobEndpoint": "https://stfraud.blob.core.windows.net/",
        "vaultUri": "https://kvfraudprod.vault.azure.net/",
        "tenantId": "11111111-2222-4333-8444-555555555555",
        "redisHostName": "redis-fraud.redis.cache.windows.net",
        "prometheusQueryEndpoint": "https://amw.westeurope.prometheus.monitor.azure.com",
        "appInsightsVaultEntry": "appinsights-connection-string",
    }
    return {name: {"type": "String", "value": value} for name, value in values.items()}


def test_deploy_values_from_the_bicep_outputs_fill_the_aks_placeholders(render: Render, tmp_path: Path) -> None:
    aks_values = _load_aks_values()
    out = tmp_path / "values-deploy.yaml"
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(_fake_outputs()))
    assert aks_values.main(["--outputs", str(outputs), "--registry", "acrfraud.azurecr.io", "--model-version",
                            "20260101-000000-abcd", "--output", str(out)]) == 0  # fmt: skip
    chart_dir = k8s.CHART_DIR
    objects = k8s.helm_template(chart_dir, [chart_dir / "values-aks.yaml", out], ["image.tag=0.1.0-gabc"])
    text = json.dumps(objects)
    for placeholder in ("<registry>", "<identity-client-id>", "<drift-identity-client-id>", "<account>",
                        "<key-vault-name>", "<tenant-id>", "<redis-host>"):  # fmt: skip
        assert placeholder not in text, placeholder
    assert serve_container(objects)["image"] == "acrfraud.azurecr.io/fraud-detection-serve:0.1.0-gabc"
    assert drift_container(objects)["image"] == "acrfraud.azurecr.io/fraud-detection-drift:0.1.0-gabc"
    spc = k8s.one(objects, "SecretProviderClass", "fraud-detection-appinsights")["spec"]["parameters"]
    assert spc["keyvaultName"] == "kvfraudprod" and spc["clientID"] == "servingClientId-value"
    assert "20260101-000000-abcd" in k8s.env_of(serve_container(objects))["STORAGE_URI"]
