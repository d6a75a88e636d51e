"""The model server's REST side: scoring routes with a body limit and strict parsing, metrics, quiet client errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, ORJSONResponse
from fastapi.routing import APIRouter
from kserve.errors import (
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
    UnsupportedProtocol,
)
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.server import RESTServer
from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse
from pydantic import ValidationError
from timing_asgi import TimingMiddleware

from fraud_detection.scoring.results import InputError
from serving.labels import LabelEndpoint
from serving.model import FraudModel
from serving.strict import check_v2_body, mark_checked, parse_json, split_binary_body

#: ASGI types (as Starlette defines them), for the pure ASGI middleware.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOG = logging.getLogger(__name__)

_INFERENCE_HEADER = b"inference-header-content-length"
#: Default largest request body (``--max_body_bytes``).
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: Bodies at least this large are parsed and decoded in a worker thread, never on the event loop.
OFF_LOOP_BYTES = 64 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_DOCS_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


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

    Every request body (any route) is limited to ``max_body_bytes``: a larger ``Content-Length`` is refused before
    anything is read, and a chunked body as soon as it grows past the limit (413 naming the limit). Bodies within
    the limit are buffered here and replayed to the app.

    Args:
        app: The wrapped ASGI app.
        model: The served model (its bound metrics are used once it is loaded).
        max_body_bytes: Largest accepted request body.
    """

    def __init__(self, app: ASGIApp, model: FraudModel, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.model = model
        self.max_body_bytes = max_body_bytes

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
        encoded = _encoded_separator(scope.get("raw_path") or b"")
        if encoded:
            # uvicorn decodes %2F to "/" before routing, so /v2%2Frepository/... would reach a route that an
            # AuthorizationPolicy matching the raw path never saw: refuse (defence in depth beside the mesh's filter).
            LOG.info("400 %s %s: encoded %s in the path", scope.get("method"), scope.get("path"), encoded)
            await _send_json(
                send, 400, {"error": f"the request path has an encoded {encoded} ({encoded!r} is refused)"}
            )
            return
        protocol = scoring_protocol(scope.get("method", ""), scope.get("path", ""))
        if scope.get("method", "") in _BODY_METHODS:
            start = time.perf_counter()
            body = await _read_limited(scope, receive, self.max_body_bytes)
            if isinstance(body, str):
                LOG.info("413 %s %s: %s", scope.get("method"), scope.get("path"), body)
                await _send_json(send, 413, {"error": body})
                metrics = self.model.bound_metrics
                if protocol is not None and metrics is not None:
                    metrics.request(protocol, time.perf_counter() - start, "validation")
                return
            if body is None:  # the client went away
                return
            receive = _replay(body, receive)
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


def _encoded_separator(raw_path: bytes) -> str | None:
    """``%2F`` or ``%5C`` when the raw path carries an encoded slash or backslash, else None."""
    lowered = raw_path.lower()
    for token in (b"%2f", b"%5c"):
        if token in lowered:
            return token.decode().upper()
    return None


async def _read_limited(scope: Scope, receive: Receive, limit: int) -> bytes | str | None:
    """The whole request body, or a message when it exceeds ``limit`` bytes, or None if the client disconnected."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return f"header Content-Length: {value[:20]!r} is not a byte count"
            if declared > limit:
                return f"request body of {declared} bytes exceeds the limit of {limit} bytes (--max_body_bytes)"
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return f"request body exceeds the limit of {limit} bytes (--max_body_bytes)"
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Send, status: int, content: dict[str, Any]) -> None:
    data = orjson.dumps(content)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


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


class ScoringEndpoints:
    """Our v2 infer and v1 predict routes: KServe's, with strict body parsing off the event loop.

    The body (already limited by :class:`ScoringHTTPMiddleware`) is parsed with messages naming the byte offset or
    the field (:func:`serving.codec.parse_json`, :func:`serving.codec.check_v2_body`) before KServe's lenient
    schema sees it; bodies of :data:`OFF_LOOP_BYTES` or more are parsed and decoded in a worker thread so that
    liveness and other requests keep being answered.

    Args:
        dataplane: The data plane.
        max_rows: Largest batch (bigger ones are refused before their data is decoded).
    """

    def __init__(self, dataplane: DataPlane, max_rows: int | None = None) -> None:
        self.dataplane = dataplane
        self.max_rows = max_rows
        self._large: asyncio.Semaphore | None = None

    async def _ready(self, model_name: str) -> None:
        if not await self.dataplane.model_ready(model_name, True):
            raise ModelNotReady(model_name)

    async def _run(self, size: int, fn: Callable[..., Any], *args: Any) -> Any:
        if size < OFF_LOOP_BYTES:
            return fn(*args)
        # One large body at a time: parsing holds the GIL in long stretches, and one parsing thread at most lets
        # the event loop take the GIL back between them.
        if self._large is None:
            self._large = asyncio.Semaphore(1)
        async with self._large:
            return await asyncio.to_thread(fn, *args)

    def _decode_v2(self, body: bytes, headers: dict[str, str], model_name: str) -> Any:
        try:
            header = headers.get(_INFERENCE_HEADER.decode())
            if header is not None:
                length = split_binary_body(body, header)
                obj = parse_json(body[:length], "JSON header")
                check_v2_body(obj, binary_size=len(body) - length, max_rows=self.max_rows)
                return self.dataplane.decode(body, headers, protocol_version="v2", model_name=model_name)[0]
            obj = parse_json(body)
            check_v2_body(obj, max_rows=self.max_rows)
            request = InferenceRequest.model_validate(obj)
        except InputError as exc:
            raise InvalidInput(str(exc)) from exc
        except ValidationError as exc:
            raise InvalidInput(f"invalid request body: {_pydantic_problems(exc)}") from exc
        infer_request = self.dataplane.decode(request, headers, protocol_version="v2", model_name=model_name)[0]
        mark_checked(infer_request.inputs)  # checked above: the codec need not check the same values again
        return infer_request

    async def v2_infer(self, raw_request: Request, raw_response: Response, model_name: str) -> Any:
        """``POST /v2/models/<name>/infer``; see KServe's ``V2Endpoints.infer``.

        Args:
            raw_request: The request.
            raw_response: The response being built.
            model_name: The model.

        Returns:
            The v2 response (JSON, or bytes with the binary extension).
        """
        await self._ready(model_name)
        body = await raw_request.body()
        headers = dict(raw_request.headers)
        infer_request = await self._run(len(body), self._decode_v2, body, headers, model_name)
        response, response_headers = await self.dataplane.infer(
            model_name=model_name, request=infer_request, headers=headers
        )
        response, res_headers = self.dataplane.encode(
            model_name=model_name, response=response, headers=headers, req_attributes={}
        )
        response_headers.update(res_headers)
        response_headers.pop("content-length", None)
        response_headers.pop("content-type", None)
        if response_headers:
            raw_response.headers.update(response_headers)
        if isinstance(response, bytes):
            raw_response.status_code = 200
            raw_response.body = response
            return raw_response
        # Rendered here, byte for byte as FastAPI renders the returned model (by alias, nulls kept, orjson), without
        # the jsonable_encoder walk over every output value that returning the model costs (over 2 ms for 1,000 rows).
        content = InferenceResponse.model_validate(response).model_dump(mode="json", by_alias=True)
        rendered = orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        return Response(content=rendered, media_type="application/json", headers=response_headers or None)

    def _decode_v1(self, body: bytes) -> Any:
        try:
            obj = parse_json(body)
        except InputError as exc:
            raise InvalidInput(str(exc)) from exc
        rows = obj.get("instances") if isinstance(obj, dict) else None
        if self.max_rows is not None and isinstance(rows, list) and len(rows) > self.max_rows:
            raise InvalidInput(
                f"'instances': batch of {len(rows)} rows exceeds the limit of {self.max_rows} rows per request"
            )
        return obj

    async def v1_predict(self, model_name: str, request: Request) -> Response:
        """``POST /v1/models/<name>:predict``; see KServe's ``V1Endpoints.predict``.

        Args:
            model_name: The model.
            request: The request.

        Returns:
            The v1 JSON response.
        """
        await self._ready(model_name)
        body = await request.body()
        headers = dict(request.headers.items())
        payload = await self._run(len(body), self._decode_v1, body)
        response, response_headers = await self.dataplane.infer(model_name=model_name, request=payload, headers=headers)
        response, res_headers = self.dataplane.encode(
            model_name=model_name, response=response, headers=headers, req_attributes={}
        )
        response_headers.update(res_headers)
        response_headers.pop("content-length", None)
        return ORJSONResponse(content=response, headers=response_headers)


def _pydantic_problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"'{loc or 'body'}': {err.get('msg', 'invalid')}")
    return "; ".join(parts) or str(exc)


#: HTTP status of each KServe error (what KServe's own handlers answer).
HTTP_STATUS: dict[type[BaseException], int] = {
    InvalidInput: 400,
    ModelNotFound: 404,
    InferenceError: 500,
    NotImplementedError: 501,
    UnsupportedProtocol: 501,
    ModelNotReady: 503,
    ServerNotReady: 503,
    ServerNotLive: 503,
}


def log_request_error(status: int, what: str, exc: BaseException) -> None:
    """Log a failed request by its status.

    4xx at INFO without a traceback (the client's fault; counted in the metrics), expected 503s (not ready) at
    WARNING, other 5xx at ERROR with the traceback.

    Args:
        status: HTTP status (or the HTTP equivalent of the gRPC status).
        what: The route or gRPC method.
        exc: The exception.
    """
    if status < 500:
        LOG.info("%d %s: %s", status, what, exc)
    elif isinstance(exc, ModelNotReady | ServerNotReady | ServerNotLive):
        LOG.warning("%d %s: %s", status, what, exc)
    else:
        LOG.error("%d %s: %s", status, what, exc, exc_info=exc)


def logged_handler(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """An exception handler answering ``status`` with ``{"error": str(exc)}``, logged by :func:`log_request_error`.

    Args:
        status: The HTTP status.

    Returns:
        The handler.
    """

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        log_request_error(status, f"{request.method} {request.url.path}", exc)
        return JSONResponse(status_code=status, content={"error": str(exc)})

    return handler


async def repository_disabled(model_name: str) -> JSONResponse:
    """``POST /v2/repository/models/<name>/load|unload`` without ``--enable_model_repository``: 404.

    Args:
        model_name: The model named in the path.

    Returns:
        404 ``{"error": ...}``.
    """
    LOG.info("404 repository call for %r refused: the model repository extension is disabled", model_name[:64])
    return JSONResponse(
        status_code=404,
        content={"error": "the model repository extension is disabled (--enable_model_repository)"},
    )


class FraudRESTServer(RESTServer):
    """KServe's REST server with our scoring routes and exception handlers; repository routes only when enabled.

    Args:
        *args: ``RESTServer`` arguments.
        enable_model_repository: Keep ``/v2/repository/models/<name>/load|unload``.
        max_rows: Largest batch, checked before decoding.
        labels: The label feed (``POST /v2/models/<name>/labels``), or None for none.
        **kwargs: ``RESTServer`` keyword arguments.
    """

    def __init__(
        self,
        *args: Any,
        enable_model_repository: bool = False,
        max_rows: int | None = None,
        labels: LabelEndpoint | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.enable_model_repository = enable_model_repository
        self.scoring = ScoringEndpoints(self.dataplane, max_rows)
        self.labels = labels

    def _add_middlewares(self, app: Any) -> None:
        super()._add_middlewares(app)
        # KServe times every request for its trace log (``kserve.trace``, which this server keeps quiet): two
        # getrusage calls, a match against every route and two formatted log lines per request, for a log nobody
        # reads. Without it a raw request costs about a quarter less server time at c=16 (docs/PERFORMANCE.md).
        app.user_middleware[:] = [m for m in app.user_middleware if m.cls is not TimingMiddleware]

    def _register_endpoints(self, app: Any) -> None:
        router = APIRouter()
        router.add_api_route(
            "/v2/models/{model_name}/infer", self.scoring.v2_infer, methods=["POST"], response_model=None
        )
        router.add_api_route("/v1/models/{model_name}:predict", self.scoring.v1_predict, methods=["POST"])
        if self.labels is not None:
            router.add_api_route("/v2/models/{model_name}/labels", self.labels.post, methods=["POST"])
        if not self.enable_model_repository:
            for action in ("load", "unload"):
                router.add_api_route(
                    f"/v2/repository/models/{{model_name}}/{action}",
                    repository_disabled,
                    methods=["POST"],
                    include_in_schema=False,
                )
        app.include_router(router)  # first: these shadow KServe's routes of the same paths
        super()._register_endpoints(app)

    def _add_exception_handlers(self, app: Any) -> None:
        super()._add_exception_handlers(app)
        for exc_type, status in HTTP_STATUS.items():
            app.add_exception_handler(exc_type, logged_handler(status))
        app.add_exception_handler(RequestValidationError, validation_error_handler)
