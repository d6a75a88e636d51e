"""The online state store: one interface, an embedded backend (one process) and Redis (replicas sharing state).

Every backend keeps the hash layout of :mod:`fraud_detection.features.online` and offers the same three atomic
operations:

* :meth:`OnlineStore.score_batch`: for each transaction in order, sum its customer's and terminal's tiles over its
  windows (:func:`~fraud_detection.features.online.tile_ranges`) as they are *before* the transaction, then record
  it (unless its id was recorded before: a retry never counts twice); each row sees the rows before it;
* :meth:`OnlineStore.apply_labels`: add ingested labels to the terminal tiles of their transactions (a changed label
  moves the count, a repeated one changes nothing);
* :meth:`OnlineStore.load`: write materialized state (the backfill) in bulk.

State per entity stays bounded: tiles behind the entity's horizons are deleted (every ``prune_every`` records and
on load), so a customer holds at most ``CUSTOMER_TILES.max_tiles`` counter triples and a terminal at most
``terminal_tiles(delay).max_tiles`` pairs, whatever its traffic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fraud_detection.features.online import PreStates, RawTransaction

#: Records between two prunings of an entity's expired tiles.
PRUNE_EVERY = 64
#: How long a transaction's record (idempotency, label lookup) is kept, seconds of wall-clock time.
TRANSACTION_TTL_SECONDS = 90 * 86_400


class OnlineStoreUnavailableError(RuntimeError):
    """The online store cannot be reached or answered an error; the message says which store and why."""


@dataclass(frozen=True)
class LabelOutcome:
    """What :meth:`OnlineStore.apply_labels` did.

    Attributes:
        applied: Labels that changed a terminal's fraud count.
        unchanged: Labels equal to the one already applied.
        unknown: Labels of transactions the store does not know (never scored or expired).
    """

    applied: int
    unchanged: int
    unknown: int


@dataclass(frozen=True)
class Snapshot:
    """Materialized state to load.

    Attributes:
        customers: Customer id to its hash.
        terminals: Terminal id to its hash.
        transactions: Transaction id to its record (terminal, hour, label).
    """

    customers: Mapping[str, Mapping[str, int]]
    terminals: Mapping[str, Mapping[str, int]]
    transactions: Mapping[str, str]


class OnlineStore(ABC):
    """Where the online features' state lives.

    Args:
        label_delay_days: The label delay of the features served from this state (sets the terminal horizon).
    """

    #: Operations wait on the network (a caller on an event loop runs them in a worker thread); False for a store
    #: that only computes in memory, which is cheaper to call inline than to hand to a thread.
    waits_on_io: bool = True

    def __init__(self, label_delay_days: int) -> None:
        self.label_delay_days = label_delay_days

    @property
    @abstractmethod
    def uri(self) -> str:
        """Where the state lives (no credentials)."""

    @abstractmethod
    def score_batch(self, transactions: Sequence[RawTransaction]) -> PreStates:
        """Atomically read each transaction's window aggregates and record it, in order.

        Args:
            transactions: The rows of one request.

        Returns:
            What each row's windows held before it (the aggregates only: stores sum the tiles themselves).

        Raises:
            OnlineStoreUnavailableError: The store cannot be reached.
        """

    @abstractmethod
    def apply_labels(self, labels: Sequence[tuple[str, int]]) -> LabelOutcome:
        """Add labels to the terminal tiles of their transactions.

        Args:
            labels: (transaction id, is_fraud 0/1) pairs.

        Returns:
            What was applied.

        Raises:
            OnlineStoreUnavailableError: The store cannot be reached.
        """

    @abstractmethod
    def load(self, snapshot: Snapshot) -> None:
        """Write materialized state, idempotently: loading the same history twice changes nothing.

        Each tile counter is set to the snapshot's value, ``since`` takes the minimum and ``newest`` the maximum,
        transaction records are set. Tiles the snapshot covers lose what live traffic recorded in them: backfill
        before serving, or from a history that includes what was served.

        Args:
            snapshot: The state.

        Raises:
            OnlineStoreUnavailableError: The store cannot be reached.
        """

    @abstractmethod
    def ping(self) -> None:
        """Check the store answers.

        Raises:
            OnlineStoreUnavailableError: It does not.
        """

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections and flush what the backend buffers."""
