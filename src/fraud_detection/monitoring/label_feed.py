"""A label feed: chargebacks and confirmed frauds as a bank reports them, into the store and the online state.

One call records a batch of labels where both consumers find them: the artifact store's ``labels/`` prefix (the
drift job's realised quality, retraining from the payload log) and the online store's terminal fraud counts (terminal
risk at scoring time, behind the label delay as offline). The model server's ``POST /v2/models/<name>/labels`` and
``fraud labels ingest --online`` both call :func:`record_labels`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from fraud_detection.data import schema
from fraud_detection.data.schema import SchemaError
from fraud_detection.features.state.base import LabelOutcome, OnlineStore
from fraud_detection.monitoring.labels import ingest_labels, validate_labels
from fraud_detection.store.base import ArtifactStore

LOG = logging.getLogger(__name__)
#: Most labels one request may carry.
MAX_LABELS_PER_REQUEST = 10_000
_FIELDS = frozenset({schema.TRANSACTION_ID, schema.LABEL, "reported_at"})


@dataclass(frozen=True)
class LabelReceipt:
    """Where a batch of labels went.

    Attributes:
        labels: Labels in the batch (after repeated ids collapsed).
        stored_key: The artifact-store object written, or None without a store.
        online: What the online store applied, or None without one.
    """

    labels: int
    stored_key: str | None
    online: LabelOutcome | None


def labels_from_records(records: Any, *, max_labels: int = MAX_LABELS_PER_REQUEST) -> pd.DataFrame:
    """Validated labels from JSON records ``{"transaction_id", "is_fraud", "reported_at"?}``.

    A record without ``reported_at`` is reported now.

    Args:
        records: The decoded ``labels`` list of a request.
        max_labels: Most records accepted.

    Returns:
        The labels, as :func:`~fraud_detection.monitoring.labels.validate_labels` normalises them.

    Raises:
        SchemaError: Not a non-empty list of objects, an unknown field, too many records, or a bad value; the message
            names the record or the field.
    """
    if not isinstance(records, list) or not records:
        raise SchemaError("'labels' must be a non-empty list of {transaction_id, is_fraud, reported_at} objects")
    if len(records) > max_labels:
        raise SchemaError(f"'labels': {len(records)} labels exceed the limit of {max_labels} per request")
    now = datetime.now(UTC).isoformat()
    rows = []
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise SchemaError(f"'labels[{i}]' must be an object, got {type(record).__name__}")
        unknown = sorted(set(record) - _FIELDS)
        if unknown:
            raise SchemaError(f"'labels[{i}]': unknown field {unknown[0]!r} (fields: {', '.join(sorted(_FIELDS))})")
        ident, label = record.get(schema.TRANSACTION_ID), record.get(schema.LABEL)
        if not isinstance(ident, str) or not ident:
            raise SchemaError(f"'labels[{i}].{schema.TRANSACTION_ID}' must be a non-empty string")
        if type(label) is not int or label not in (0, 1):
            raise SchemaError(f"'labels[{i}].{schema.LABEL}' must be 0 or 1, got {label!r:.30}")
        reported = record.get("reported_at", now)
        if not isinstance(reported, str):
            raise SchemaError(f"'labels[{i}].reported_at' must be an ISO 8601 time string")
        rows.append((ident, label, reported))
    frame = pd.DataFrame(rows, columns=[schema.TRANSACTION_ID, schema.LABEL, "reported_at"])
    return validate_labels(frame, source="'labels'")


def record_labels(labels: pd.DataFrame, *, store: ArtifactStore | None, online: OnlineStore | None) -> LabelReceipt:
    """Store a validated label batch and add it to the online state's terminal fraud counts.

    The store write comes first: if the online store then fails, the labels are kept and sending the batch again
    is safe (a repeated label changes nothing online, and the latest report wins in the store).

    Args:
        labels: Validated labels (``transaction_id``, ``is_fraud``, ``reported_at``).
        store: The artifact store (the payload log's), or None.
        online: The online store, or None.

    Returns:
        Where the labels went.

    Raises:
        ValueError: Neither store is given.
        fraud_detection.features.state.base.OnlineStoreUnavailableError: The online store is unavailable.
    """
    if store is None and online is None:
        raise ValueError("labels need a store or an online store, and none is configured")
    key = ingest_labels(store, labels) if store is not None else None
    outcome = None
    if online is not None:
        pairs: Sequence[tuple[str, int]] = list(
            zip(labels[schema.TRANSACTION_ID].astype(str), labels[schema.LABEL].astype(int), strict=True)
        )
        outcome = online.apply_labels(pairs)
        LOG.info(
            "labels into %s: %d applied, %d unchanged, %d unknown",
            online.uri,
            outcome.applied,
            outcome.unchanged,
            outcome.unknown,
        )
    return LabelReceipt(len(labels), key, outcome)
