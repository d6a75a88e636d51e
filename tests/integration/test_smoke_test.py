"""tools/smoke_test.py, the check deploy.yml runs after installing the chart, against a real model server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.net import free_port
from tests.helpers.serving import MODEL, serving_process

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "smoke_test.py"


def _smoke(url: str, timeout: str = "60") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--url", url, "--model", MODEL, "--timeout", timeout],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_passes_on_a_ready_server_with_one_scored_row(tiny_bundle: Path, tmp_path: Path) -> None:
    with serving_process(["--model_dir", str(tiny_bundle)], tmp_path) as server:
        proc = _smoke(server.url)
    assert proc.returncode == 0, proc.stderr
    response = json.loads(proc.stdout.strip().splitlines()[-1])
    assert response["id"] == "smoke-test"
    assert response["model_version"] == json.loads((tiny_bundle / "metadata.json").read_text())["version"]


def test_fails_with_one_line_when_nothing_answers() -> None:
    proc = _smoke(f"http://127.0.0.1:{free_port()}", timeout="2")
    assert proc.returncode == 1
    assert "smoke test failed: /v2/health/ready: no answer" in proc.stderr


def test_fails_on_an_unknown_model(tiny_bundle: Path, tmp_path: Path) -> None:
    with serving_process(["--model_dir", str(tiny_bundle)], tmp_path) as server:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--url", server.url, "--model", "no-such-model", "--timeout", "3"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1
    assert "/v2/models/no-such-model/ready" in proc.stderr
