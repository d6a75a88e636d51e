"""Local server processes on 127.0.0.1: free ports, readiness with a deadline, and a clean stop.

Used by ``fraud demo`` (``make run``), the serving benchmark and the tests, which all start ``python -m serving``
(or another server) as a child process on a free loopback port.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str) -> bool:
    """Whether a GET of ``url`` answers 200 (connection errors and timeouts count as not ready).

    Args:
        url: The URL, e.g. a readiness endpoint.

    Returns:
        True on HTTP 200.
    """
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_ready(proc: subprocess.Popen[bytes], ready_url: str, *, name: str, log_path: Path, timeout: float) -> None:
    """Wait until a server process answers 200 on its readiness URL.

    Args:
        proc: The server process.
        ready_url: Its readiness endpoint.
        name: How the error names the server.
        log_path: The server's log, named in the error.
        timeout: Seconds to wait.

    Raises:
        RuntimeError: The process exited or the deadline passed first.
    """
    deadline = time.monotonic() + timeout
    while not http_ok(ready_url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not become ready; see {log_path}")
        time.sleep(0.3)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM a server process and wait for it; SIGKILL it after ``timeout``.

    Args:
        proc: The process.
        timeout: Seconds to wait after SIGTERM.

    Returns:
        Its exit code.
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)
