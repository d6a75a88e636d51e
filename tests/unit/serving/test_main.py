"""``python -m serving``'s entry point: what it does between loading the model and serving."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from serving.__main__ import main as serving_main


def test_the_loaded_server_is_frozen_out_of_the_collector_before_it_serves(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
):
    seen: dict[str, Any] = {}

    def start(self: Any, models: list[Any]) -> None:
        seen["frozen"] = gc.get_freeze_count()
        seen["model_frozen"] = any(o is models[0] for o in gc.get_objects()) is False
        seen["ready"] = models[0].ready

    monkeypatch.setattr("serving.server.FraudModelServer.start", start)
    monkeypatch.setattr("serving.__main__.configure_logging", lambda *args, **kwargs: None)
    gc.unfreeze()
    try:
        code = serving_main(
            ["--model_dir", str(tiny_bundle), "--trust_unsigned", "--payload_log", "off", "--host", "127.0.0.1"]
        )
    finally:
        gc.unfreeze()
    assert code == 0
    assert seen["ready"]
    # the model (and everything loaded with it) sits in the permanent generation, which collections never scan
    assert seen["frozen"] > 10_000
    assert seen["model_frozen"]


def test_an_access_log_format_without_its_optional_package_is_a_one_line_error_not_a_traceback(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr("serving.__main__.configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr("serving.server.FraudModelServer.start", lambda self, models: pytest.fail("started"))
    code = serving_main(["--model_dir", str(tiny_bundle), "--trust_unsigned", "--access_log_format", "%(h)s %(r)s"])
    assert code == 2
    assert "--access_log_format needs the asgi-logger package" in caplog.text
