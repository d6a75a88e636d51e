"""Backfill: the online state that recording a whole history one transaction at a time would leave, built at once.

``fraud online materialize`` loads it into a store, so that the first live transaction's features equal what the
offline executor computes for it with that history behind it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraud_detection.data import schema
from fraud_detection.features.definitions import HOUR, MINUTE, amount_cents
from fraud_detection.features.online import UNKNOWN_LABEL, tiles_for
from fraud_detection.features.state.base import TRANSACTION_TTL_SECONDS, OnlineStore, Snapshot

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaterializeSummary:
    """What a backfill holds.

    Attributes:
        transactions: Transactions read.
        customers: Customers in the state.
        terminals: Terminals in the state.
        transaction_records: Transactions kept for idempotency and late labels.
        labels: Labels applied to terminal tiles.
        newest: The newest event time (UTC ISO 8601).
    """

    transactions: int
    customers: int
    terminals: int
    transaction_records: int
    labels: int
    newest: str


def _hashes(frame: pd.DataFrame, entity: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for key, group in frame.groupby(entity, sort=False):
        out[str(key)] = dict(zip(group["field"].tolist(), group["value"].tolist(), strict=True))
    return out


def _tile_frame(
    ids: pd.Series, seconds: np.ndarray, index: np.ndarray, values: dict[str, np.ndarray], kind: str
) -> pd.DataFrame:
    frame = pd.DataFrame({"entity": ids.to_numpy(), "idx": index, **values})
    sums = frame.groupby(["entity", "idx"], sort=False).sum().reset_index()
    long = sums.melt(id_vars=["entity", "idx"], var_name="agg", value_name="value")
    long = long[long["value"] != 0] if "f" in values else long
    long["field"] = kind + long["idx"].astype(str) + long["agg"]
    return long[["entity", "field", "value"]]


def _keep(tiles: pd.DataFrame, newest: pd.Series, width: int, horizon: int, kind: str) -> pd.DataFrame:
    if tiles.empty:
        return tiles
    idx = tiles["field"].str.slice(1, -1).astype(np.int64)
    behind = newest.reindex(tiles["entity"]).to_numpy() - horizon
    return tiles[(tiles["field"].str.startswith(kind)) & ((idx.to_numpy() + 1) * width > behind)]


def build_snapshot(raw: pd.DataFrame, label_delay_days: int) -> tuple[Snapshot, MaterializeSummary]:
    """The online state of a history of validated raw transactions.

    Args:
        raw: Transactions satisfying :func:`fraud_detection.data.schema.validate_transactions`; with ``is_fraud``
            their labels are applied (as labels ingested by then would be).
        label_delay_days: The label delay of the served features.

    Returns:
        (the state, a summary).
    """
    if raw.empty:
        return Snapshot({}, {}, {}), MaterializeSummary(0, 0, 0, 0, 0, "")
    seconds = raw[schema.EVENT_TIME].to_numpy(dtype="datetime64[s]").astype(np.int64)
    cents = amount_cents(raw[schema.AMOUNT].to_numpy(dtype=np.float64))
    minute, hour = seconds // MINUTE, seconds // HOUR
    customers = raw[schema.CUSTOMER_ID].astype(str)
    terminals = raw[schema.TERMINAL_ID].astype(str)
    has_label = schema.LABEL in raw.columns
    label = raw[schema.LABEL].to_numpy(dtype=np.int64) if has_label else np.zeros(len(raw), dtype=np.int64)

    c_tiles, t_tiles = tiles_for("customer", label_delay_days), tiles_for("terminal", label_delay_days)
    c_newest = pd.Series(seconds).groupby(customers.to_numpy()).max()
    t_newest = pd.Series(seconds).groupby(terminals.to_numpy()).max()
    customer_values = {"n": np.ones(len(raw), dtype=np.int64), "s": cents, "q": cents * cents}
    fine = _keep(
        _tile_frame(customers, seconds, minute, customer_values, "f"),
        c_newest,
        c_tiles.fine_seconds,
        c_tiles.fine_horizon_seconds,
        "f",
    )
    coarse = _keep(
        _tile_frame(customers, seconds, hour, customer_values, "h"),
        c_newest,
        c_tiles.coarse_seconds,
        c_tiles.coarse_horizon_seconds,
        "h",
    )
    if schema.CUSTOMER_SINCE in raw.columns and raw[schema.CUSTOMER_SINCE].notna().all():
        since_each = raw[schema.CUSTOMER_SINCE].to_numpy(dtype="datetime64[s]").astype(np.int64)
        # The latest transaction's customer_since is the state's (recording in order keeps the last one given).
        order = np.argsort(seconds, kind="stable")
        since = pd.Series(since_each[order]).groupby(customers.to_numpy()[order]).last()
    else:
        since = pd.Series(seconds).groupby(customers.to_numpy()).min()
    extra_c = pd.concat(
        [
            pd.DataFrame({"entity": since.index, "field": "since", "value": since.to_numpy()}),
            pd.DataFrame({"entity": c_newest.index, "field": "newest", "value": c_newest.to_numpy()}),
        ]
    )
    customer_hashes = _hashes(pd.concat([fine, coarse, extra_c]).rename(columns={"entity": "id"}), "id")

    terminal_values = {"n": np.ones(len(raw), dtype=np.int64), "f": label}
    t_frame = _keep(
        _tile_frame(terminals, seconds, hour, terminal_values, "h"),
        t_newest,
        t_tiles.coarse_seconds,
        t_tiles.coarse_horizon_seconds,
        "h",
    )
    t_frame = t_frame[~(t_frame["field"].str.endswith("f") & (t_frame["value"] == 0))]
    extra_t = pd.DataFrame({"entity": t_newest.index, "field": "newest", "value": t_newest.to_numpy()})
    terminal_hashes = _hashes(pd.concat([t_frame, extra_t]).rename(columns={"entity": "id"}), "id")

    newest = int(seconds.max())
    recent = seconds > newest - TRANSACTION_TTL_SECONDS
    labels_text = label.astype(str) if has_label else np.full(len(raw), UNKNOWN_LABEL)
    records = (
        terminals.to_numpy()[recent].astype(object)
        + "\t"
        + hour[recent].astype(str).astype(object)
        + "\t"
        + labels_text[recent].astype(object)
    )
    transactions = dict(
        zip(raw[schema.TRANSACTION_ID].astype(str).to_numpy()[recent].tolist(), records.tolist(), strict=True)
    )
    summary = MaterializeSummary(
        transactions=len(raw),
        customers=len(customer_hashes),
        terminals=len(terminal_hashes),
        transaction_records=len(transactions),
        labels=int(label.sum()) if has_label else 0,
        newest=pd.Timestamp(newest, unit="s", tz="UTC").isoformat(),
    )
    LOG.info(
        "materialized %d transactions: %d customers, %d terminals, %d transaction records",
        summary.transactions,
        summary.customers,
        summary.terminals,
        summary.transaction_records,
    )
    return Snapshot(customer_hashes, terminal_hashes, transactions), summary


def backfill(raw: pd.DataFrame, store: OnlineStore) -> MaterializeSummary:
    """Load the state of a history into an online store (idempotent: the same history twice changes nothing).

    Args:
        raw: Validated raw transactions (with ``is_fraud`` their labels are applied).
        store: The online store; its label delay sets the terminal horizon.

    Returns:
        What was loaded.
    """
    snapshot, summary = build_snapshot(raw, store.label_delay_days)
    store.load(snapshot)
    LOG.info("backfilled %s: %d customers, %d terminals", store.uri, summary.customers, summary.terminals)
    return summary
