"""FraudModel: the KServe model of the fraud detector, a thin adapter around :class:`fraud_detection.scoring.Scorer`.

It translates KServe's request objects (v2 ``InferRequest`` from REST or gRPC, v1 JSON dicts) into the scorer's
inputs and the results back into v2 ``InferResponse`` / v1 JSON, maps :class:`~fraud_detection.scoring.InputError`
to KServe's ``InvalidInput`` (HTTP 400, gRPC INVALID_ARGUMENT), and feeds the metrics and the payload log. The wire
format is documented in docs/SERVING.md and by the golden files in tests/fixtures/serving/.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve import InferRequest, InferResponse, Model
from kserve.errors import InvalidInput, ServerNotReady

from fraud_detection.data import schema
from fraud_detection.features.online import RawTransaction
from fraud_detection.features.seed import SEED_COMPLETION
from fraud_detection.features.service import FeatureBatch, OnlineFeatures
from fraud_detection.features.state.base import OnlineStoreUnavailableError
from fraud_detection.model.bundle import Bundle
from fraud_detection.monitoring.payload_log import PayloadLogger
from fraud_detection.monitoring.telemetry import BoundServingMetrics, ServingMetrics
from fraud_detection.scoring.results import InputError, ScoreResult
from fraud_detection.scoring.scorer import Scorer
from serving.codec import (
    IDENTIFIERS,
    MAX_AMOUNT,
    JsonListOutput,
    Tensor,
    identifiers_from_records,
    identifiers_from_tensors,
    matrix_from_records,
    matrix_from_tensors,
)
from serving.raw_codec import is_raw_request, raw_from_records, raw_from_tensors
from serving.store_calls import CoalescedStoreCalls
from serving.strict import check_max_amount, parse_json

LOG = logging.getLogger(__name__)

SCORE_OUTPUT = "fraud_score"
DECISION_OUTPUT = "is_fraud"
REASONS_OUTPUT = "reason_codes"
FEATURES_OUTPUT = "features"
OUTPUTS: tuple[str, ...] = (SCORE_OUTPUT, DECISION_OUTPUT, REASONS_OUTPUT, FEATURES_OUTPUT)
#: Outputs returned when a v2 request names none (reason codes cost extra: ask for them).
DEFAULT_OUTPUTS: tuple[str, ...] = (SCORE_OUTPUT, DECISION_OUTPUT)
#: Keys a v1 body may have.
V1_KEYS: frozenset[str] = frozenset({"instances", "features", "reason_codes", "return_features", "id"})
#: Request parameter asking for the feature vector each row was scored with.
RETURN_FEATURES = "return_features"


class OnlineStoreDownError(ServerNotReady):
    """The online store is unavailable: HTTP 503 / gRPC UNAVAILABLE with the reason (never a 500)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.reason = f"online feature store unavailable: {detail}"

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class RawScoring:
    """A raw-transaction request after :meth:`FraudModel.preprocess`: its rows and their served features.

    Attributes:
        request: The original request (v2 ``InferRequest`` or the decoded v1 body).
        transactions: Its rows.
        batch: Their features from the online store.
    """

    request: InferRequest | Mapping[str, Any]
    transactions: tuple[RawTransaction, ...]
    batch: FeatureBatch

    def identifiers(self) -> dict[str, list[str]]:
        """The rows' identifiers (hashed or dropped by the payload log as configured)."""
        return {
            schema.TRANSACTION_ID: [tx.transaction_id for tx in self.transactions],
            schema.CUSTOMER_ID: [tx.customer_id for tx in self.transactions],
            schema.TERMINAL_ID: [tx.terminal_id for tx in self.transactions],
        }


@dataclass(frozen=True)
class LoadedModel:
    """What :meth:`FraudModel.load` produced.

    Attributes:
        scorer: The scorer.
        version: Bundle version.
        threshold: Decision threshold.
        manifest_sha256: Digest of the bundle's manifest.
    """

    scorer: Scorer
    version: str
    threshold: float
    manifest_sha256: str


