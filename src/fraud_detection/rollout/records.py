"""Decision records: in the store under rollouts/ and summarised in annotations."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fraud_detection.rollout.analysis import RolloutDecision
from fraud_detection.rollout.contract import ANNOTATION_DECISION, ANNOTATION_REASONS, ANNOTATION_RECORD, ANNOTATION_TIME
from fraud_detection.store.base import ArtifactStore

LOG = logging.getLogger(__name__)
ROLLOUTS_PREFIX = "rollouts/"


# ----------------------------------------------------------------------------------------------------- actions


def decision_annotations(decision: RolloutDecision, record_key: str | None) -> dict[str, str]:
    """The annotations summarising a decision on the InferenceService.

    Args:
        decision: The decision.
        record_key: Store key of the full record.

    Returns:
        ``rollout-decision`` (promote, rollback, inconclusive), ``rollout-reasons`` (a JSON list of strings),
        ``rollout-time`` (ISO 8601) and ``rollout-record`` (the store key).
    """
    out = {
        ANNOTATION_DECISION: decision.decision.value,
        ANNOTATION_REASONS: json.dumps(list(decision.reasons)),
        ANNOTATION_TIME: decision.decided_at,
    }
    if record_key:
        out[ANNOTATION_RECORD] = record_key
    return out


def record_key(model_name: str, when: datetime | None = None) -> str:
    """Store key of a rollout record.

    Args:
        model_name: Served model name.
        when: Time of the record (now by default).

    Returns:
        ``rollouts/<model_name>/<YYYYmmddTHHMMSSffffffZ>.json`` (sortable).
    """
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    return f"{ROLLOUTS_PREFIX}{model_name}/{moment.strftime('%Y%m%dT%H%M%S%fZ')}.json"


def write_record(store: ArtifactStore, key: str, record: Mapping[str, Any]) -> None:
    """Write a rollout record (one atomic object write).

    Args:
        store: The store.
        key: Its key (see :func:`record_key`).
        record: The record.
    """

    def default(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    text = json.dumps(_finite(record), indent=2, sort_keys=True, default=default)
    store.write_bytes(key, text.encode())
    LOG.info("rollout record written to %s", store.uri(key))


def _finite(value: Any) -> Any:
    """NaN and infinities become None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def latest_records(store: ArtifactStore, model_name: str, limit: int = 1) -> list[dict[str, Any]]:
    """The most recent rollout records of a model, newest first.

    Args:
        store: The store.
        model_name: Served model name.
        limit: How many.

    Returns:
        The records.
    """
    keys = [k for k in store.list(f"{ROLLOUTS_PREFIX}{model_name}/") if k.endswith(".json")]
    return [json.loads(store.read_bytes(k)) for k in sorted(keys, reverse=True)[:limit]]
