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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

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


def tile_field(name: str, aggregates: str) -> tuple[str, int, int] | None:
    """Where a hash field of the layout above sits, if it is a tile counter.

    Args:
        name: The field (``f<minute><agg>``, ``h<hour><agg>``, ``since``, ...).
        aggregates: The entity's counters in order (``nsq`` or ``nf``).

    Returns:
        (``f`` or ``h``, tile index, the counter's position in ``aggregates``), or None for another field.
    """
    if name[:1] in ("f", "h") and name[-1:] in aggregates:
        return name[0], int(name[1:-1]), aggregates.index(name[-1])
    return None


def tile_fields(kind: str, tiles: Iterable[tuple[int, Sequence[int]]], aggregates: str) -> dict[str, int]:
    """A tile series as hash fields of the layout above, one per counter (the inverse of :func:`tile_field`).

    Args:
        kind: ``f`` (minute tiles) or ``h`` (hour tiles).
        tiles: (tile index, its counters) pairs.
        aggregates: The entity's counters in order.

    Returns:
        ``<kind><index><agg>`` to the counter.
    """
    out: dict[str, int] = {}
    for idx, counters in tiles:
        for agg, value in zip(aggregates, counters, strict=True):
            out[f"{kind}{idx}{agg}"] = int(value)
    return out


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


def tile_ranges(seconds: int, label_delay_days: int) -> tuple[int, ...]:
    """Each window of a transaction as half-open ranges of tile indexes, four integers per window of :data:`WINDOWS`.

    ``fine_lo, fine_hi`` (minute tiles) and ``coarse_lo, coarse_hi`` (hour tiles): coarse tiles cover whole hours from
    an hour-aligned start, fine tiles the rest. The windows' bounds are tile-aligned (see :func:`window_bounds`), so
    summing the counters of those tiles is exact. Stores sum with these ranges, so the windows stay defined here only.
    Every bound is a function of the transaction's minute, so the ranges are computed once per minute (and label
    delay) and remembered.

    Args:
        seconds: The transaction's event time (epoch seconds).
        label_delay_days: The label delay.

    Returns:
        ``4 * len(WINDOWS)`` integers.
    """
    return _minute_ranges(seconds // MINUTE, label_delay_days)


@lru_cache(maxsize=4096)
def _minute_ranges(minute: int, label_delay_days: int) -> tuple[int, ...]:
    seconds = minute * MINUTE
    out: list[int] = []
    for spec in WINDOWS:
        start, end = window_bounds(seconds, spec, label_delay_days)
        if start % HOUR == 0:
            split = end - end % HOUR
            out += [split // MINUTE, end // MINUTE, start // HOUR, split // HOUR]
        else:
            out += [start // MINUTE, end // MINUTE, 0, 0]
    return tuple(out)


class TileSeries:
    """One entity's tiles of one width (minute or hour), sorted by tile index, as running sums per counter.

    ``cumulative[c][k]`` is counter ``c`` summed over the first ``k`` tiles, so a window's sums
    (:func:`window_sums`) are two binary searches and one subtraction per counter, whatever the number of tiles in
    it. Recording an event in the newest tile (the usual case) touches one running sum per counter; an out-of-order
    event adds to the sums after its tile.
    Counters are Python integers, so every sum is exact.

    Args:
        width: Counters per tile (3 for a customer: n, s, q; 2 for a terminal: n, f).
    """

    def __init__(self, width: int) -> None:
        self.index: list[int] = []
        self.cumulative: list[list[int]] = [[0] for _ in range(width)]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def width(self) -> int:
        """Counters per tile."""
        return len(self.cumulative)

    def add(self, idx: int, values: Sequence[int]) -> None:
        """Add to one tile's counters (creating it).

        Args:
            idx: Tile index.
            values: One increment per counter.
        """
        index = self.index
        if not index or idx > index[-1]:  # a new newest tile
            index.append(idx)
            for running, value in zip(self.cumulative, values, strict=True):
                running.append(running[-1] + value)
            return
        if idx == index[-1]:  # the newest tile
            for running, value in zip(self.cumulative, values, strict=True):
                running[-1] += value
            return
        pos = bisect_left(index, idx)
        if index[pos] != idx:  # an empty tile before the newest: insert it
            index.insert(pos, idx)
            for running in self.cumulative:
                running.insert(pos + 1, running[pos])
        for running, value in zip(self.cumulative, values, strict=True):
            if value:
                for k in range(pos + 1, len(running)):
                    running[k] += value

    def replace(self, tiles: Mapping[int, Sequence[int]]) -> None:
        """Replace the whole series (a load): tiles given as index to counters.

        Args:
            tiles: Tile index to one value per counter.
        """
        self.index = sorted(tiles)
        self.cumulative = [[0] for _ in range(self.width)]
        for idx in self.index:
            for running, value in zip(self.cumulative, tiles[idx], strict=True):
                running.append(running[-1] + value)

    def drop_before(self, idx: int) -> None:
        """Delete the tiles with an index below ``idx``.

        Args:
            idx: First index kept.
        """
        k = bisect_left(self.index, idx)
        if k:
            del self.index[:k]
            for c, running in enumerate(self.cumulative):
                base = running[k]
                self.cumulative[c] = [total - base for total in running[k:]]

    def items(self) -> Iterator[tuple[int, list[int]]]:
        """(tile index, its counters), in index order."""
        for pos, idx in enumerate(self.index):
            yield idx, [running[pos + 1] - running[pos] for running in self.cumulative]


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
    fine_index, coarse_index = fine.index, coarse.index
    running = list(zip(fine.cumulative, coarse.cumulative, strict=True))
    for i in range(0, len(ranges), 4):
        fine_lo, fine_hi, coarse_lo, coarse_hi = ranges[i : i + 4]
        a = b = c = d = 0
        if fine_lo < fine_hi:
            a, b = bisect_left(fine_index, fine_lo), bisect_left(fine_index, fine_hi)
        if coarse_lo < coarse_hi:
            c, d = bisect_left(coarse_index, coarse_lo), bisect_left(coarse_index, coarse_hi)
        out += [f[b] - f[a] + h[d] - h[c] for f, h in running]
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
