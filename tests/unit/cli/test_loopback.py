"""The loopback helpers shared by ``make run``, the benchmarks and the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli.loopback import free_port, http_ok, stop_process, wait_ready


def test_a_free_port_is_not_answering_and_a_server_on_it_becomes_ready(tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    assert not http_ok(url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(proc, url, name="http.server", log_path=tmp_path / "log", timeout=30)
        assert http_ok(url)
    finally:
        code = stop_process(proc)
    assert proc.poll() is not None
    assert code == proc.returncode


def test_a_server_that_exits_before_ready_is_reported_with_its_log(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match=r"broken did not become ready; see .*server\.log"):
        wait_ready(
            proc, f"http://127.0.0.1:{free_port()}/", name="broken", log_path=tmp_path / "server.log", timeout=30
        )
    assert stop_process(proc) == 3
