"""Online-store calls of concurrent requests, coalesced: one worker thread, one store call for what is waiting.

A store that waits on the network (Redis) must not block the event loop, so its calls run in a thread. A thread
hand-off per request costs more server time than the call itself under load (a pool thread woken per request, each
competing for the GIL). Here a single worker thread makes the calls, and requests that arrive while a call is in
flight wait for the next one, which carries all their rows: at concurrency 1 nothing changes; at 16, a call carries
a few requests, and the hand-offs, the client's per-call work and Redis's per-script work are shared by them.

Each request's rows stay contiguous and in order, after the rows of the requests queued before it, so every row
still sees the rows before it (``OnlineStore.score_batch``'s contract) and a retried transaction is still counted
once, whichever request carries it. A failed call fails every request it carried, with the same error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from fraud_detection.features.online import RawTransaction
from fraud_detection.features.service import FeatureBatch, OnlineFeatures

LOG = logging.getLogger(__name__)


class CoalescedStoreCalls:
    """Computes online features for concurrent requests through one worker thread, one store call per wave.

    Args:
        online: The online features (its store waits on the network).
        max_rows: Most rows in one store call; a wave stops before the request that would pass it (a request larger
            than this still goes, alone).
    """

    def __init__(self, online: OnlineFeatures, max_rows: int) -> None:
        self.online = online
        self.max_rows = max_rows
        self._queue: list[tuple[Sequence[RawTransaction], asyncio.Future[FeatureBatch]]] = []
        self._draining = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="online-store")

    async def compute(self, transactions: Sequence[RawTransaction]) -> FeatureBatch:
        """The features of one request's rows, recorded in the store (see :meth:`OnlineFeatures.compute`).

        Args:
            transactions: The request's rows.

        Returns:
            Their features.

        Raises:
            OnlineStoreUnavailableError: The store is unavailable and degraded scoring is off.
        """
        future: asyncio.Future[FeatureBatch] = asyncio.get_running_loop().create_future()
        self._queue.append((transactions, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _next_wave(self) -> list[tuple[Sequence[RawTransaction], asyncio.Future[FeatureBatch]]]:
        rows, take = 0, 0
        for transactions, _ in self._queue:
            if take and rows + len(transactions) > self.max_rows:
                break
            rows += len(transactions)
            take += 1
        wave, self._queue = self._queue[:take], self._queue[take:]
        return wave

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                wave = self._next_wave()
                rows = [tx for transactions, _ in wave for tx in transactions]
                try:
                    batch = await loop.run_in_executor(self._executor, self.online.compute, rows)
                except Exception as exc:  # every request of the wave gets the error (a store error, or a bug)
                    for _, future in wave:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for transactions, future in wave:
                    end = start + len(transactions)
                    if not future.done():  # a cancelled request's rows were recorded all the same
                        future.set_result(
                            FeatureBatch(batch.matrix[start:end], batch.retried[start:end], batch.degraded)
                        )
                    start = end
        finally:
            self._draining = False

    def close(self) -> None:
        """Stop the worker thread (after the call in flight)."""
        self._executor.shutdown(wait=True)
