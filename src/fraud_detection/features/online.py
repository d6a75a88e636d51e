r"""The online executor of the feature declarations: a transaction's features from its entities' tile state.

An online store keeps, per customer and per terminal, a hash of integer tile counters (the layout below). Scoring a
raw transaction sends the store its windows as tile ranges (:func:`tile_ranges`, from the declarations); the store
sums the tiles in those ranges as they were *before* the transaction (:func:`window_sums`, or the same loop in Redis's
Lua next to the data), records the transaction, and answers the window aggregates only (:class:`PreStates`); the
model inputs come from the same :func:`~fraud_detection.features.definitions.derive_matrix` the offline executor
uses. Since every window ends at the start of the transaction's minute (or behind the label delay), the features
depend only on tiles before it, whatever order events arrive in.

Hash layout (shared by every store backend):

* customer ``c:<customer_id>``: ``f<minute>n|s|q`` (fine tiles: transactions, amount cents, amount cents squared),
  ``h<hour>n|s|q`` (coarse tiles), ``since`` (relationship start, epoch seconds), ``newest`` (newest event seen);
* terminal ``t:<terminal_id>``: ``h<hour>n`` (transactions), ``h<hour>f`` (known frauds), ``newest``;
* transaction ``x:<transaction_id>``: ``<terminal_id>\t<hour>\t<label>`` (label ``-`` until one is ingested): makes
  recording idempotent and lets a later label find its terminal tile.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from fraud_detection.data import schema
from fraud_detection.features.definitions import (
    AGGREGATES,
    CUSTOMER_TILES,
    CUSTOMER_WINDOWS,
    HOUR,
    MINUTE,
    TERMINAL_WINDOWS,
    Tiles,
    WindowSpec,
    derive_matrix,
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
class PreStates:
    """What a store read for a batch of transactions, each *before* it was recorded.

    Stores compute the window aggregates themselves (Redis in its script, next to the data), so only these numbers
    travel, whatever an entity's history holds. Iterating yields one-row batches.

    Attributes:
        aggregates: (N, len(AGGREGATES)) int64: each row's window aggregates, in
            :data:`~fraud_detection.features.definitions.AGGREGATES` order.
        since: (N,) int64: the customer's relationship start in the state, at most the transaction's own time (its
            own time for a customer the state does not know).
        seen: (N,) bool: the transaction was recorded before (a retry): it was not recorded again.
    """

    aggregates: np.ndarray
    since: np.ndarray
    seen: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int]] | Sequence[int]) -> PreStates:
        """From ``[seen, since, *aggregates]`` integers per transaction (how stores answer), nested or flat.

        Args:
            rows: One list per transaction, or all of them in one flat list.

        Returns:
            The batch.
        """
        table = np.array(rows, dtype=np.int64).reshape(-1, 2 + len(AGGREGATES))
        return cls(table[:, 2:], table[:, 1], table[:, 0] != 0)

    @classmethod
    def empty(cls, transactions: Sequence[RawTransaction]) -> PreStates:
        """No history (the degraded mode when the store is unavailable).

        Args:
            transactions: The transactions.

        Returns:
            Zero aggregates, each transaction its own relationship start, nothing seen.
        """
        since = np.fromiter((tx.seconds for tx in transactions), dtype=np.int64, count=len(transactions))
        return cls(np.zeros((len(transactions), len(AGGREGATES)), dtype=np.int64), since, np.zeros(len(since), bool))

    def __len__(self) -> int:
        return int(self.since.shape[0])

    def __getitem__(self, i: int) -> PreStates:
        return PreStates(self.aggregates[i : i + 1], self.since[i : i + 1], self.seen[i : i + 1])

    def __iter__(self) -> Iterator[PreStates]:
        for i in range(len(self)):
            yield self[i]


def transaction_record(tx: RawTransaction) -> str:
    """The value stored under the transaction's key (terminal, hour, label not yet known).

    Args:
        tx: The transaction.

    Returns:
        The record.
    """
    return f"{tx.terminal_id}\t{tx.seconds // HOUR}\t{UNKNOWN_LABEL}"


#: Every window in :data:`AGGREGATES` order: the customer windows, then the terminal windows.
WINDOWS: tuple[WindowSpec, ...] = CUSTOMER_WINDOWS + TERMINAL_WINDOWS


def tile_ranges(seconds: int, label_delay_days: int) -> list[int]:
    """Each window of a transaction as half-open ranges of tile indexes, four integers per window of :data:`WINDOWS`.

    ``fine_lo, fine_hi`` (minute tiles) and ``coarse_lo, coarse_hi`` (hour tiles): coarse tiles cover whole hours from
    an hour-aligned start, fine tiles the rest. The windows' bounds are tile-aligned (see :func:`window_bounds`), so
    summing the counters of those tiles is exact. Stores sum with these ranges, so the windows stay defined here only.

    Args:
        seconds: The transaction's event time (epoch seconds).
        label_delay_days: The label delay.

    Returns:
        ``4 * len(WINDOWS)`` integers.
    """
    out: list[int] = []
    for spec in WINDOWS:
        start, end = window_bounds(seconds, spec, label_delay_days)
        if start % HOUR == 0:
            split = end - end % HOUR
            out += [split // MINUTE, end // MINUTE, start // HOUR, split // HOUR]
        else:
            out += [start // MINUTE, end // MINUTE, 0, 0]
    return out


class TileSeries:
    """One entity's tiles of one width (minute or hour), sorted by tile index, counters in parallel lists.

    A window's sums are two binary searches and one builtin ``sum`` over a slice per counter, whatever the number of
    tiles; recording an in-order event appends.

    Args:
        width: Counters per tile (3 for a customer: n, s, q; 2 for a terminal: n, f).
    """

    def __init__(self, width: int) -> None:
        self.index: list[int] = []
        self.counters: list[list[int]] = [[] for _ in range(width)]

    def __len__(self) -> int:
        return len(self.index)

    def _position(self, idx: int) -> int:
        pos = bisect_left(self.index, idx)
        if pos == len(self.index) or self.index[pos] != idx:
            self.index.insert(pos, idx)
            for counter in self.counters:
                counter.insert(pos, 0)
        return pos

    def add(self, idx: int, values: Sequence[int]) -> None:
        """Add to one tile's counters (creating it).

        Args:
            idx: Tile index.
            values: One increment per counter.
        """
        pos = self._position(idx)
        for counter, value in zip(self.counters, values, strict=True):
            counter[pos] += value

    def set(self, idx: int, which: int, value: int) -> None:
        """Set one counter of one tile (creating it), as a load does.

        Args:
            idx: Tile index.
            which: Counter position.
            value: Its value.
        """
        self.counters[which][self._position(idx)] = value

    def sums(self, lo: int, hi: int) -> list[int]:
        """Each counter summed over the tiles with ``lo <= index < hi``.

        Args:
            lo: First tile index.
            hi: End tile index (excluded).

        Returns:
            One sum per counter.
        """
        a, b = bisect_left(self.index, lo), bisect_left(self.index, hi)
        return [sum(counter[a:b]) for counter in self.counters]

    def drop_before(self, idx: int) -> None:
        """Delete the tiles with an index below ``idx``.

        Args:
            idx: First index kept.
        """
        k = bisect_left(self.index, idx)
        if k:
            del self.index[:k]
            for counter in self.counters:
                del counter[:k]

    def items(self) -> Iterator[tuple[int, list[int]]]:
        """(tile index, its counters), in index order."""
        for pos, idx in enumerate(self.index):
            yield idx, [counter[pos] for counter in self.counters]


def window_sums(fine: TileSeries, coarse: TileSeries, ranges: Sequence[int]) -> list[int]:
    """One entity's window aggregates from its tiles (the embedded store's executor; Redis runs the same in Lua).

    Args:
        fine: Its minute tiles.
        coarse: Its hour tiles (same width).
        ranges: The entity's windows as :func:`tile_ranges` gives them (four integers per window).

    Returns:
        One sum per counter per window, windows in order.
    """
    out: list[int] = []
    for i in range(0, len(ranges), 4):
        fine_lo, fine_hi, coarse_lo, coarse_hi = ranges[i : i + 4]
        f = fine.sums(fine_lo, fine_hi) if fine_lo < fine_hi else None
        c = coarse.sums(coarse_lo, coarse_hi) if coarse_lo < coarse_hi else None
        if f is None and c is None:
            out += [0] * len(fine.counters)
        elif c is None or f is None:
            out += f or c or []
        else:
            out += [x + y for x, y in zip(f, c, strict=True)]
    return out


def online_feature_matrix(
    transactions: Sequence[RawTransaction],
    states: PreStates,
    night_end_hour: int = 6,
) -> np.ndarray:
    """The model inputs of a batch of transactions from their pre-states, in one vectorised derivation.

    Args:
        transactions: The transactions.
        states: What the store read for them.
        night_end_hour: Hours before this (UTC) count as night.

    Returns:
        (N, F) float64 in schema order.
    """
    n = len(transactions)
    since = states.since
    if any(tx.customer_since is not None for tx in transactions):
        given = [tx.customer_since for tx in transactions]
        since = np.array([s if s is not None else k for s, k in zip(given, since.tolist(), strict=True)], np.int64)
    return derive_matrix(
        np.fromiter((tx.seconds for tx in transactions), dtype=np.int64, count=n),
        np.fromiter((tx.amount for tx in transactions), dtype=np.float64, count=n),
        since,
        states.aggregates,
        night_end_hour=night_end_hour,
    )


def online_features(tx: RawTransaction, state: PreStates, night_end_hour: int = 6) -> dict[str, float]:
    """The model inputs of one transaction from its pre-state.

    Args:
        tx: The transaction.
        state: What the store read for it (a one-row batch).
        night_end_hour: Hours before this (UTC) count as night.

    Returns:
        Feature name to value, for every feature of the schema.
    """
    row = online_feature_matrix([tx], state, night_end_hour)[0]
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
