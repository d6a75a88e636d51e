"""What the payload log holds: its columns and prefix, and the keyed hash of identifiers."""

from __future__ import annotations

import hashlib
import hmac

from fraud_detection.data import schema
from fraud_detection.model.bundle import SCORE_COLUMN

PAYLOAD_PREFIX = "payload-logs"
DECISION_COLUMN = "decision"
TRANSACTION_KEY = "transaction_key"
#: Columns of every payload-log file, in order (raw identifier columns follow when enabled).
BASE_COLUMNS: tuple[str, ...] = (
    "request_id",
    "row",
    "scored_at",
    "model_name",
    "model_version",
    *schema.FEATURES,
    SCORE_COLUMN,
    DECISION_COLUMN,
    "imputed",
    TRANSACTION_KEY,
    "customer_key",
    "terminal_key",
    "event_time",
)
#: Columns of a raw-transaction row (empty for rows scored from features): what retraining from production reads.
EVENT_TIME_COLUMN = "event_time"
CUSTOMER_KEY = "customer_key"
TERMINAL_KEY = "terminal_key"
RAW_IDENTIFIERS: tuple[str, ...] = (schema.TRANSACTION_ID, schema.CUSTOMER_ID, schema.TERMINAL_ID)


def hash_identifier(value: str, key: bytes | None = None) -> str:
    """The pseudonymous key under which an identifier is logged (labels join on it).

    With a key (``FRAUD_IDENTIFIER_KEY``, from a Secret) it is HMAC-SHA256, which nobody without the key can
    reverse, even for sequential ids; without one it falls back to a plain sha256 (a laptop default, logged as a
    warning by the payload logger).

    Args:
        value: Raw identifier, e.g. a transaction id.
        key: The HMAC key; None for a plain digest.

    Returns:
        Hex digest.
    """
    data = str(value).encode("utf-8")
    if key:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


#: Columns an object must have to be read as payload log (older objects may lack the later columns).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "request_id",
    "row",
    "scored_at",
    "model_version",
    *schema.FEATURES,
    SCORE_COLUMN,
    DECISION_COLUMN,
)
#: Key of ``DataFrame.attrs`` under which :func:`read_payload_log` lists the objects it skipped.
SKIPPED_ATTR = "skipped_keys"
