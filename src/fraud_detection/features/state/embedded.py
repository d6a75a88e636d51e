"""The embedded online store: the state in this process's memory, persisted to a directory.

For one model server (a laptop, ``make run``, tests). With a directory, every change is appended to
``journal.jsonl`` before the call returns and the whole state is compacted into ``state.json`` on :meth:`load` and
:meth:`close`; opening the directory again replays both, so a server started on a materialized directory sees its
state. A lock file keeps a second process out (use Redis to share state between replicas).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from fraud_detection.features.definitions import (
    CUSTOMER_AGGREGATES,
    CUSTOMER_WINDOWS,
    HOUR,
    MINUTE,
    TERMINAL_AGGREGATES,
    Tiles,
    amount_cents,
)
from fraud_detection.features.online import (
    CUSTOMER_PREFIX,
    TERMINAL_PREFIX,
    UNKNOWN_LABEL,
    PreStates,
    RawTransaction,
    TileSeries,
    tile_field,
    tile_fields,
    tile_ranges,
    tiles_for,
    transaction_record,
    window_sums,
)
from fraud_detection.features.state.base import (
    PRUNE_EVERY,
    LabelOutcome,
    OnlineStore,
    OnlineStoreUnavailableError,
    Snapshot,
)
from fraud_detection.store.files import atomic_file

LOG = logging.getLogger(__name__)
STATE_FILE = "state.json"
JOURNAL_FILE = "journal.jsonl"
LOCK_FILE = ".lock"
#: Encodes journal lines (compact; the same text as ``json.dumps(entry, separators=(",", ":"))``, built once).
_JOURNAL_ENCODER = json.JSONEncoder(separators=(",", ":"))
#: Where a customer's window ranges end in :func:`~fraud_detection.features.online.tile_ranges`'s answer.
_CUSTOMER_RANGES = 4 * len(CUSTOMER_WINDOWS)


@dataclass
class _Entity:
    """One customer's or terminal's state, parsed: its minute and hour tiles (the hash layout's fields)."""

    aggregates: str
    fine: TileSeries = field(init=False)
    coarse: TileSeries = field(init=False)
    since: int | None = None
    newest: int | None = None
    records: int = 0

    def __post_init__(self) -> None:
        self.fine = TileSeries(len(self.aggregates))
        self.coarse = TileSeries(len(self.aggregates))

    def set_fields(self, fields: Mapping[str, int]) -> None:
        """Apply hash fields as a load does: tile counters set, ``since`` the minimum, ``newest`` the maximum."""
        width = len(self.aggregates)
        tiles: dict[str, dict[int, list[int]]] = {}
        for name, value in fields.items():
            v = int(value)
            tile = tile_field(name, self.aggregates)
            if tile is not None:
                kind, idx, counter = tile
                if kind not in tiles:
                    tiles[kind] = dict((self.fine if kind == "f" else self.coarse).items())
                tiles[kind].setdefault(idx, [0] * width)[counter] = v
            elif name == "since":
                self.since = v if self.since is None else min(self.since, v)
            elif name == "newest":
                self.newest = v if self.newest is None else max(self.newest, v)
            elif name == "_p":
                self.records = v
        for kind, series in tiles.items():
            (self.fine if kind == "f" else self.coarse).replace(series)

    def fields(self) -> dict[str, int]:
        """The entity as hash fields."""
        out = {
            **tile_fields("f", self.fine.items(), self.aggregates),
            **tile_fields("h", self.coarse.items(), self.aggregates),
        }
        for name, known in (("since", self.since), ("newest", self.newest)):
            if known is not None:
                out[name] = known
        if self.records:
            out["_p"] = self.records
        return out

    def prune(self, tiles: Tiles) -> None:
        """Delete tiles behind the horizons of the newest event."""
        if self.newest is None:
            return
        if tiles.fine_seconds:
            # keep tile i when (i + 1) * width > newest - horizon
            self.fine.drop_before((self.newest - tiles.fine_horizon_seconds) // tiles.fine_seconds)
        self.coarse.drop_before((self.newest - tiles.coarse_horizon_seconds) // tiles.coarse_seconds)


class EmbeddedStore(OnlineStore):
    """Online state in memory, optionally persisted to a directory.

    Args:
        directory: Where the state persists; None for memory only.
        label_delay_days: The label delay of the served features.
    """

    waits_on_io = False  # memory, plus one journal line per request handed to the OS (not synced)

    def __init__(self, directory: str | Path | None, label_delay_days: int = 7) -> None:
        super().__init__(label_delay_days)
        self._dir = Path(directory) if directory is not None else None
        self._entities: dict[str, _Entity] = {}
        self._transactions: dict[str, str] = {}
        self._mutex = threading.Lock()
        self._journal: IO[str] | None = None
        self._lock_fd: int | None = None
        if self._dir is not None:
            self._open_directory(self._dir)

    @property
    def uri(self) -> str:  # noqa: D102
        return str(self._dir) if self._dir is not None else "memory"

    # -- persistence -----------------------------------------------------------------------------------------
    def _open_directory(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise OnlineStoreUnavailableError(
                f"embedded online store {directory} is in use by another process (one process per directory; "
                "use redis:// to share state)"
            ) from exc
        self._lock_fd = fd
        state = directory / STATE_FILE
        if state.exists():
            try:
                data = json.loads(state.read_text())
                for key, fields in data["hashes"].items():
                    self._entity(key).set_fields(fields)
                self._transactions = {str(k): str(v) for k, v in data["transactions"].items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise OnlineStoreUnavailableError(f"embedded online store {state}: not a state file ({exc})") from exc
        journal = directory / JOURNAL_FILE
        if journal.exists():
            replayed = 0
            for number, line in enumerate(journal.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    self._replay(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    # A torn last line (the process died mid-write) is dropped; anything else is corruption.
                    if number == len(journal.read_text().splitlines()):
                        LOG.warning("embedded online store: dropped a torn last journal line %d", number)
                        break
                    raise OnlineStoreUnavailableError(f"{journal}: line {number} is corrupt ({exc})") from exc
                replayed += 1
            LOG.info("embedded online store %s: replayed %d journal entries", directory, replayed)
        self._journal = journal.open("a", encoding="utf-8")

    def _replay(self, entry: dict[str, Any]) -> None:
        if entry["op"] == "score":
            for row in entry["rows"]:
                tx = RawTransaction(*row)
                self._record(tx, int(amount_cents(np.array([tx.amount]))[0]))
        elif entry["op"] == "labels":
            for transaction_id, label in entry["labels"]:
                self._label(str(transaction_id), int(label))
        else:
            raise ValueError(f"unknown journal op {entry['op']!r}")

    def _append(self, entry: dict[str, Any]) -> None:
        if self._journal is not None:
            self._journal.write(_JOURNAL_ENCODER.encode(entry) + "\n")
            self._journal.flush()

    def _compact(self) -> None:
        if self._dir is None:
            return
        with atomic_file(self._dir / STATE_FILE) as tmp:
            hashes = {key: entity.fields() for key, entity in self._entities.items()}
            tmp.write_text(json.dumps({"hashes": hashes, "transactions": self._transactions}))
        if self._journal is not None:
            self._journal.close()
        self._journal = (self._dir / JOURNAL_FILE).open("w", encoding="utf-8")

    # -- the operations --------------------------------------------------------------------------------------
    def _entity(self, key: str) -> _Entity:
        entity = self._entities.get(key)
        if entity is None:
            aggregates = CUSTOMER_AGGREGATES if key.startswith(CUSTOMER_PREFIX) else TERMINAL_AGGREGATES
            entity = self._entities[key] = _Entity("".join(aggregates))
        return entity

    def _record(self, tx: RawTransaction, cents: int) -> bool:
        if tx.transaction_id in self._transactions:
            return False
        self._transactions[tx.transaction_id] = transaction_record(tx)
        customer = self._entity(CUSTOMER_PREFIX + tx.customer_id)
        terminal = self._entity(TERMINAL_PREFIX + tx.terminal_id)
        counters = (1, cents, cents * cents)
        customer.fine.add(tx.seconds // MINUTE, counters)
        customer.coarse.add(tx.seconds // HOUR, counters)
        terminal.coarse.add(tx.seconds // HOUR, (1, 0))
        if tx.customer_since is not None:
            customer.since = tx.customer_since
        else:
            customer.since = tx.seconds if customer.since is None else min(customer.since, tx.seconds)
        for entity, kind in ((customer, "customer"), (terminal, "terminal")):
            entity.newest = tx.seconds if entity.newest is None else max(entity.newest, tx.seconds)
            entity.records += 1
            if entity.records % PRUNE_EVERY == 0:
                entity.prune(tiles_for(kind, self.label_delay_days))
        return True

    def _read(self, tx: RawTransaction) -> list[int]:
        """``[since, *aggregates]`` of a transaction from the state before it."""
        ranges = tile_ranges(tx.seconds, self.label_delay_days)
        customer = self._entities.get(CUSTOMER_PREFIX + tx.customer_id)
        terminal = self._entities.get(TERMINAL_PREFIX + tx.terminal_id)
        since = tx.seconds
        if customer is None:
            sums = [0] * (len(CUSTOMER_WINDOWS) * len(CUSTOMER_AGGREGATES))
        else:
            sums = window_sums(customer.fine, customer.coarse, ranges[:_CUSTOMER_RANGES])
            if customer.since is not None:
                since = min(customer.since, tx.seconds)
        terminal_ranges = ranges[_CUSTOMER_RANGES:]
        if terminal is None:
            sums += [0] * (len(terminal_ranges) // 4 * len(TERMINAL_AGGREGATES))
        else:
            sums += window_sums(terminal.fine, terminal.coarse, terminal_ranges)
        return [since, *sums]

    def _label(self, transaction_id: str, label: int) -> str:
        record = self._transactions.get(transaction_id)
        if record is None:
            return "unknown"
        terminal_id, hour, old = record.split("\t")
        if old == str(label):
            return "unchanged"
        delta = label - (0 if old == UNKNOWN_LABEL else int(old))
        terminal = self._entity(TERMINAL_PREFIX + terminal_id)
        terminal.coarse.add(int(hour), (0, delta))
        self._transactions[transaction_id] = f"{terminal_id}\t{hour}\t{label}"
        return "applied"

    def score_batch(self, transactions: Sequence[RawTransaction]) -> PreStates:  # noqa: D102
        rows: list[list[int]] = []
        cents = amount_cents(np.fromiter((tx.amount for tx in transactions), np.float64, len(transactions))).tolist()
        with self._mutex:
            recorded = []
            for tx, c in zip(transactions, cents, strict=True):
                read = self._read(tx)
                seen = not self._record(tx, c)
                if not seen:
                    recorded.append(list(tx.__dict__.values()))
                rows.append([int(seen), *read])
            if recorded:
                self._append({"op": "score", "rows": recorded})
        return PreStates.from_rows(rows)

    def apply_labels(self, labels: Sequence[tuple[str, int]]) -> LabelOutcome:  # noqa: D102
        counts = {"applied": 0, "unchanged": 0, "unknown": 0}
        with self._mutex:
            for transaction_id, label in labels:
                counts[self._label(str(transaction_id), int(label))] += 1
            if counts["applied"]:
                self._append({"op": "labels", "labels": [[str(t), int(v)] for t, v in labels]})
        return LabelOutcome(**counts)

    def load(self, snapshot: Snapshot) -> None:  # noqa: D102
        with self._mutex:
            for prefix, entities in ((CUSTOMER_PREFIX, snapshot.customers), (TERMINAL_PREFIX, snapshot.terminals)):
                for entity, fields in entities.items():
                    self._entity(prefix + entity).set_fields(fields)
            self._transactions.update(snapshot.transactions)
            self._compact()

    def ping(self) -> None:  # noqa: D102
        return None

    def fields(self, key: str) -> dict[str, int]:
        """A copy of one hash (``c:<customer>`` or ``t:<terminal>``), for inspection and tests.

        Args:
            key: The hash's key.

        Returns:
            Its fields.
        """
        with self._mutex:
            entity = self._entities.get(key)
            return entity.fields() if entity is not None else {}

    def close(self) -> None:  # noqa: D102
        with self._mutex:
            if self._dir is not None and self._journal is not None:
                self._compact()
                self._journal.close()
                self._journal = None
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None
