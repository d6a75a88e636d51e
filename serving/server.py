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

Hardening: a request body limit enforced while the body streams in (413), v2 infer and v1 predict routes of our own
that parse and check bodies strictly (off the event loop when large), the model repository routes (load/unload) off
unless enabled, ``/openapi.json`` off with the docs, client errors (4xx) logged at INFO without a traceback, and on
SIGTERM gRPC drains before the model unloads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kserve.model_server
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import (
    InvalidInput,
)
from kserve.protocol.dataplane import DataPlane
from kserve.utils.inference_client_factory import InferenceClientFactory

from serving.grpc_server import BoundGRPCServer
from serving.labels import LabelEndpoint
from serving.model import FraudModel
from serving.rest import _DOCS_PATHS, DEFAULT_MAX_BODY_BYTES, FraudRESTServer, ScoringHTTPMiddleware

LOG = logging.getLogger(__name__)


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
        models = list(self._model_registry.get_models().values())
        if not models:  # unloaded (shutdown, or the repository extension when enabled)
            return False
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


class FraudModelServer(kserve.ModelServer):
    """KServe's ModelServer for one :class:`FraudModel`, bound to ``host``.

    Args:
        model: The model to serve (loaded and ready before :meth:`start`).
        host: Bind address for REST and gRPC.
        max_body_bytes: Largest request body (413 above).
        enable_model_repository: Serve KServe's model repository extension (load/unload over REST and gRPC).
        labels: The label feed (``POST /v2/models/<name>/labels``), or None.
        **kwargs: Passed to ``kserve.ModelServer`` (ports, gRPC switch, threads, ...).
    """

    def __init__(
        self,
        model: FraudModel,
        *,
        host: str,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        enable_model_repository: bool = False,
        labels: LabelEndpoint | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.labels = labels
        if self.workers != 1:
            raise ValueError("--workers must be 1: scale with replicas (metrics and the payload log are per process)")
        self.model = model
        self.host = host
        self.max_body_bytes = max_body_bytes
        self.enable_model_repository = enable_model_repository
        self.dataplane = TolerantDataPlane(model_registry=self.registered_models)
        self._stopping: asyncio.Task[None] | None = None

    def install(self, app: Any) -> None:
        """Add the middleware to KServe's FastAPI app and drop the docs routes when docs are off (before it serves).

        Args:
            app: ``kserve.model_server.app``.
        """
        app.add_middleware(ScoringHTTPMiddleware, model=self.model, max_body_bytes=self.max_body_bytes)
        if not self.enable_docs_url:
            app.openapi_url = app.docs_url = app.redoc_url = None
            app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", "") not in _DOCS_PATHS]

    def stop(self, sig: int) -> None:
        """Shut down on a signal: gRPC stops accepting and drains its in-flight calls, then the model unloads.

        (KServe unloads the model first, so calls still in flight got NOT_FOUND.) REST drains on its own: uvicorn
        handles the signal first and re-raises it once its requests are done.

        Args:
            sig: The signal.
        """
        if self._stopping is not None:
            return

        async def shutdown() -> None:
            await InferenceClientFactory().close()
            LOG.info("Stopping the model server")
            if self._grpc_server is not None:
                LOG.info("stopping the gRPC server (draining in-flight calls for up to %ds)", self.grace_period)
                await self._grpc_server.stop(sig)
            for name in list(self.registered_models.get_models()):
                LOG.info("unloading model %s", name)
                self.registered_models.unload(name)

        self._stopping = asyncio.get_event_loop().create_task(shutdown())

    async def _serve(self) -> None:
        await asyncio.gather(*self.servers)
        if self._stopping is not None:
            await self._stopping

    def start(self, models: list[Any]) -> None:
        """Register the model and serve REST (and gRPC) until a signal stops the server.

        Args:
            models: The models (ours).
        """
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = FraudRESTServer(
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
            enable_model_repository=self.enable_model_repository,
            max_rows=self.model.max_batch_size,
            labels=self.labels,
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
                enable_model_repository=self.enable_model_repository,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())
