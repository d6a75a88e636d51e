"""The REST server's app: which middleware KServe's stack keeps."""

from __future__ import annotations

from fastapi import FastAPI
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from timing_asgi import TimingMiddleware

from serving.rest import FraudRESTServer


def _server() -> FraudRESTServer:
    repository = ModelRepository()
    return FraudRESTServer(
        "kserve.model_server:app",
        DataPlane(model_registry=repository),
        ModelRepositoryExtension(model_registry=repository),
        0,
    )


def test_kserve_request_timing_middleware_is_dropped():
    app = FastAPI()
    _server()._add_middlewares(app)
    assert TimingMiddleware not in [m.cls for m in app.user_middleware]
    assert app.user_middleware == []  # KServe adds nothing else without an access log format
