"""The model server's gRPC side: metered, strictly checked inference, quiet client errors, a drained shutdown."""

from __future__ import annotations

import logging
import time
from concurrent import futures
from typing import Any

from grpc import aio
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
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer

from serving.model import FraudModel
from serving.rest import log_request_error
from serving.strict import V2_DATATYPES

LOG = logging.getLogger(__name__)


class QuietExceptionToStatusInterceptor(ExceptionToStatusInterceptor):
    """KServe's gRPC error mapping, logged by :func:`log_request_error` (client errors without a traceback)."""

    async def handle_exception(self, ex: Exception, request_or_iterator: Any, context: Any, method_name: str) -> None:
        """Abort the call with the status KServe would choose.

        Args:
            ex: The exception.
            request_or_iterator: The request.
            context: gRPC context.
            method_name: The method.
        """
        import grpc
        from grpc_interceptor.exceptions import GrpcException

        if isinstance(ex, GrpcException | aio.AbortError):
            await super().handle_exception(ex, request_or_iterator, context, method_name)
            return
        if isinstance(ex, InvalidInput | UnsupportedProtocol):
            code, status = grpc.StatusCode.INVALID_ARGUMENT, 400
        elif isinstance(ex, InferenceError):
            code, status = grpc.StatusCode.INVALID_ARGUMENT, 500
        elif isinstance(ex, ServerNotReady | ServerNotLive | ModelNotReady):
            code, status = grpc.StatusCode.UNAVAILABLE, 503
        elif isinstance(ex, NotImplementedError):
            code, status = grpc.StatusCode.UNIMPLEMENTED, 501
        elif isinstance(ex, ModelNotFound):
            code, status = grpc.StatusCode.NOT_FOUND, 404
        else:
            log_request_error(500, method_name, ex)
            await context.abort(grpc.StatusCode.INTERNAL, "Internal server error")
            return
        log_request_error(status, method_name, ex)
        await context.abort(code, str(getattr(ex, "reason", None) or ex))


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


def check_grpc_request(request: Any) -> None:
    """Check a gRPC ``ModelInferRequest``'s datatypes and raw contents before KServe decodes it.

    Args:
        request: ``ModelInferRequest``.

    Raises:
        InvalidInput: An unknown datatype, or raw contents not matching the inputs; the message names the input.
    """
    for inp in request.inputs:
        if inp.datatype not in V2_DATATYPES:
            raise InvalidInput(
                f"input {inp.name!r}: datatype {inp.datatype[:30]!r} is not a v2 datatype "
                f"({', '.join(sorted(V2_DATATYPES))})"
            )
    n_raw = len(request.raw_input_contents)
    if n_raw and n_raw != len(request.inputs):
        raise InvalidInput(f"'raw_input_contents': {n_raw} entries for {len(request.inputs)} inputs")


class MeteredInferenceServicer(InferenceServicer):
    """KServe's gRPC servicer, recording ModelInfer requests, latency and errors (``protocol=v2_grpc``).

    Args:
        data_plane: The data plane.
        model_repository_extension: KServe's repository extension.
        model: The served model.
        enable_model_repository: Serve ``RepositoryModelLoad``/``RepositoryModelUnload`` (else UNIMPLEMENTED).
    """

    def __init__(
        self,
        data_plane: DataPlane,
        model_repository_extension: Any,
        model: FraudModel,
        enable_model_repository: bool = False,
    ) -> None:
        super().__init__(data_plane, model_repository_extension)
        self._model = model
        self._enable_model_repository = enable_model_repository

    def _repository(self) -> None:
        if not self._enable_model_repository:
            raise NotImplementedError("the model repository extension is disabled (--enable_model_repository)")

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        """KServe's load, only with ``--enable_model_repository``.

        Args:
            request: ``RepositoryModelLoadRequest``.
            context: gRPC context.

        Returns:
            ``RepositoryModelLoadResponse``.
        """
        self._repository()
        return await super().RepositoryModelLoad(request, context)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        """KServe's unload, only with ``--enable_model_repository``.

        Args:
            request: ``RepositoryModelUnloadRequest``.
            context: gRPC context.

        Returns:
            ``RepositoryModelUnloadResponse``.
        """
        self._repository()
        return await super().RepositoryModelUnload(request, context)

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
            check_grpc_request(request)
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
        enable_model_repository: Serve the repository RPCs.
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
        enable_model_repository: bool = False,
    ) -> None:
        super().__init__(port, data_plane, model_repository_extension, kwargs=kwargs, grace_period=grace_period)
        self._host = host
        self._model = model
        self._enable_model_repository = enable_model_repository

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
        servicer = MeteredInferenceServicer(
            self._data_plane, self._model_repository_extension, self._model, self._enable_model_repository
        )
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(QuietExceptionToStatusInterceptor(),),
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
