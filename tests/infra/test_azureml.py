"""The Azure ML managed online endpoint (infra/azureml/) runs the same serve image as AKS: its routes, port, model
directory and model name must match the image (the Dockerfile's serve stage) and the runtime contract in
docs/METRICS.md; the autoscale setting keeps the original project's rule (min 2, max 10, 70 % CPU)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AZUREML = ROOT / "infra" / "azureml"
DOCKERFILE = ROOT / "Dockerfile"
MODEL_NAME = "fraud-detector"


def _yaml(name: str) -> dict[str, Any]:
    data = yaml.safe_load((AZUREML / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def endpoint() -> dict[str, Any]:
    return _yaml("endpoint.yml")


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return _yaml("deployment.yml")


# --- the serve image, read from the Dockerfile -------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def _exec_form(args: str) -> list[str]:
    if args.startswith("["):
        value = json.loads(args)
        assert isinstance(value, list)
        return [str(v) for v in value]
    return shlex.split(args)


def parse_stage(text: str, target: str) -> dict[str, Any]:
    """EXPOSE ports, ENTRYPOINT and CMD of one build stage, following `FROM <stage>` to inherit from parents."""
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for keyword, args in _instructions(text):
        if keyword == "FROM":
            parts = args.split()
            base = next(p for p in parts if not p.startswith("--"))
            name = parts[-1].lower() if len(parts) >= 3 and parts[-2].upper() == "AS" else ""
            parent = stages.get(base.lower())
            current = {
                "expose": set(parent["expose"]) if parent else set(),
                "entrypoint": parent["entrypoint"] if parent else None,
                "cmd": parent["cmd"] if parent else None,
            }
            if name:
                stages[name] = current
        elif current is None:
            continue
        elif keyword == "EXPOSE":
            current["expose"] |= {int(p.split("/")[0]) for p in args.split()}
        elif keyword == "ENTRYPOINT":
            current["entrypoint"] = _exec_form(args)
            current["cmd"] = None  # a new ENTRYPOINT resets an inherited CMD
        elif keyword == "CMD":
            current["cmd"] = _exec_form(args)
    assert target in stages, f"no stage named {target!r} in the Dockerfile"
    return stages[target]


def _option(argv: list[str], name: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _dockerfile_tracked() -> bool:
    proc = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "Dockerfile"], cwd=ROOT, capture_output=True, check=False
    )
    return proc.returncode == 0


@pytest.fixture(scope="module")
def serve_stage() -> dict[str, Any]:
    if not DOCKERFILE.exists():
        if _dockerfile_tracked():
            pytest.fail("the Dockerfile is tracked in git but missing from the work tree")
        pytest.skip("no Dockerfile yet: the serve image contract is checked against docs/METRICS.md only")
    return parse_stage(DOCKERFILE.read_text(encoding="utf-8"), "serve")


def test_stage_parser_follows_parents_and_exec_forms() -> None:
    text = (
        "FROM python:3.11 AS base\nEXPOSE 9000\n"
        "FROM base AS serve\nEXPOSE 8080 \\\n  8081/tcp\n"
        'ENTRYPOINT ["python", "-m", "serving"]\nCMD ["--model_dir", "/mnt/models"]\n'
        "FROM base AS other\nENTRYPOINT python -m other\n"
    )
    serve = parse_stage(text, "serve")
    assert serve["expose"] == {9000, 8080, 8081}
    assert serve["entrypoint"] == ["python", "-m", "serving"]
    assert _option(serve["cmd"], "--model_dir") == "/mnt/models"
    assert parse_stage(text, "other")["entrypoint"] == ["python", "-m", "other"]
    with pytest.raises(AssertionError):
        parse_stage(text, "missing")


def test_serve_image_runs_the_serving_module(serve_stage: dict[str, Any]) -> None:
    argv = [*(serve_stage["entrypoint"] or []), *(serve_stage["cmd"] or [])]
    assert argv[:3] == ["python", "-m", "serving"], argv
    assert _option(argv, "--model_name") == MODEL_NAME


def test_deployment_port_is_exposed_by_the_serve_image(serve_stage: dict[str, Any], deployment: dict[str, Any]) -> None:
    routes = deployment["environment"]["inference_config"]
    ports = {route["port"] for route in routes.values()}
    assert ports <= serve_stage["expose"], (ports, serve_stage["expose"])
    argv = [*(serve_stage["entrypoint"] or []), *(serve_stage["cmd"] or [])]
    http_port = _option(argv, "--http_port")
    if http_port is not None:
        assert ports == {int(http_port)}


def test_model_is_mounted_where_the_server_reads_it(serve_stage: dict[str, Any], deployment: dict[str, Any]) -> None:
    argv = [*(serve_stage["entrypoint"] or []), *(serve_stage["cmd"] or [])]
    assert deployment["model_mount_path"] == _option(argv, "--model_dir")


# --- the runtime contract in docs/METRICS.md ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve_contract() -> str:
    text = (ROOT / "docs" / "METRICS.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `serve`"))
    return row


def test_contract_row_matches_the_deployment(serve_contract: str, deployment: dict[str, Any]) -> None:
    assert "python -m serving" in serve_contract
    assert f"--model_name {MODEL_NAME}" in serve_contract
    model_dir = re.search(r"--model_dir (\S+?)`", serve_contract)
    assert model_dir and deployment["model_mount_path"] == model_dir.group(1)
    http_port = re.search(r"HTTP (\d+)", serve_contract)
    assert http_port
    routes = deployment["environment"]["inference_config"]
    assert {route["port"] for route in routes.values()} == {int(http_port.group(1))}
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/<name>/infer"):
        assert path in serve_contract


def test_routes_are_the_v2_protocol_routes_of_the_model(deployment: dict[str, Any]) -> None:
    routes = deployment["environment"]["inference_config"]
    assert routes["liveness_route"]["path"] == "/v2/health/live"
    assert routes["readiness_route"]["path"] == "/v2/health/ready"
    assert routes["scoring_route"]["path"] == f"/v2/models/{MODEL_NAME}/infer"
    assert routes["liveness_route"]["port"] == routes["readiness_route"]["port"] == routes["scoring_route"]["port"]


def test_routes_match_the_api_management_operations(deployment: dict[str, Any]) -> None:
    apim = (ROOT / "infra" / "modules" / "apim.bicep").read_text(encoding="utf-8")
    assert f"param modelName string = '{MODEL_NAME}'" in apim
    scoring = deployment["environment"]["inference_config"]["scoring_route"]["path"]
    assert scoring.replace(MODEL_NAME, "${modelName}") in apim
    assert deployment["environment"]["inference_config"]["readiness_route"]["path"] in apim


# --- endpoint, image, scaling ------------------------------------------------------------------------------------


def test_endpoint_uses_key_auth(endpoint: dict[str, Any], deployment: dict[str, Any]) -> None:
    assert endpoint["auth_mode"] == "key"
    assert endpoint["name"] == deployment["endpoint_name"] == MODEL_NAME
    assert "managedOnlineEndpoint" in endpoint["$schema"]
    assert "managedOnlineDeployment" in deployment["$schema"]


def test_deployment_runs_the_serve_image_from_acr(deployment: dict[str, Any]) -> None:
    image = deployment["environment"]["image"]
    assert ".azurecr.io/" in image
    assert image.split("/")[-1].split(":")[0] == "fraud-detection-serve"
    assert deployment["environment_variables"]["FRAUD_MODEL_NAME"] == MODEL_NAME
    assert deployment["model"].startswith(f"azureml:{MODEL_NAME}:")


def test_instance_count_starts_at_the_autoscale_minimum(deployment: dict[str, Any]) -> None:
    assert deployment["instance_count"] == 2
    assert deployment["scale_settings"]["type"] == "default"


def _bicep_default(text: str, name: str) -> int:
    match = re.search(rf"^param {name} int = (\d+)$", text, re.MULTILINE)
    assert match, name
    return int(match.group(1))


def test_autoscale_keeps_min_2_max_10_at_70_percent_cpu() -> None:
    text = (AZUREML / "autoscale.bicep").read_text(encoding="utf-8")
    assert _bicep_default(text, "minInstances") == 2
    assert _bicep_default(text, "maxInstances") == 10
    assert _bicep_default(text, "targetCpuPercent") == 70
    assert "minimum: string(minInstances)" in text and "maximum: string(maxInstances)" in text
    assert "metricName: 'CpuUtilizationPercentage'" in text
    assert re.search(r"operator: 'GreaterThan'\s+threshold: targetCpuPercent", text)
    assert "targetResourceUri: deployment.id" in text
    assert "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments@" in text
