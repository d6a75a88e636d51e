"""Raw transactions to a feature matrix through an online store: what a model server calls per request."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fraud_detection.features.online import PreStates, RawTransaction, online_feature_matrix
from fraud_detection.features.state.base import OnlineStore, OnlineStoreUnavailableError

LOG = logging.getLogger(__name__)
#: Seconds a successful ping keeps the store counted healthy (readiness probes hit it often).
HEALTH_CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class FeatureBatch:
    """The features of one request's transactions.

    Attributes:
        matrix: (N, F) float64 in schema order.
        retried: Per row, whether the transaction had been recorded before (a retry, not counted again).
        degraded: The store was unavailable and the features were computed without history.
    """

    matrix: np.ndarray
    retried: tuple[bool, ...]
    degraded: bool = False


class OnlineFeatures:
    """Computes served features from an online store, the same way the offline executor does.

    Args:
        store: The online state.
        label_delay_days: The label delay the model was trained with (from its bundle).
        degraded_when_unavailable: When the store is unavailable, score with features computed without history
            (marked ``degraded``) instead of failing the request.
    """

    def __init__(self, store: OnlineStore, label_delay_days: int, *, degraded_when_unavailable: bool = False) -> None:
        self.store = store
        self.label_delay_days = label_delay_days
        self.degraded_when_unavailable = degraded_when_unavailable
        self._healthy_until = 0.0

    def _matrix(self, transactions: Sequence[RawTransaction], states: PreStates) -> np.ndarray:
        return online_feature_matrix(transactions, states)

    def compute(self, transactions: Sequence[RawTransaction]) -> FeatureBatch:
        """Read each transaction's state, record it, and compute its features (rows in order, each after the last).

        Args:
            transactions: The request's rows.

        Returns:
            Their features.

        Raises:
            OnlineStoreUnavailableError: The store is unavailable and degraded scoring is off.
        """
        try:
            states = self.store.score_batch(transactions)
        except OnlineStoreUnavailableError:
            self._healthy_until = 0.0
            if not self.degraded_when_unavailable:
                raise
            LOG.warning("online store unavailable: %d row(s) scored without history (degraded)", len(transactions))
            empty = PreStates.empty(transactions)
            return FeatureBatch(self._matrix(transactions, empty), tuple(False for _ in transactions), degraded=True)
        return FeatureBatch(self._matrix(transactions, states), tuple(states.seen.tolist()))

    def known_healthy(self) -> bool:
        """Whether a ping succeeded in the last :data:`HEALTH_CACHE_SECONDS` (no store call: safe on the event loop).

        Returns:
            True while the last successful ping is still remembered.
        """
        return time.monotonic() < self._healthy_until

    def healthy(self) -> bool:
        """Whether the store answers (a success is remembered for :data:`HEALTH_CACHE_SECONDS`).

        Returns:
            True when the store answered a ping.
        """
        now = time.monotonic()
        if now < self._healthy_until:
            return True
        try:
            self.store.ping()
        except OnlineStoreUnavailableError as exc:
            LOG.warning("%s", exc)
            return False
        self._healthy_until = now + HEALTH_CACHE_SECONDS
        return True
