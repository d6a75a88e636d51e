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
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from fraud_detection.features.online import (
    CUSTOMER_PREFIX,
    TERMINAL_PREFIX,
    UNKNOWN_LABEL,
    PreState,
    RawTransaction,
    expired_fields,
    tile_fields,
    tiles_for,
    transaction_record,
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


class EmbeddedStore(OnlineStore):
    """Online state in memory, optionally persisted to a directory.

    Args:
        directory: Where the state persists; None for memory only.
        label_delay_days: The label delay of the served features.
    """

    def __init__(self, directory: str | Path | None, label_delay_days: int = 7) -> None:
        super().__init__(label_delay_days)
        self._dir = Path(directory) if directory is not None else None
        self._hashes: dict[str, dict[str, int]] = {}
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
                self._hashes = {k: {f: int(v) for f, v in h.items()} for k, h in data["hashes"].items()}
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
                self._record(RawTransaction(*row))
        elif entry["op"] == "labels":
            for transaction_id, label in entry["labels"]:
                self._label(str(transaction_id), int(label))
        else:
            raise ValueError(f"unknown journal op {entry['op']!r}")

    def _append(self, entry: dict[str, Any]) -> None:
        if self._journal is not None:
            self._journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._journal.flush()

    def _compact(self) -> None:
        if self._dir is None:
            return
        with atomic_file(self._dir / STATE_FILE) as tmp:
            tmp.write_text(json.dumps({"hashes": self._hashes, "transactions": self._transactions}))
        if self._journal is not None:
            self._journal.close()
        self._journal = (self._dir / JOURNAL_FILE).open("w", encoding="utf-8")

    # -- the operations --------------------------------------------------------------------------------------
    def _record(self, tx: RawTransaction) -> bool:
        if tx.transaction_id in self._transactions:
            return False
        self._transactions[tx.transaction_id] = transaction_record(tx)
        customer_inc, terminal_inc = tile_fields(tx)
        ckey, tkey = CUSTOMER_PREFIX + tx.customer_id, TERMINAL_PREFIX + tx.terminal_id
        customer = self._hashes.setdefault(ckey, {})
        terminal = self._hashes.setdefault(tkey, {})
        for fields, inc in ((customer, customer_inc), (terminal, terminal_inc)):
            for name, value in inc.items():
                fields[name] = fields.get(name, 0) + value
            fields["newest"] = max(fields.get("newest", tx.seconds), tx.seconds)
            fields["_p"] = fields.get("_p", 0) + 1
        if tx.customer_since is not None:
            customer["since"] = tx.customer_since
        else:
            customer["since"] = min(customer.get("since", tx.seconds), tx.seconds)
        for fields, kind in ((customer, "customer"), (terminal, "terminal")):
            if fields["_p"] % PRUNE_EVERY == 0:
                for name in expired_fields(fields, tiles_for(kind, self.label_delay_days), fields["newest"]):
                    del fields[name]
        return True

    def _label(self, transaction_id: str, label: int) -> str:
        record = self._transactions.get(transaction_id)
        if record is None:
            return "unknown"
        terminal_id, hour, old = record.split("\t")
        if old == str(label):
            return "unchanged"
        delta = label - (0 if old == UNKNOWN_LABEL else int(old))
        terminal = self._hashes.setdefault(TERMINAL_PREFIX + terminal_id, {})
        field = f"h{hour}f"
        terminal[field] = terminal.get(field, 0) + delta
        self._transactions[transaction_id] = f"{terminal_id}\t{hour}\t{label}"
        return "applied"

    def score_batch(self, transactions: Sequence[RawTransaction]) -> list[PreState]:  # noqa: D102
        out: list[PreState] = []
        with self._mutex:
            recorded = []
            for tx in transactions:
                customer = dict(self._hashes.get(CUSTOMER_PREFIX + tx.customer_id, {}))
                terminal = dict(self._hashes.get(TERMINAL_PREFIX + tx.terminal_id, {}))
                seen = not self._record(tx)
                if not seen:
                    recorded.append(list(tx.__dict__.values()))
                out.append(PreState(customer, terminal, seen))
            if recorded:
                self._append({"op": "score", "rows": recorded})
        return out

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
                    current = self._hashes.setdefault(prefix + entity, {})
                    for name, value in fields.items():
                        if name == "since":
                            current[name] = min(current.get(name, int(value)), int(value))
                        elif name == "newest":
                            current[name] = max(current.get(name, int(value)), int(value))
                        else:
                            current[name] = int(value)
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
            return dict(self._hashes.get(key, {}))

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
