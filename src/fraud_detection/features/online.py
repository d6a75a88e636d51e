r"""The online executor of the feature declarations: a transaction's features from its entities' tile state.

An online store keeps, per customer and per terminal, a hash of integer tile counters (the layout below). Scoring a
raw transaction reads both hashes as they were *before* the transaction, computes its window aggregates from the
tiles with :func:`aggregates_from_state`, and derives the model inputs with the same
:func:`~fraud_detection.features.definitions.derive_features` the offline executor uses; the store then records the
transaction. Since every window ends at the start of the transaction's minute (or behind the label delay), the
features depend only on tiles before it, whatever order events arrive in.

Hash layout (shared by every store backend):

* customer ``c:<customer_id>``: ``f<minute>n|s|q`` (fine tiles: transactions, amount cents, amount cents squared),
  ``h<hour>n|s|q`` (coarse tiles), ``since`` (relationship start, epoch seconds), ``newest`` (newest event seen);
* terminal ``t:<terminal_id>``: ``h<hour>n`` (transactions), ``h<hour>f`` (known frauds), ``newest``;
* transaction ``x:<transaction_id>``: ``<terminal_id>\t<hour>\t<label>`` (label ``-`` until one is ingested): makes
  recording idempotent and lets a later label find its terminal tile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fraud_detection.data import schema
from fraud_detection.features.definitions import (
    CUSTOMER_TILES,
    CUSTOMER_WINDOWS,
    HOUR,
    MINUTE,
    TERMINAL_WINDOWS,
    Tiles,
    WindowSpec,
    amount_cents,
    derive_features,
    terminal_tiles,
    window_bounds,
)

CUSTOMER_PREFIX = "c:"
TERMINAL_PREFIX = "t:"
TRANSACTION_PREFIX = "x:"
UNKNOWN_LABEL = "-"


@dataclass(frozen=True)
class RawTransaction:
    """A transaction as a payment system sends it.

    Attributes:
        transaction_id: Unique id (recording is idempotent per id).
        seconds: Event time, epoch seconds (UTC).
        customer_id: Card or customer.
        terminal_id: Terminal or merchant.
        amount: Amount (>= 0).
        customer_since: Relationship start, epoch seconds; None to use the state's.
    """

    transaction_id: str
    seconds: int
    customer_id: str
    terminal_id: str
    amount: float
    customer_since: int | None = None


@dataclass(frozen=True)
class PreState:
    """The entities' state before a transaction, as a store read it.

    Attributes:
        customer: The customer's hash (field to integer).
        terminal: The terminal's hash.
        seen: The transaction was recorded before (a retry): it was not recorded again.
    """

    customer: Mapping[str, int]
    terminal: Mapping[str, int]
    seen: bool = False


def tile_fields(tx: RawTransaction) -> tuple[dict[str, int], dict[str, int]]:
    """The counter increments recording ``tx`` adds to its customer's and terminal's hashes.

    Args:
        tx: The transaction.

    Returns:
        (customer increments, terminal increments).
    """
    cents = int(amount_cents(np.array([tx.amount]))[0])
    minute, hour = tx.seconds // MINUTE, tx.seconds // HOUR
    customer: dict[str, int] = {}
    for prefix in (f"f{minute}", f"h{hour}"):
        customer[f"{prefix}n"] = 1
        customer[f"{prefix}s"] = cents
        customer[f"{prefix}q"] = cents * cents
    return customer, {f"h{hour}n": 1}


def transaction_record(tx: RawTransaction) -> str:
    """The value stored under the transaction's key (terminal, hour, label not yet known).

    Args:
        tx: The transaction.

    Returns:
        The record.
    """
    return f"{tx.terminal_id}\t{tx.seconds // HOUR}\t{UNKNOWN_LABEL}"


def expired_fields(fields: Mapping[str, int], tiles: Tiles, newest: int) -> list[str]:
    """Tile fields that fell behind the entity's horizons (what a store deletes to stay bounded).

    Args:
        fields: The entity's hash.
        tiles: Its tile layout.
        newest: Its newest event time.

    Returns:
        The field names to delete.
    """
    out = []
    for name in fields:
        kind = name[:1]
        if kind == "f" and tiles.fine_seconds:
            if (int(name[1:-1]) + 1) * tiles.fine_seconds <= newest - tiles.fine_horizon_seconds:
                out.append(name)
        elif kind == "h" and (int(name[1:-1]) + 1) * tiles.coarse_seconds <= newest - tiles.coarse_horizon_seconds:
            out.append(name)
    return out


def _tile_ranges(spec: WindowSpec, seconds: int, label_delay_days: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The window as half-open ranges of fine (minute) and coarse (hour) tile indexes.

    Coarse tiles cover whole hours from an hour-aligned start, fine tiles the rest; the windows' bounds are
    tile-aligned (see :func:`window_bounds`), so summing those tiles is exact.
    """
    start_a, end_a = window_bounds(np.asarray(seconds, dtype=np.int64), spec, label_delay_days)
    start, end = int(start_a), int(end_a)
    if start % HOUR == 0:
        split = end - end % HOUR
        return (split // MINUTE, end // MINUTE), (start // HOUR, split // HOUR)
    return (start // MINUTE, end // MINUTE), (0, 0)


def _window_sums(
    fields: Mapping[str, int],
    windows: Sequence[tuple[str, tuple[int, int], tuple[int, int]]],
    aggregates: str,
    out: dict[str, int],
) -> None:
    """Add each tile counter of one hash to the windows that contain its tile (one pass over the hash)."""
    for name in [f"{w}_{a}" for w, _, _ in windows for a in aggregates]:
        out[name] = 0
    for name, value in fields.items():
        kind = name[0]
        if kind != "f" and kind != "h":
            continue
        agg = name[-1]
        if agg not in aggregates:
            continue
        idx = int(name[1:-1])
        for window, fine, coarse in windows:
            lo, hi = fine if kind == "f" else coarse
            if lo <= idx < hi:
                out[f"{window}_{agg}"] += int(value)


def aggregates_from_state(tx: RawTransaction, state: PreState, label_delay_days: int) -> dict[str, int]:
    """The window aggregates of ``tx`` from its entities' pre-state (the offline executor's names and values).

    Args:
        tx: The transaction.
        state: Its customer's and terminal's hashes before it.
        label_delay_days: The label delay.

    Returns:
        ``<window name>_<aggregate>`` to its integer value.
    """
    out: dict[str, int] = {}
    customer = [(s.name, *_tile_ranges(s, tx.seconds, label_delay_days)) for s in CUSTOMER_WINDOWS]
    _window_sums(state.customer, customer, "nsq", out)
    terminal = [(s.name, *_tile_ranges(s, tx.seconds, label_delay_days)) for s in TERMINAL_WINDOWS]
    _window_sums(state.terminal, terminal, "nf", out)
    return out


def since_for(tx: RawTransaction, state: PreState) -> int:
    """The relationship start used for ``tx``.

    Its own ``customer_since``, else the state's first known transaction (or the transaction itself).

    Args:
        tx: The transaction.
        state: Its pre-state.

    Returns:
        Epoch seconds.
    """
    if tx.customer_since is not None:
        return tx.customer_since
    known = state.customer.get("since")
    return min(int(known), tx.seconds) if known is not None else tx.seconds


def online_feature_matrix(
    transactions: Sequence[RawTransaction],
    states: Sequence[PreState],
    label_delay_days: int,
    night_end_hour: int = 6,
) -> np.ndarray:
    """The model inputs of a batch of transactions from their entities' pre-states, in one vectorised derivation.

    Args:
        transactions: The transactions.
        states: Each one's customer and terminal hashes before it.
        label_delay_days: The label delay.
        night_end_hour: Hours before this (UTC) count as night.

    Returns:
        (N, F) float64 in schema order.
    """
    rows = [aggregates_from_state(tx, s, label_delay_days) for tx, s in zip(transactions, states, strict=True)]
    aggregates = {name: np.fromiter((r[name] for r in rows), dtype=np.int64, count=len(rows)) for name in rows[0]}
    features = derive_features(
        np.fromiter((tx.seconds for tx in transactions), dtype=np.int64, count=len(rows)),
        np.fromiter((tx.amount for tx in transactions), dtype=np.float64, count=len(rows)),
        np.fromiter((since_for(tx, s) for tx, s in zip(transactions, states, strict=True)), np.int64, len(rows)),
        aggregates,
        night_end_hour=night_end_hour,
    )
    return np.column_stack([features[name] for name in schema.FEATURES])


def online_features(
    tx: RawTransaction, state: PreState, label_delay_days: int, night_end_hour: int = 6
) -> dict[str, float]:
    """The model inputs of one transaction from its entities' pre-state.

    Args:
        tx: The transaction.
        state: Its customer's and terminal's hashes before it.
        label_delay_days: The label delay.
        night_end_hour: Hours before this (UTC) count as night.

    Returns:
        Feature name to value, for every feature of the schema.
    """
    row = online_feature_matrix([tx], [state], label_delay_days, night_end_hour)[0]
    return dict(zip(schema.FEATURES, row.tolist(), strict=True))


def tiles_for(kind: str, label_delay_days: int) -> Tiles:
    """The tile layout of an entity kind.

    Args:
        kind: ``customer`` or ``terminal``.
        label_delay_days: The label delay.

    Returns:
        Its tiles.
    """
    return CUSTOMER_TILES if kind == "customer" else terminal_tiles(label_delay_days)