class FraudModel(Model):
    """The fraud detector as a KServe model.

    Args:
        name: Served model name (the ``/v2/models/<name>`` route).
        loader: Returns the verified bundle (from a directory or the registry); called by :meth:`load`.
        metrics: Serving metrics (registered once per process).
        max_batch_size: Largest number of rows per request.
        payload_logger_factory: Called with the loaded version and a callback counting dropped rows; returns the
            payload logger (or None to disable it).
        compiled: Use the compiled scorer when the model allows it.
        online_factory: Called with the bundle's label delay; returns the online features that raw transactions are
            scored with (None: raw transactions get a 400).
        max_amount: Largest ``amount`` accepted, in raw transactions and feature vectors alike.
        expose_threshold: Report the decision threshold in responses and in ``fraud_serving_model_info``.
    """

    def __init__(
        self,
        name: str,
        loader: Callable[[], Bundle],
        *,
        metrics: ServingMetrics,
        max_batch_size: int = 1_000,
        payload_logger_factory: Callable[[str, Callable[[int], None]], PayloadLogger | None] | None = None,
        compiled: bool = True,
        online_factory: Callable[[int], OnlineFeatures] | None = None,
        max_amount: float = MAX_AMOUNT,
        expose_threshold: bool = True,
    ) -> None:
        super().__init__(name)
        self.max_amount = max_amount
        self.expose_threshold = expose_threshold
        self._online_factory = online_factory
        self.online: OnlineFeatures | None = None
        self._store_calls: CoalescedStoreCalls | None = None
        self._loader = loader
        self._metrics = metrics
        self._max_batch_size = max_batch_size
        self._payload_logger_factory = payload_logger_factory
        self._compiled = compiled
        self.loaded: LoadedModel | None = None
        self.bound_metrics: BoundServingMetrics | None = None
        self.payload_logger: PayloadLogger | None = None
        self._parameters: dict[str, str] = {}

    @property
    def max_batch_size(self) -> int:
        """Largest number of rows per request."""
        return self._max_batch_size

    # -- lifecycle ------------------------------------------------------------------------------------------
    def load(self) -> bool:
        """Load and verify the bundle, compile the scorer, run a warm-up prediction, then report ready.

        Returns:
            True once ready.

        Raises:
            RuntimeError: The warm-up prediction did not give a finite score.
        """
        bundle = self._loader()
        scorer = Scorer.from_bundle(bundle, max_batch_size=self._max_batch_size, compiled=self._compiled)
        meta = bundle.metadata
        if meta.model_name != self.name:
            LOG.warning("serving bundle of model %r under the name %r", meta.model_name, self.name)
        warm = scorer.warm_up()
        if not (np.isfinite(warm.scores).all() and warm.reason_codes):
            raise RuntimeError(f"warm-up prediction of {meta.version} failed: {warm.scores}")
        if self._online_factory is not None:
            self.online = self._online_factory(meta.training.label_delay_days)
            if self.online.store.waits_on_io:
                self._store_calls = CoalescedStoreCalls(self.online, max_rows=self._max_batch_size)
        self.loaded = LoadedModel(scorer, meta.version, scorer.threshold, bundle.manifest_sha256)
        self.bound_metrics = self._metrics.bind(self.name, meta.version, scorer.threshold)
        self._parameters = {"model_version": meta.version, "threshold": f"{scorer.threshold:.6g}"}
        if not self.expose_threshold:
            info = self._metrics.model_info
            info.remove(self.name, meta.version, f"{scorer.threshold:g}")
            info.labels(self.name, meta.version, "hidden").set(1)
            del self._parameters["threshold"]
        if self._payload_logger_factory is not None:
            logger = self._payload_logger_factory(meta.version, self.bound_metrics.payload_log_dropped.inc)
            self.payload_logger = logger.start() if logger is not None else None
        LOG.info(
            "loaded %s version %s (threshold %.4f, engine %s, manifest %s); warm-up score %.4f",
            self.name,
            meta.version,
            scorer.threshold,
            scorer.engine_name,
            bundle.manifest_sha256[:12],
            float(warm.scores[0]),
        )
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """Flush the payload log, close the online store and mark the model not ready."""
        if self.payload_logger is not None:
            self.payload_logger.close()
        if self._store_calls is not None:
            self._store_calls.close()
        if self.online is not None:
            self.online.store.close()
        self.ready = False

    async def healthy(self) -> bool:
        """Ready when loaded and, for a server with an online store, when the store answers.

        KServe asks this twice per scoring request (the route's readiness check and ``DataPlane.get_model``), so a
        recently successful ping is answered on the event loop; only a store ping that waits on the network (Redis,
        once per :data:`~fraud_detection.features.service.HEALTH_CACHE_SECONDS`) runs in a worker thread.

        Returns:
            Whether the model can serve (``/v2/health/ready``, ``/v2/models/<name>/ready``).
        """
        if not self.ready:
            return False
        online = self.online
        if online is None or online.degraded_when_unavailable or online.known_healthy():
            return True
        if not online.store.waits_on_io:
            return online.healthy()
        return await asyncio.to_thread(online.healthy)

    def validate(self, payload: Any) -> Any:
        """No KServe pre-validation: the codec checks every field and names it (see :meth:`predict`).

        Args:
            payload: Decoded request.

        Returns:
            The payload.
        """
        return payload

    # -- metadata -------------------------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        """v2 model metadata inputs: one FP64 (or FP32) tensor of shape [N] per feature, in schema order.

        A single ``features`` tensor [N, F] is accepted instead (see docs/SERVING.md).

        Returns:
            Input descriptions.
        """
        return [{"name": name, "datatype": "FP64", "shape": [-1]} for name in schema.FEATURES]

    def get_output_types(self) -> list[dict[str, Any]]:
        """v2 model metadata outputs.

        Returns:
            ``fraud_score`` FP32 [N], ``is_fraud`` BOOL [N], ``reason_codes`` BYTES [N] (only when requested).
        """
        return [
            {"name": SCORE_OUTPUT, "datatype": "FP32", "shape": [-1]},
            {"name": DECISION_OUTPUT, "datatype": "BOOL", "shape": [-1]},
            {"name": REASONS_OUTPUT, "datatype": "BYTES", "shape": [-1]},
        ]

    # -- inference ------------------------------------------------------------------------------------------
    async def preprocess(
        self, payload: InferRequest | dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> InferRequest | dict[str, Any] | bytes | RawScoring:
        """Turn a raw-transaction request into its features from the online store; pass anything else through.

        A store call that waits on the network (Redis) runs in a worker thread, so a slow store never blocks the event
        loop, coalesced with the calls of requests that arrive meanwhile (:mod:`serving.store_calls`); the embedded
        store computes in memory and is called inline (cheaper than a thread hand-off).

        Args:
            payload: Decoded request.
            headers: Request headers.

        Returns:
            A :class:`RawScoring` for raw transactions, else the payload (a v1 body decoded from bytes).

        Raises:
            InvalidInput: The raw transactions break the input contract, or no online store is configured.
            OnlineStoreDownError: The online store is unavailable (and degraded scoring is off).
        """
        if self.loaded is None:
            return payload
        try:
            if isinstance(payload, bytes | bytearray | memoryview):
                payload = _json_body(payload)
            transactions = self._raw_transactions(payload, self.loaded.scorer.max_batch_size, self.max_amount)
            if transactions is None:
                return payload
            if self.online is None:
                raise InputError(
                    "raw transactions need an online feature store, and this server has none: start it with "
                    "--online_store (FRAUD_ONLINE_STORE), or send the features",
                    kind="format",
                )
        except InputError as exc:
            raise InvalidInput(str(exc)) from exc
        try:
            if self._store_calls is not None:
                batch = await self._store_calls.compute(transactions)
            else:
                batch = self.online.compute(transactions)
        except OnlineStoreUnavailableError as exc:
            if self.bound_metrics is not None:
                self.bound_metrics.online_store_failure()
            LOG.warning("%s", exc)
            raise OnlineStoreDownError(str(exc)) from exc
        if batch.degraded and self.bound_metrics is not None:
            self.bound_metrics.online_store_failure(degraded_rows=len(transactions))
        assert isinstance(payload, InferRequest | Mapping)  # bytes were decoded above
        return RawScoring(payload, tuple(transactions), batch)

    @staticmethod
    def _raw_transactions(payload: Any, max_rows: int, max_amount: float) -> list[RawTransaction] | None:
        if isinstance(payload, InferRequest):
            if not is_raw_request([str(inp.name) for inp in payload.inputs]):
                return None
            return raw_from_tensors([_tensor(inp) for inp in payload.inputs], max_rows, max_amount)
        if isinstance(payload, Mapping) and isinstance(payload.get("instances"), list):
            records = payload["instances"]
            if records and isinstance(records[0], Mapping) and is_raw_request(list(records[0])):
                return raw_from_records(records, max_rows, max_amount)
        return None

    def predict(
        self,
        payload: InferRequest | dict[str, Any] | bytes,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse | dict[str, Any]:
        """Score a v2 ``InferRequest`` or a v1 body.

        Args:
            payload: Decoded request.
            headers: Request headers (``x-request-id`` is used as the request id when present).
            response_headers: Unused.

        Returns:
            A v2 ``InferResponse`` or a v1 JSON dict.

        Raises:
            InvalidInput: The request breaks the input contract (the message names the field).
        """
        if self.loaded is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        try:
            if isinstance(payload, RawScoring):
                if isinstance(payload.request, InferRequest):
                    return self._predict_v2(self.loaded, payload.request, headers, payload)
                return self._predict_v1(self.loaded, dict(payload.request), headers, payload)
            if isinstance(payload, InferRequest):
                return self._predict_v2(self.loaded, payload, headers)
            return self._predict_v1(self.loaded, payload, headers)
        except InputError as exc:
            raise InvalidInput(str(exc)) from exc

    def _predict_v2(
        self,
        loaded: LoadedModel,
        request: InferRequest,
        headers: dict[str, str] | None,
        raw: RawScoring | None = None,
    ) -> InferResponse:
        scorer = loaded.scorer
        requested = _requested_outputs(request)
        if raw is not None:
            X = scorer.validate(raw.batch.matrix)
            ids: Mapping[str, Any] | None = raw.identifiers()
        else:
            tensors = [_tensor(inp) for inp in request.inputs]
            X = matrix_from_tensors(scorer, tensors)
            check_max_amount(X, scorer.feature_index[schema.AMOUNT], self.max_amount)
            ids = identifiers_from_tensors(tensors, X.shape[0]) if any(t.name in IDENTIFIERS for t in tensors) else None
        if _flag(request.parameters, RETURN_FEATURES) and FEATURES_OUTPUT not in requested:
            requested.append(FEATURES_OUTPUT)
        explain = REASONS_OUTPUT in requested
        result = scorer.score(X, explain=explain)
        request_id = _request_id(request.id, headers)
        self._record(X, result, request_id, ids, None, raw)
        n = X.shape[0]
        outputs = []
        for name in requested:
            if name == SCORE_OUTPUT:
                data, datatype = result.scores.astype(np.float32), "FP32"
            elif name == DECISION_OUTPUT:
                data, datatype = np.asarray(result.decisions, dtype=bool), "BOOL"
            elif name == FEATURES_OUTPUT:
                data, datatype = np.ascontiguousarray(X, dtype=np.float64), "FP64"
            else:
                data, datatype = np.array([s.encode() for s in result.reason_codes_json()], dtype=np.object_), "BYTES"
            output = JsonListOutput(name, list(data.shape) if name == FEATURES_OUTPUT else [n], datatype)
            if request.from_grpc:
                # KServe 0.21's to_grpc() tests `output.data` for truth, which fails for numpy arrays: hand it the
                # raw bytes instead (what it would send anyway).
                output.set_data_from_numpy(data, binary_data=True)
            else:
                output.data = data
            outputs.append(output)
        parameters = dict(self._parameters)
        if explain:
            parameters["reason_code_method"] = scorer.explanation_method
            parameters["reason_code_baseline"] = f"{scorer.baseline_score:.6g}"
        parameters |= _raw_parameters(raw)
        return InferResponse(
            response_id=request_id,
            model_name=self.name,
            model_version=loaded.version,
            infer_outputs=outputs,
            parameters=parameters,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )

    def _predict_v1(
        self,
        loaded: LoadedModel,
        body: dict[str, Any] | bytes,
        headers: dict[str, str] | None,
        raw: RawScoring | None = None,
    ) -> dict[str, Any]:
        scorer = loaded.scorer
        if isinstance(body, bytes | bytearray | memoryview):
            body = _json_body(body)
        if not isinstance(body, Mapping):
            raise InputError(
                f"request body must be a JSON object with 'instances' or 'features', got {type(body).__name__}",
                field="body",
            )
        unknown = sorted(set(body) - V1_KEYS)
        if unknown:
            raise InputError(
                f"unknown key {unknown[0]!r} in the request body (expected 'instances' or 'features', optionally "
                "'reason_codes' and 'id')",
                field=unknown[0],
            )
        if ("instances" in body) == ("features" in body):
            raise InputError("the request body needs exactly one of 'instances' (a list) or 'features' (an object)")
        explain = body.get("reason_codes", False)
        if not isinstance(explain, bool):
            raise InputError("'reason_codes' must be true or false", field="reason_codes")
        with_features = body.get(RETURN_FEATURES, False)
        if not isinstance(with_features, bool):
            raise InputError(f"'{RETURN_FEATURES}' must be true or false", field=RETURN_FEATURES)
        if "features" in body:
            records = [body["features"]]
            if not isinstance(records[0], Mapping):
                raise InputError("'features' must be an object of feature name to number", field="features")
        else:
            records = body["instances"]
            if not isinstance(records, list):
                raise InputError("'instances' must be a list", field="instances")
        imputed: list[list[str]] = [[] for _ in records]
        ids: Mapping[str, Any] | None = None
        if raw is not None:
            X = scorer.validate(raw.batch.matrix)
            ids = raw.identifiers()
        elif records and all(isinstance(r, list) for r in records):
            X = scorer.check(_rows(records, scorer.n_features))
        else:
            X, imputed = matrix_from_records(scorer, records, required=schema.SEED_FEATURES)
            ids = identifiers_from_records(records) or None
        if raw is None:
            check_max_amount(X, scorer.feature_index[schema.AMOUNT], self.max_amount)
        result = scorer.score(X, explain=explain)
        request_id = _request_id(body.get("id"), headers)
        self._record(X, result, request_id, ids, imputed, raw)
        codes = result.reason_codes or []
        predictions = []
        for i in range(X.shape[0]):
            item: dict[str, Any] = {
                SCORE_OUTPUT: round(float(result.scores[i]), 6),
                DECISION_OUTPUT: bool(result.decisions[i]),
            }
            if explain:
                item[REASONS_OUTPUT] = [rc.to_dict() for rc in codes[i]]
            if with_features:
                item[FEATURES_OUTPUT] = dict(zip(schema.FEATURES, X[i].tolist(), strict=True))
            if imputed[i]:
                item["imputed_features"] = imputed[i]
            predictions.append(item)
        response: dict[str, Any] = {
            "id": request_id,
            "model_name": self.name,
            "model_version": loaded.version,
            "threshold": loaded.threshold,
            "predictions": predictions,
        }
        if not self.expose_threshold:
            del response["threshold"]
        if any(imputed):
            response["imputed_from"] = SEED_COMPLETION
        if explain:
            response["reason_code_method"] = scorer.explanation_method
            response["reason_code_baseline"] = round(scorer.baseline_score, 6)
        response |= _raw_parameters(raw)
        return response

    def _record(
        self,
        X: np.ndarray,
        result: ScoreResult,
        request_id: str,
        ids: Mapping[str, Any] | None,
        imputed: list[list[str]] | None,
        raw: RawScoring | None = None,
    ) -> None:
        if self.bound_metrics is not None:
            self.bound_metrics.scored(result.scores, result.decisions)
        if self.payload_logger is not None:
            self.payload_logger.log(
                X,
                result.scores,
                result.decisions,
                request_id=request_id,
                identifiers=ids,
                imputed=imputed,
                event_times=[tx.seconds for tx in raw.transactions] if raw is not None else None,
            )


def _json_body(body: bytes | bytearray | memoryview) -> Any:
    return parse_json(bytes(body))


def _flag(parameters: Any, name: str) -> bool:
    """A boolean request parameter (REST gives a bool or a string, gRPC an ``InferParameter``)."""
    if not parameters or name not in parameters:
        return False
    value = parameters[name]
    value = (
        getattr(value, "bool_param", getattr(value, "string_param", value))
        if not isinstance(value, bool | str)
        else value
    )
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _raw_parameters(raw: RawScoring | None) -> dict[str, Any]:
    """What a raw-transaction response says about its features (source, retries, degraded mode)."""
    if raw is None:
        return {}
    out: dict[str, Any] = {"features_source": "online"}
    retried = sum(raw.batch.retried)
    if retried:
        out["retried_rows"] = retried
    if raw.batch.degraded:
        out["features_source"] = "degraded: online store unavailable, features computed without history"
    return out


def _tensor(inp: Any) -> Tensor:
    """A protocol-neutral tensor from a KServe ``InferInput`` (JSON lists, gRPC contents or raw bytes)."""
    try:
        data = inp.as_numpy() if getattr(inp, "_raw_data", None) is not None else inp.data
    except Exception as exc:  # raw bytes that do not fit the declared shape/datatype
        raise InputError(
            f"input {inp.name!r}: binary data does not match datatype {inp.datatype} and shape {inp.shape}: {exc}",
            kind="shape",
            field=str(inp.name),
        ) from exc
    shape = inp.shape
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InputError(f"input {inp.name!r}: invalid shape {shape!r}", kind="shape", field=str(inp.name))
    if data is None:
        raise InputError(f"input {inp.name!r} has no data", kind="format", field=str(inp.name))
    return Tensor(str(inp.name), str(inp.datatype), list(shape), data)


def _requested_outputs(request: InferRequest) -> list[str]:
    if not request.request_outputs:
        return list(DEFAULT_OUTPUTS)
    names = [str(out.name) for out in request.request_outputs]
    for name in names:
        if name not in OUTPUTS:
            raise InputError(f"unknown output {name!r} requested (outputs: {', '.join(OUTPUTS)})", field=name)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"output {dup!r} is requested more than once", field=dup)
    return names


def _request_id(given: Any, headers: Mapping[str, str] | None) -> str:
    if isinstance(given, str) and given:
        return given[:128]
    if headers:
        header = headers.get("x-request-id")
        if header:
            return str(header)[:128]
    return uuid.uuid4().hex


def _rows(rows: list[Any], n_features: int) -> np.ndarray:
    """v1 ``instances`` given as rows of numbers in schema order."""
    for i, row in enumerate(rows):
        if len(row) != n_features:
            raise InputError(
                f"'instances' row {i}: {len(row)} values, expected {n_features} in schema order "
                f"({', '.join(schema.FEATURES)})",
                kind="shape",
            )
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(
                    f"feature {schema.FEATURES[j]!r}: expected a number in row {i}, got {type(value).__name__}",
                    kind="datatype",
                    field=schema.FEATURES[j],
                )
    try:
        return np.asarray(rows, dtype=np.float64)
    except OverflowError as exc:
        raise InputError(f"instances: a value is too large to be a number: {exc}", kind="not_finite") from exc
