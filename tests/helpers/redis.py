"""A real Redis server (Debian's redis-server) on a free loopback port, for the online-store tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.net import free_port, stop_process

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class RedisServer:
    """A running redis-server.

    Attributes:
        port: Its loopback port.
        workdir: Its data directory (the append-only file lives there when persistence is on).
        process: The process (None while stopped).
        persistent: Whether it writes an append-only file (fsync on every write).
    """

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None
    persistent: bool

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server on the same port and directory; returns once it answers PING."""
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.workdir)]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("redis-server did not answer PING within 10 s")

    def kill(self) -> None:
        """SIGKILL the server (as a crash would)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        """Stop the server."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@contextmanager
def redis_server(workdir: Path, *, persistent: bool = False) -> Iterator[RedisServer]:
    """A redis-server on a free 127.0.0.1 port, stopped afterwards.

    Args:
        workdir: Data directory.
        persistent: Write an append-only file, fsynced on every write, so a killed server restarts with its data.
    """
    if not Path(REDIS_SERVER).exists():
        pytest.fail(f"{REDIS_SERVER} is missing: run `python3 tools/bootstrap.py` (installs Debian's redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(free_port(), workdir, None, persistent)
    server.start()
    try:
        yield server
    finally:
        server.stop()
