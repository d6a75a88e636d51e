"""Turn the Bicep deployment's outputs into the chart's environment values for AKS (deploy.yml).

    az deployment sub show --name fraud-prod --query properties.outputs -o json > outputs.json
    python tools/aks_values.py --outputs outputs.json --registry myacr.azurecr.io --output values-deploy.yaml

The result (JSON, which Helm reads as YAML) fills every placeholder of helm/fraud-detection/values-aks.yaml that an
output answers: workload identity client IDs, Blob storage, Redis, the Prometheus query endpoint, the Key Vault that
holds the Application Insights connection string, the image registry and the model version. The outputs carry no
secret (tests/infra/test_bicep.py checks every output), so neither does the file. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

WORKLOAD_IDENTITY = "azure.workload.identity/client-id"


def _output(outputs: dict[str, Any], name: str) -> str:
    try:
        value = outputs[name]["value"]
    except KeyError as exc:
        raise SystemExit(f"the deployment has no output {name!r}: is it infra/main.bicep's?") from exc
    if not isinstance(value, str) or not value:
        raise SystemExit(f"output {name!r} is empty")
    return value


def values_from_outputs(outputs: dict[str, Any], registry: str, model_version: str = "") -> dict[str, Any]:
    """The chart values the infrastructure decides.

    Args:
        outputs: ``properties.outputs`` of the subscription deployment of infra/main.bicep.
        registry: Image registry (ACR login server or ghcr.io/<owner>).
        model_version: Model version to serve; empty leaves the chart's (or the release's) value.

    Returns:
        The values.
    """
    blob = _output(outputs, "storageBlobEndpoint").rstrip("/")
    vault_host = urlsplit(_output(outputs, "vaultUri")).netloc
    values: dict[str, Any] = {
        "image": {"registry": registry},
        "serviceAccount": {"annotations": {WORKLOAD_IDENTITY: _output(outputs, "servingClientId")}},
        "inferenceService": {"storageRoot": f"{blob}/models"},
        "store": {"azure": {"accountUrl": blob}},
        "drift": {"serviceAccount": {"annotations": {WORKLOAD_IDENTITY: _output(outputs, "driftClientId")}}},
        "rollout": {
            "prometheusUrl": _output(outputs, "prometheusQueryEndpoint"),
            "serviceAccount": {"annotations": {WORKLOAD_IDENTITY: _output(outputs, "rolloutClientId")}},
        },
        "onlineStore": {"url": f"rediss://{_output(outputs, 'redisHostName')}:6380/0"},
        "appInsights": {
            "enabled": True,
            "keyVault": {
                "enabled": True,
                "vaultName": vault_host.split(".", 1)[0],
                "tenantId": _output(outputs, "tenantId"),
                "secretName": _output(outputs, "appInsightsVaultEntry"),
            },
        },
    }
    if model_version:
        values["model"] = {"version": model_version}
    return values


def main(argv: list[str] | None = None) -> int:
    """Write the values file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", type=Path, required=True, help="JSON of the deployment's outputs")
    parser.add_argument("--registry", required=True, help="image registry")
    parser.add_argument("--model-version", default="", help="model version to serve (empty: keep)")
    parser.add_argument("--output", type=Path, required=True, help="values file to write")
    args = parser.parse_args(argv)
    outputs = json.loads(args.outputs.read_text(encoding="utf-8"))
    values = values_from_outputs(outputs, args.registry, args.model_version)
    args.output.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
