"""The images built without Docker or a registry (tools/images_local.py): a Debian base made by mmdebstrap, the
Dockerfile's targets built on it with podman, and the serve image answering a v2 infer on 127.0.0.1.

The build test is marked ``images`` (deselected by default; ``make test-images``): it installs podman, mmdebstrap
and runc when missing and takes a few minutes. The command-line checks below run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("images_local", ROOT / "tools" / "images_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("images_local", module)
    spec.loader.exec_module(module)
    return module


images_local = _load_tool()


def test_build_uses_the_local_base_through_the_dockerfile_build_arg(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(images_local, "run", lambda cmd, **_: calls.append(list(cmd)))
    images_local.build_target("serve", images_local.BASE_IMAGE, "localhost/x:1", Path("/etc/ca.crt"))
    (cmd,) = calls
    assert cmd[0] == "podman" and "build" in cmd
    assert cmd[cmd.index("--build-arg") + 1] == f"PYTHON_IMAGE={images_local.BASE_IMAGE}"
    assert cmd[cmd.index("--target") + 1] == "serve"
    # The host CA bundle reaches the RUN steps read-only, as a volume (never a layer).
    assert "/etc/ca.crt:/etc/ssl/certs/ca-certificates.crt:ro" in cmd
    # The Dockerfile keeps the public base by default: the local one is only a build argument.
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in (ROOT / "Dockerfile").read_text()


def test_limits_passed_to_containers_are_never_above_the_current_ones() -> None:
    import resource

    flags = images_local.ulimit_flags()
    values = dict(flags[i + 1].split("=") for i in range(0, len(flags), 2))
    soft, hard = (int(v) for v in values["nofile"].split(":"))
    assert (soft, hard) == resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = int(values["nproc"].split(":")[1])
    assert nproc <= resource.getrlimit(resource.RLIMIT_NPROC)[1]


@pytest.mark.images
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_serve_image_built_on_debian_answers_a_v2_infer(tiny_bundle: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "images_local.py"),
            "--install-tools",
            "--targets",
            "serve",
            "--bundle",
            str(tiny_bundle),
            "--workdir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["images"]["serve"].startswith("localhost/fraud-detection-serve:")
    outputs = {o["name"]: o for o in result["infer"]["outputs"]}
    assert outputs["fraud_score"]["datatype"] == "FP32" and outputs["fraud_score"]["shape"] == [1]
    assert 0.0 <= outputs["fraud_score"]["data"][0] <= 1.0
    assert outputs["is_fraud"]["datatype"] == "BOOL"
    # The container served the mounted bundle, not something baked into the image.
    assert result["infer"]["model_version"] == json.loads((tiny_bundle / "metadata.json").read_text())["version"]
