"""`python -m serving` loading from the store (local and S3) by alias or version, refusing tampered bundles, and
flushing its payload log on SIGTERM."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fraud_detection.model.registry import ModelRegistry
from fraud_detection.monitoring.payload_reader import read_payload_log
from fraud_detection.store.local import LocalStore
from fraud_detection.store.uri import open_store
from tests.helpers.net import free_port
from tests.helpers.serving import MODEL, REPO, _clean_env, golden, http, serving_process, stop

pytestmark = pytest.mark.integration
V1 = f"/v1/models/{MODEL}:predict"


def test_loads_an_alias_from_the_local_store_and_flushes_the_payload_log_on_sigterm(tiny_bundle: Path, tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    registry = ModelRegistry(store, MODEL)
    version = registry.publish(tiny_bundle)
    registry.set_alias("production", version)
    args = [
        "--store_uri", str(tmp_path / "store"),
        "--model_ref", "production",
        "--cache_dir", str(tmp_path / "cache"),
        "--payload_log_flush_seconds", "3600",
    ]  # fmt: skip
    with serving_process(args, tmp_path / "logs") as server:
        status, body, _ = http("POST", server.url + V1, {"features": golden("v1_seed.request.json")["features"]})
        assert status == 200 and f'"model_version":"{version}"' in body.decode()
        assert read_payload_log(store, MODEL, datetime(2000, 1, 1), datetime(2100, 1, 1)).empty  # still buffered
        assert stop(server) == 0
        assert "Stopping the model server" in server.log_tail(80)
    now = datetime.now(UTC)
    frame = read_payload_log(store, MODEL, now - timedelta(hours=1), now + timedelta(hours=1))
    assert len(frame) == 1 and frame["model_version"].iloc[0] == version
    assert (tmp_path / "cache" / version / "MANIFEST.json").is_file()


def test_loads_a_version_from_s3(tiny_bundle: Path, tmp_path: Path, s3_server):
    s3 = open_store(
        "s3://models/platform",
        s3_endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    version = ModelRegistry(s3, MODEL).publish(tiny_bundle)
    env = {
        "FRAUD_S3_ENDPOINT": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        # An unsigned test bundle on S3 (signing: tests/integration/test_store_hardening.py).
        "FRAUD_TRUST_UNSIGNED": "true",
    }
    args = ["--store_uri", "s3://models/platform", "--model_ref", version, "--cache_dir", str(tmp_path / "cache")]
    with serving_process(args, tmp_path / "logs", env=env) as server:
        status, body, _ = http("GET", f"{server.url}/v2/models/{MODEL}/ready")
        assert status == 200
        status, body, _ = http("POST", server.url + V1, {"features": golden("v1_seed.request.json")["features"]})
        assert status == 200 and version in body.decode()
    # the payload log went to the same bucket
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not s3.list(f"payload-logs/{MODEL}/"):
        time.sleep(0.2)
    assert s3.list(f"payload-logs/{MODEL}/")


def test_a_tampered_bundle_is_refused_and_nothing_listens(tiny_bundle: Path, tmp_path: Path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    with open(bundle / "model.joblib", "ab") as fh:
        fh.write(b"\0")
    http_port = free_port()
    cmd = [sys.executable, "-m", "serving", "--model_dir", str(bundle), "--host", "127.0.0.1"]
    cmd += ["--http_port", str(http_port), "--grpc_port", str(free_port())]
    proc = subprocess.run(cmd, cwd=REPO, env=_clean_env(None), capture_output=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert b"model.joblib digest" in proc.stderr and b"cannot load the model; not serving" in proc.stderr
    assert not _port_open(http_port)


def test_no_model_source_is_a_usage_error(tmp_path: Path):
    cmd = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--http_port", str(free_port())]
    proc = subprocess.run(cmd, cwd=REPO, env=_clean_env(None), capture_output=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert b"give --model_dir" in proc.stderr


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
