"""Coalesced online-store calls: concurrent requests share store calls and get what sequential calls would give."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from fraud_detection.features.online import PreStates, RawTransaction
from fraud_detection.features.service import OnlineFeatures
from fraud_detection.features.state.base import OnlineStoreUnavailableError
from fraud_detection.features.state.embedded import EmbeddedStore
from serving.store_calls import CoalescedStoreCalls

_T0 = 1_750_000_000


class SlowStore(EmbeddedStore):
    """The embedded store in memory, answering after a network-like wait, counting its calls and their rows."""

    waits_on_io = True

    def __init__(self, wait_seconds: float = 0.01) -> None:
        super().__init__(None)
        self.wait_seconds = wait_seconds
        self.calls: list[int] = []
        self.down = False
        self.threads: set[str] = set()

    def score_batch(self, transactions: Sequence[RawTransaction]) -> PreStates:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.wait_seconds)
        if self.down:
            raise OnlineStoreUnavailableError("online store slow://: scoring failed: connection refused")
        self.calls.append(len(transactions))
        return super().score_batch(transactions)


def _requests(n: int, rows: int = 2) -> list[list[RawTransaction]]:
    # a few customers and terminals, so requests see each other's rows
    return [
        [
            RawTransaction(f"tx-{i}-{r}", _T0 + 600 * i + r, f"c{i % 3}", f"t{i % 2}", 10.0 + i + r / 10)
            for r in range(rows)
        ]
        for i in range(n)
    ]


async def _concurrently(calls: CoalescedStoreCalls, requests: list[list[RawTransaction]]) -> list[object]:
    return await asyncio.gather(*(calls.compute(r) for r in requests), return_exceptions=True)


def test_concurrent_requests_share_store_calls_and_get_the_features_of_sequential_calls():
    store = SlowStore()
    calls = CoalescedStoreCalls(OnlineFeatures(store, 7), max_rows=1_000)
    requests = _requests(20)

    async def scenario() -> list[object]:
        first = asyncio.create_task(calls.compute(requests[0]))
        await asyncio.sleep(0.003)  # its store call is in flight: the others queue behind it
        return [await first, *await _concurrently(calls, requests[1:])]

    try:
        batches = asyncio.run(scenario())
    finally:
        calls.close()
    sequential = OnlineFeatures(EmbeddedStore(None), 7)
    for request, batch in zip(requests, batches, strict=True):
        expected = sequential.compute(request)
        assert np.array_equal(batch.matrix, expected.matrix)  # type: ignore[union-attr]
        assert batch.retried == expected.retried == (False, False)  # type: ignore[union-attr]
    # the first request went alone; the 19 queued behind it went together
    assert store.calls == [2, 38]
    assert store.threads == {"online-store_0"}


def test_a_retry_in_a_concurrent_request_is_counted_once():
    store = SlowStore()
    calls = CoalescedStoreCalls(OnlineFeatures(store, 7), max_rows=1_000)
    first, second = _requests(2, rows=1)
    retry = [first[0]]
    try:
        batches = asyncio.run(_concurrently(calls, [first, second, retry]))
    finally:
        calls.close()
    assert [b.retried for b in batches] == [(False,), (False,), (True,)]  # type: ignore[union-attr]
    assert store.fields("c:c0")["f" + str((_T0) // 60) + "n"] == 1


def test_a_failed_store_call_fails_every_request_it_carried_and_the_next_wave_recovers():
    store = SlowStore()
    store.down = True
    calls = CoalescedStoreCalls(OnlineFeatures(store, 7), max_rows=1_000)

    async def scenario() -> tuple[list[object], list[object]]:
        failed = await _concurrently(calls, _requests(5))
        store.down = False
        return failed, await _concurrently(calls, _requests(3))

    try:
        failed, recovered = asyncio.run(scenario())
    finally:
        calls.close()
    assert all(isinstance(r, OnlineStoreUnavailableError) for r in failed)
    assert all(not isinstance(r, BaseException) for r in recovered)


def test_a_degraded_wave_marks_every_request_degraded():
    store = SlowStore()
    store.down = True
    calls = CoalescedStoreCalls(OnlineFeatures(store, 7, degraded_when_unavailable=True), max_rows=1_000)
    try:
        batches = asyncio.run(_concurrently(calls, _requests(4)))
    finally:
        calls.close()
    assert [b.degraded for b in batches] == [True] * 4  # type: ignore[union-attr]


@pytest.mark.parametrize(("max_rows", "expected"), [(5, [4] * 5), (6, [6, 6, 6, 2]), (1, [2] * 10), (1_000, [20])])
def test_a_store_call_carries_at_most_max_rows_unless_one_request_is_larger(max_rows: int, expected: list[int]):
    store = SlowStore()
    calls = CoalescedStoreCalls(OnlineFeatures(store, 7), max_rows=max_rows)
    try:
        asyncio.run(_concurrently(calls, _requests(10)))
    finally:
        calls.close()
    assert store.calls == expected
