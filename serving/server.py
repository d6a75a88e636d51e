"""KServe ModelServer glue: bind address, per-protocol metrics, 400s for malformed bodies, clients without Content-Type.

KServe 0.21's ``ModelServer`` always listens on all interfaces (``0.0.0.0`` for REST, ``[::]`` for gRPC), returns
422 for a v2 body that fails schema validation, 500 for some malformed binary bodies, and 400 for a JSON v2 body
sent without a ``Content-Type`` header (what ``tritonclient``'s HTTP client does). :class:`FraudModelServer` keeps
KServe's routes, data plane and gRPC servicer, and adds:

* a bind host (loopback by default, see ``serving/__main__.py``);
* :class:`ScoringHTTPMiddleware`: treats a v2 infer body without the binary extension's header as JSON whatever
  its Content-Type (tritonclient sends none), and records request count, latency and errors by protocol;
* :class:`TolerantDataPlane`: turns any decoding failure of a malformed body into ``InvalidInput`` (400);
* a handler mapping FastAPI's ``RequestValidationError`` (422) to 400 with a message naming the field;
* :class:`MeteredInferenceServicer`: the same metrics for gRPC ``ModelInfer``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent import futures
from typing import Any

import kserve.model_server
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from grpc import aio
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ServerNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.server import RESTServer

from serving.model import FraudModel

LOG = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_INFERENCE_HEADER = b"inference-header-content-length"


def scoring_protocol(method: str, path: str) -> str | None:
    """The ``protocol`` label of a scoring request, or None for other routes.

    Args:
        method: HTTP method.
        path: URL path.

    Returns:
        ``v2_rest``, ``v1_rest`` or None.
    """
    if method != "POST":
        return None
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "v2_rest"
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        return "v1_rest"
    return None


def error_kind(status: int) -> str | None:
    """The ``kind`` label of a failed request from its HTTP status.

    Args:
        status: HTTP status code.

    Returns:
        ``not_found`` (404), ``validation`` (other 4xx), ``unavailable`` (503), ``internal`` (other 5xx) or None for
        success.
    """
    if status < 400:
        return None
    if status == 404:
        return "not_found"
    if status == 503:
        return "unavailable"
    return "validation" if status < 500 else "internal"


class ScoringHTTPMiddleware:
    """Pure ASGI middleware for the scoring routes (other routes pass through untouched).

    Args:
        app: The wrapped ASGI app.
        model: The served model (its bound metrics are used once it is loaded).
    """

    def __init__(self, app: ASGIApp, model: FraudModel) -> None:
        self.app = app
        self.model = model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call.

        Args:
            scope: ASGI scope.
            receive: ASGI receive.
            send: ASGI send.
        """
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        protocol = scoring_protocol(scope.get("method", ""), scope.get("path", ""))
        if protocol is None:
            await self.app(scope, receive, send)
            return
        if protocol == "v2_rest":
            scope = _as_json_unless_binary(scope)
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 500))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics = self.model.bound_metrics
            if metrics is not None:
                metrics.request(protocol, time.perf_counter() - start, error_kind(status))


def _as_json_unless_binary(scope: Scope) -> Scope:
    """Mark a v2 infer body as JSON unless it uses the binary tensor extension.

    Without the extension's ``Inference-Header-Content-Length`` header the body can only be JSON, whatever its
    Content-Type says: tritonclient sends none, curl sends a form type. FastAPI would otherwise hand KServe raw
    bytes, which KServe rejects.

    Args:
        scope: ASGI scope of the request.

    Returns:
        The scope, with ``content-type: application/json`` when it needed one.
    """
    headers = scope.get("headers", [])
    content_type = b""
    for name, value in headers:
        lowered = name.lower()
        if lowered == _INFERENCE_HEADER:
            return scope
        if lowered == b"content-type":
            content_type = value.lower()
    if b"json" in content_type:
        return scope
    scope = dict(scope)
    scope["headers"] = [(n, v) for n, v in headers if n.lower() != b"content-type"]
    scope["headers"].append((b"content-type", b"application/json"))
    return scope


async def validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """Answer a body that fails the v2 request schema with 400 (FastAPI's default is 422), naming the field.

    Args:
        _: The request.
        exc: The ``RequestValidationError``.

    Returns:
        A 400 response ``{"error": ...}``.
    """
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    message = "invalid request body: " + ("; ".join(parts) if parts else str(exc))
    return JSONResponse(status_code=400, content={"error": message})


class TolerantDataPlane(DataPlane):
    """KServe's data plane: malformed bodies are a 400, and readiness follows the models' health.

    Any failure to decode a body is reported as ``InvalidInput``. Server readiness (``/v2/health/ready``, the chart's
    readiness probe) requires every model healthy, so a replica whose online feature store is down leaves the
    Service until the store is back.
    """

    async def ready(self) -> bool:
        """Server ready: KServe's check, and every model healthy (loaded, its online store answering).

        Returns:
            Whether the server can serve.
        """
        if not await super().ready():
            return False
        models = self._model_registry.get_models().values()
        return all([await model.healthy() for model in models])

    def decode(  # type: ignore[no-untyped-def]
        self, body, headers, protocol_version: str = "v1", model_name: str | None = None
    ):
        """Decode a request body; see ``DataPlane.decode``.

        Args:
            body: Raw or parsed body.
            headers: Request headers.
            protocol_version: ``v1`` or ``v2``.
            model_name: Target model.

        Returns:
            (decoded request, attributes).

        Raises:
            InvalidInput: The body cannot be decoded.
        """
        try:
            return super().decode(body, headers, protocol_version=protocol_version, model_name=model_name)
        except InvalidInput:
            raise
        except Exception as exc:  # decoding only reads the body: whatever fails here is the body's fault
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise InvalidInput(f"malformed inference request: {detail}") from exc


