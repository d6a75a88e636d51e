"""Training data from production: the raw transactions the server scored, with the labels that came back.

Every raw-transaction request leaves a payload-log row with its event time, amount and keyed hashes of its
transaction, customer and terminal ids (HMAC with ``FRAUD_IDENTIFIER_KEY``). Joined with the ingested labels (hashed
with the same key) those rows are a transaction history in the data contract, with the hashes as ids: every feature
only compares ids for equality, so features computed on it equal those computed on the clear ids. A transaction with
no label is taken as legitimate (banks report fraud, not its absence); a retried or re-scored transaction counts once.
Rows scored from features carry no raw transaction and are left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from fraud_detection.data import schema
from fraud_detection.monitoring.labels import load_labels
from fraud_detection.monitoring.payload_columns import (
    CUSTOMER_KEY,
    EVENT_TIME_COLUMN,
    TERMINAL_KEY,
    TRANSACTION_KEY,
    hash_identifier,
)
from fraud_detection.monitoring.payload_reader import read_payload_log
from fraud_detection.store.base import ArtifactStore

LOG = logging.getLogger(__name__)
#: The ``data_source`` value that trains on the payload log plus labels.
PAYLOAD_LOG_SOURCE = "payload-log"


@dataclass(frozen=True)
class ProductionData:
    """What was read.

    Attributes:
        transactions: Raw transactions in the data contract (ids are keyed hashes), in event order.
        logged_rows: Payload-log rows read.
        raw_rows: Rows that carried a raw transaction.
        labelled_fraud: Transactions labelled fraud.
    """

    transactions: pd.DataFrame
    logged_rows: int
    raw_rows: int
    labelled_fraud: int

    def describe(self) -> str:
        """One line for the model's lineage."""
        return (
            f"payload-log({len(self.transactions)} transactions from {self.raw_rows} raw rows of {self.logged_rows} "
            f"logged, {self.labelled_fraud} labelled fraud)"
        )


def transactions_from_log(
    log_store: ArtifactStore,
    model_name: str,
    *,
    days: int = 183,
    identifier_key: bytes | None = None,
    now: datetime | None = None,
) -> ProductionData:
    """The scored raw transactions of the last ``days`` days, labelled from the ingested labels.

    Args:
        log_store: Store holding ``payload-logs/`` and ``labels/``.
        model_name: Served model name (every version's rows are read).
        days: How far back to read, by scoring time.
        identifier_key: The HMAC key the payload log hashed ids with (labels are hashed with it to join).
        now: End of the window (default: now).

    Returns:
        The transactions and counts.

    Raises:
        ValueError: No raw transaction was logged in the window (nothing to train on).
    """
    end = now or datetime.now(UTC)
    log = read_payload_log(log_store, model_name, end - timedelta(days=days), end + timedelta(seconds=1))
    has_raw = [c for c in (EVENT_TIME_COLUMN, CUSTOMER_KEY, TERMINAL_KEY) if c in log.columns]
    if len(has_raw) < 3:
        raw = log.iloc[0:0]
    else:
        raw = log.dropna(subset=[EVENT_TIME_COLUMN, CUSTOMER_KEY, TERMINAL_KEY, TRANSACTION_KEY])
    if raw.empty:
        raise ValueError(
            f"payload log of {model_name!r} in {log_store.uri()}: no raw transaction scored in the last {days} days "
            f"({len(log)} logged rows): serve raw transactions (--online_store) to train on production"
        )
    raw = raw.sort_values(["scored_at", "request_id", "row"], kind="stable").drop_duplicates(TRANSACTION_KEY)
    labels = load_labels(log_store)
    label_by_key: dict[str, int] = {}
    if len(labels):
        latest = labels.sort_values("reported_at", kind="stable").drop_duplicates(schema.TRANSACTION_ID, keep="last")
        keys = latest[schema.TRANSACTION_ID].astype(str).map(lambda v: hash_identifier(v, identifier_key))
        label_by_key = dict(zip(keys, latest[schema.LABEL].astype(int), strict=True))
    frame = pd.DataFrame(
        {
            schema.TRANSACTION_ID: raw[TRANSACTION_KEY].astype(str).to_numpy(),
            schema.EVENT_TIME: pd.to_datetime(raw[EVENT_TIME_COLUMN], utc=True).to_numpy(),
            schema.CUSTOMER_ID: raw[CUSTOMER_KEY].astype(str).to_numpy(),
            schema.TERMINAL_ID: raw[TERMINAL_KEY].astype(str).to_numpy(),
            schema.AMOUNT: raw[schema.AMOUNT].astype(float).to_numpy(),
            schema.LABEL: raw[TRANSACTION_KEY].map(label_by_key).fillna(0).astype(int).to_numpy(),
        }
    )
    frame[schema.EVENT_TIME] = pd.to_datetime(frame[schema.EVENT_TIME], utc=True)
    frame = frame.sort_values(schema.EVENT_TIME, kind="stable").reset_index(drop=True)
    data = ProductionData(frame, len(log), len(raw), int(frame[schema.LABEL].sum()))
    LOG.info("%s", data.describe())
    return data
