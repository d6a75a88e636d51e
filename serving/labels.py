"""``POST /v2/models/<name>/labels``: the label feed a bank sends chargebacks and confirmed frauds to.

Body ``{"labels": [{"transaction_id": "...", "is_fraud": 0 | 1, "reported_at": "ISO 8601"?}, ...]}`` (at most
:data:`~fraud_detection.monitoring.label_feed.MAX_LABELS_PER_REQUEST`). The labels are stored beside the payload log
(when the server has a store) and added to the online store's terminal fraud counts (when it has one), through
:func:`~fraud_detection.monitoring.label_feed.record_labels`. Answers 200 with what was applied; 400 naming the
problem for a bad body; 503 when a store is unavailable (send the batch again: it is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from typing import Any

from fastapi import Request
from fastapi.responses import ORJSONResponse
from kserve.errors import InvalidInput, ModelNotFound, ServerNotReady

from fraud_detection.data.schema import SchemaError
from fraud_detection.features.state.base import OnlineStoreUnavailableError
from fraud_detection.monitoring.label_feed import labels_from_records, record_labels
from fraud_detection.scoring.results import InputError
from fraud_detection.store.base import ArtifactStore, StoreError
from serving.model import FraudModel
from serving.strict import parse_json

LOG = logging.getLogger(__name__)


class LabelEndpoint:
    """The label feed of one model server.

    Args:
        model: The served model (its online store, once loaded).
        store: Where labels are stored (the payload log's store), or None.
    """

    def __init__(self, model: FraudModel, store: ArtifactStore | None) -> None:
        self.model = model
        self.store = store

    async def post(self, model_name: str, request: Request) -> ORJSONResponse:
        """Record a batch of labels.

        Args:
            model_name: The model of the path (must be the served one).
            request: The request.

        Returns:
            ``{"labels": N, "stored": key or null, "online": {"applied", "unchanged", "unknown"} or null}``.

        Raises:
            ModelNotFound: Another model's path.
            InvalidInput: A bad body, or a server with neither store.
            ServerNotReady: A store is unavailable.
        """
        if model_name != self.model.name:
            raise ModelNotFound(model_name)
        online = self.model.online.store if self.model.online is not None else None
        if online is None and self.store is None:
            raise InvalidInput(
                "labels need a store (--store_uri or --payload_log_uri) or an online store (--online_store), and "
                "this server has neither"
            )
        try:
            body = parse_json(await request.body())
            if not isinstance(body, dict) or set(body) != {"labels"}:
                raise SchemaError("request body must be an object with one field, 'labels'")
            labels = labels_from_records(body["labels"])
        except (InputError, SchemaError) as exc:
            raise InvalidInput(str(exc)) from exc
        try:
            receipt = await asyncio.to_thread(record_labels, labels, store=self.store, online=online)
        except (OnlineStoreUnavailableError, StoreError, OSError) as exc:
            LOG.warning("labels not recorded: %s", exc)
            raise ServerNotReady(f"labels not recorded, send them again: {exc}") from exc
        content: dict[str, Any] = {
            "labels": receipt.labels,
            "stored": receipt.stored_key,
            "online": asdict(receipt.online) if receipt.online is not None else None,
        }
        return ORJSONResponse(content)
