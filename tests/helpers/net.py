"""Loopback helpers for tests: free ports, readiness polling with a deadline, stopping server processes.

The port, readiness and stop helpers are the package's own (:mod:`cli.loopback`, also used by
``make run`` and the benchmarks); ``wait_until`` polls any condition.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cli.loopback import free_port, http_ok, stop_process

__all__ = ["free_port", "http_ok", "stop_process", "wait_until"]


def wait_until(
    check: Callable[[], bool], timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
) -> None:
    """Poll ``check`` until it returns True or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last error: {last_error})")