def grpc_error_kind(exc: BaseException) -> str:
    """The ``kind`` label of an exception raised while serving a gRPC inference.

    Args:
        exc: The exception.

    Returns:
        ``validation``, ``not_found``, ``unavailable`` or ``internal``.
    """
    if isinstance(exc, InvalidInput | InferenceError):
        return "validation"
    if isinstance(exc, ServerNotReady):
        return "unavailable"
    if isinstance(exc, ModelNotFound):
        return "not_found"
    return "internal"


class MeteredInferenceServicer(InferenceServicer):
    """KServe's gRPC servicer, recording ModelInfer requests, latency and errors (``protocol=v2_grpc``).

    Args:
        data_plane: The data plane.
        model_repository_extension: KServe's repository extension.
        model: The served model.
    """

    def __init__(self, data_plane: DataPlane, model_repository_extension: Any, model: FraudModel) -> None:
        super().__init__(data_plane, model_repository_extension)
        self._model = model

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        """Run one inference; see ``InferenceServicer.ModelInfer``.

        Args:
            request: ``ModelInferRequest``.
            context: gRPC context.

        Returns:
            ``ModelInferResponse``.
        """
        start = time.perf_counter()
        kind: str | None = None
        try:
            return await super().ModelInfer(request, context)
        except BaseException as exc:
            kind = grpc_error_kind(exc)
            raise
        finally:
            metrics = self._model.bound_metrics
            if metrics is not None:
                metrics.request("v2_grpc", time.perf_counter() - start, kind)


class BoundGRPCServer(GRPCServer):
    """KServe's gRPC server on a chosen host, with the metered servicer and without per-call INFO logging.

    Args:
        host: Bind address.
        port: Port.
        data_plane: The data plane.
        model_repository_extension: KServe's repository extension.
        model: The served model.
        kwargs: KServe arguments (message size limits).
        grace_period: Seconds to drain on stop.
    """

    def __init__(
        self,
        host: str,
        port: int,
        data_plane: DataPlane,
        model_repository_extension: Any,
        model: FraudModel,
        kwargs: dict[str, Any],
        grace_period: int = 30,
    ) -> None:
        super().__init__(port, data_plane, model_repository_extension, kwargs=kwargs, grace_period=grace_period)
        self._host = host
        self._model = model

    @property
    def address(self) -> str:
        """``host:port`` to bind (IPv6 hosts in brackets)."""
        host = f"[{self._host}]" if ":" in self._host and not self._host.startswith("[") else self._host
        return f"{host}:{self._port}"

    async def start(self, max_workers: int) -> None:
        """Serve until stopped.

        Args:
            max_workers: Threads of the server's executor.

        Raises:
            RuntimeError: The address cannot be bound.
        """
        servicer = MeteredInferenceServicer(self._data_plane, self._model_repository_extension, self._model)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(ExceptionToStatusInterceptor(),),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length")),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        if self._server.add_insecure_port(self.address) == 0:
            raise RuntimeError(f"cannot bind gRPC to {self.address}")
        LOG.info("gRPC server listening on %s", self.address)
        await self._server.start()
        await self._server.wait_for_termination()


class FraudModelServer(kserve.ModelServer):
    """KServe's ModelServer for one :class:`FraudModel`, bound to ``host``.

    Args:
        model: The model to serve (loaded and ready before :meth:`start`).
        host: Bind address for REST and gRPC.
        **kwargs: Passed to ``kserve.ModelServer`` (ports, gRPC switch, threads, ...).
    """

    def __init__(self, model: FraudModel, *, host: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.workers != 1:
            raise ValueError("--workers must be 1: scale with replicas (metrics and the payload log are per process)")
        self.model = model
        self.host = host
        self.dataplane = TolerantDataPlane(model_registry=self.registered_models)

    def install(self, app: Any) -> None:
        """Add the middleware and the 400 handler to KServe's FastAPI app (before it serves).

        Args:
            app: ``kserve.model_server.app``.
        """
        app.add_middleware(ScoringHTTPMiddleware, model=self.model)
        app.add_exception_handler(RequestValidationError, validation_error_handler)

    def start(self, models: list[Any]) -> None:
        """Register the model and serve REST (and gRPC) until a signal stops the server.

        Args:
            models: The models (ours).
        """
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            workers=1,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
        )
        self._rest_server.config.host = self.host
        self.install(kserve.model_server.app)
        self.servers.append(self._rest_server.start())
        LOG.info("REST server listening on %s:%d", self.host, self.http_port)
        if self.enable_grpc:
            self._grpc_server = BoundGRPCServer(
                self.host,
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                self.model,
                kwargs=vars(kserve.model_server.args),
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())
