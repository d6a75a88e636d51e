"""The Redis online store against a real redis-server: offline = online on Redis, retries, concurrent writers from
two processes, labels, bounded state, and a server that goes away and comes back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fraud_detection.data import schema
from fraud_detection.features.definitions import HOUR, MINUTE
from fraud_detection.features.materialize import build_snapshot
from fraud_detection.features.offline import FeatureConfig, build_features
from fraud_detection.features.online import CUSTOMER_PREFIX, TERMINAL_PREFIX, RawTransaction, online_features
from fraud_detection.features.state.base import OnlineStoreUnavailableError
from fraud_detection.features.state.redis_store import RedisStore, redacted
from fraud_detection.features.state.uri import open_online_store
from tests.helpers.redis import RedisServer, redis_server
from tests.unit.features.test_online import START, replay

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def store(redis: RedisServer, request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    s = RedisStore(redis.url, 7, prefix=f"test:{request.node.name}:")
    yield s
    s.close()


def test_parity_on_redis_with_a_materialized_history(small_raw: pd.DataFrame, store: RedisStore):
    frame = small_raw.sort_values("event_time", kind="stable").reset_index(drop=True)
    cut = frame["event_time"].iloc[0] + pd.Timedelta(days=45)
    history, live = frame[frame["event_time"] < cut], frame[frame["event_time"] >= cut].head(1_500)
    snapshot, _ = build_snapshot(history, 7)
    store.load(snapshot)
    want = build_features(pd.concat([history, live]), FeatureConfig(label_delay_days=7)).loc[
        live.index, list(schema.FEATURES)
    ]
    got = replay(live, 7, store)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_a_batch_sees_its_own_earlier_rows_and_a_retry_never_counts_twice(store: RedisStore):
    t0 = int(START.timestamp())
    a = RawTransaction("a", t0, "c", "x", 10.0)
    b = RawTransaction("b", t0 + MINUTE, "c", "x", 20.0)
    states = store.score_batch([a, b, a])
    assert states.seen.tolist() == [False, False, True]
    assert online_features(b, states[1])["num_prev_tx_24h"] == 1.0
    assert store.fields(CUSTOMER_PREFIX + "c")[f"h{t0 // HOUR}n"] == 2


def test_labels_on_redis_apply_once_and_follow_corrections(store: RedisStore):
    t0 = int(START.timestamp())
    store.score_batch([RawTransaction("t1", t0, "c", "x", 5.0)])
    outcome = store.apply_labels([("t1", 1), ("t1", 1), ("missing", 1)])
    assert (outcome.applied, outcome.unchanged, outcome.unknown) == (1, 1, 1)
    assert store.fields(TERMINAL_PREFIX + "x")[f"h{t0 // HOUR}f"] == 1
    store.apply_labels([("t1", 0)])
    assert store.fields(TERMINAL_PREFIX + "x")[f"h{t0 // HOUR}f"] == 0


_WRITER = """
import sys
from fraud_detection.features.online import RawTransaction
from fraud_detection.features.state.redis_store import RedisStore
url, prefix, who, n, t0 = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
store = RedisStore(url, 7, prefix=prefix)
for i in range(n):
    # Both writers send the shared ids too (retries racing each other) besides their own.
    store.score_batch([RawTransaction(f"{who}-{i}", t0 + i, "shared-card", "shop", 1.0),
                       RawTransaction(f"both-{i}", t0 + i, "shared-card", "shop", 1.0)])
"""


def test_two_server_processes_writing_one_customer_lose_no_update_and_count_no_retry_twice(
    redis: RedisServer, tmp_path: Path
):
    prefix, n, t0 = "race:", 300, int(START.timestamp())
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, redis.url, prefix, who, str(n), str(t0)])
        for who in ("p1", "p2")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = RedisStore(redis.url, 7, prefix=prefix)
    customer = store.fields(CUSTOMER_PREFIX + "shared-card")
    total = sum(v for k, v in customer.items() if k.startswith("h") and k.endswith("n"))
    assert total == 3 * n  # n own rows from each writer, n shared rows counted once


def test_state_on_redis_stays_bounded_for_a_busy_card(store: RedisStore):
    t0 = int(START.timestamp())
    for day in range(0, 40):
        for half in (0, 100):
            rows = range(half, half + 100)
            store.score_batch(
                [RawTransaction(f"d{day}-{i}", t0 + day * 86_400 + i * 30, "busy", "shop", 1.0) for i in rows]
            )
    fields = store.fields(CUSTOMER_PREFIX + "busy")
    newest = fields["newest"]
    hours = [int(k[1:-1]) for k in fields if k.startswith("h")]
    assert min(hours) * HOUR >= newest - 32 * 86_400 - 64 * 30 - 2 * HOUR


def test_an_unreachable_redis_is_a_clear_error_naming_it_without_the_password(tmp_path: Path):
    from tests.helpers.net import free_port

    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    store = RedisStore(url, 7)
    with pytest.raises(OnlineStoreUnavailableError, match=r"redis://:\*\*\*@127\.0\.0\.1") as info:
        store.score_batch([RawTransaction("t", int(START.timestamp()), "c", "x", 1.0)])
    assert "s3cret" not in str(info.value)
    with pytest.raises(OnlineStoreUnavailableError):
        store.ping()
    assert redacted(url).startswith("redis://:***@")


def test_a_killed_redis_fails_clearly_and_serves_correct_state_once_back(tmp_path: Path):
    with redis_server(tmp_path / "aof", persistent=True) as server:
        store = open_online_store(server.url, 7)
        t0 = int(START.timestamp())
        store.score_batch([RawTransaction("t1", t0, "c", "x", 5.0)])
        server.kill()
        with pytest.raises(OnlineStoreUnavailableError):
            store.score_batch([RawTransaction("t2", t0 + HOUR, "c", "x", 5.0)])
        server.start()
        (state,) = store.score_batch([after := RawTransaction("t3", t0 + 2 * HOUR, "c", "x", 5.0)])
        assert online_features(after, state)["num_prev_tx_24h"] == 1.0  # t1 kept, t2 never counted
        (retry,) = store.score_batch([RawTransaction("t1", t0, "c", "x", 5.0)])
        assert retry.seen
        store.close()


def test_materializing_twice_on_redis_changes_nothing(small_raw: pd.DataFrame, store: RedisStore):
    snapshot, _ = build_snapshot(small_raw, 7)
    store.load(snapshot)
    customer = CUSTOMER_PREFIX + str(small_raw["customer_id"].iloc[0])
    first = store.fields(customer)
    store.load(snapshot)
    assert store.fields(customer) == first


def test_the_redis_script_sums_windows_exactly_as_the_embedded_store(store: RedisStore):
    """The Lua twin of ``window_sums``: batches, out-of-order events, retries, given relationship starts, labels."""
    import numpy as np

    from fraud_detection.features.state.embedded import EmbeddedStore

    embedded = EmbeddedStore(None, 7)
    rng = np.random.default_rng(3)
    t, txs = int(START.timestamp()), []
    for i in range(2_000):
        t += int(rng.integers(0, 4 * HOUR))
        since = None if rng.random() < 0.9 else t - 10**7
        late = int(rng.choice([0, 0, 1, 59, 60, HOUR, 20 * HOUR]))
        amount = float(round(rng.exponential(40.0), 2))
        txs.append(RawTransaction(f"x{i}", t - late, f"c{rng.integers(0, 4)}", f"t{rng.integers(0, 3)}", amount, since))
    txs += txs[:40]  # retries
    retried = frauds = 0
    for i in range(0, len(txs), 97):
        batch = txs[i : i + 97]
        got, want = store.score_batch(batch), embedded.score_batch(batch)
        retried, frauds = retried + int(got.seen.sum()), frauds + int(got.aggregates[:, -1].sum())
        assert np.array_equal(got.aggregates, want.aggregates), f"batch at row {i}"
        assert got.since.tolist() == want.since.tolist() and got.seen.tolist() == want.seen.tolist()
        labels = [(tx.transaction_id, int(rng.integers(0, 2))) for tx in txs[max(0, i - 400) : i : 3]]
        assert store.apply_labels(labels) == embedded.apply_labels(labels)
    assert retried == 40 and frauds > 0  # retries and known frauds were exercised
    for key in [CUSTOMER_PREFIX + f"c{i}" for i in range(4)] + [TERMINAL_PREFIX + f"t{i}" for i in range(3)]:
        assert store.fields(key) == embedded.fields(key), key  # the same tiles kept, pruned alike


def test_tile_series_are_stored_as_sorted_records_of_running_sums(store: RedisStore):
    import struct

    from fraud_detection.features.state.redis_layout import CUSTOMER_RECORD_FORMAT, TERMINAL_RECORD_FORMAT

    t0 = int(START.timestamp())
    # 160 transactions over 40 days, one every 6 hours: one hour tile each, pruned at the 64th and 128th
    store.score_batch([RawTransaction(f"b{i}", t0 + i * 6 * HOUR, "busy", "shop", 12.34 + i) for i in range(160)])
    raw = store._client.hgetall(store._prefix + CUSTOMER_PREFIX + "busy")
    assert set(raw) == {b"fine", b"coarse", b"since", b"newest", b"_p"}
    coarse = list(struct.iter_unpack(CUSTOMER_RECORD_FORMAT, raw[b"coarse"]))
    hours = [row[0] for row in coarse]
    assert hours == sorted(hours) and len(hours) < 160  # sorted, and the tiles behind 31 days were pruned
    cents = [1234 + 100 * i for i in range(160)]
    kept = cents[-len(hours) :]
    assert coarse[-1][1:] == (len(kept), float(sum(kept)), float(sum(c * c for c in kept)))  # rebased on the kept
    last = t0 + 159 * 6 * HOUR
    assert hours[-1] == last // HOUR
    assert store.fields(CUSTOMER_PREFIX + "busy")[f"h{last // HOUR}s"] == 17_134
    terminal = store._client.hgetall(store._prefix + TERMINAL_PREFIX + "shop")
    records = list(struct.iter_unpack(TERMINAL_RECORD_FORMAT, terminal[b"coarse"]))
    assert records[-1][0] == last // HOUR and records[-1][1] - records[-2][1] == 1 and records[-1][2] == 0


def test_a_hash_in_an_earlier_layout_is_refused_with_the_fix_not_misread(store: RedisStore):
    import struct

    t0 = int(START.timestamp())
    key = store._prefix + CUSTOMER_PREFIX + "binary"  # a field per tile, packed (the previous version)
    store._client.hset(key, mapping={f"H{t0 // HOUR - 2}": struct.pack("<idd", 1, 1.0, 1.0), "newest": t0 - 7200})
    with pytest.raises(OnlineStoreUnavailableError, match=r"layout of an earlier version.*materialize"):
        store.score_batch([RawTransaction("n0", t0, "binary", "shop", 1.0)])
    assert not store._client.exists(store._prefix + "x:n0")  # nothing half-written


def test_a_call_that_meets_a_refused_hash_on_a_later_row_writes_nothing_at_all(store: RedisStore):
    import struct

    t0 = int(START.timestamp())
    old = store._prefix + CUSTOMER_PREFIX + "old-card"
    store._client.hset(old, mapping={f"H{t0 // HOUR - 2}": struct.pack("<idd", 1, 1.0, 1.0), "newest": t0 - 7200})
    good = RawTransaction("w0", t0, "new-card", "new-shop", 5.0)
    with pytest.raises(OnlineStoreUnavailableError, match="materialize"):
        store.score_batch([good, RawTransaction("w1", t0 + 1, "old-card", "new-shop", 1.0)])
    for key in ("x:w0", CUSTOMER_PREFIX + "new-card", TERMINAL_PREFIX + "new-shop"):
        assert not store._client.exists(store._prefix + key), key  # row 0 was not recorded either
    assert store.score_batch([good]).seen.tolist() == [False]  # so its retry is scored as new

    store.score_batch([RawTransaction("w2", t0, "card", "open-shop", 5.0)])
    before = store.fields(TERMINAL_PREFIX + "open-shop")
    oldshop = store._prefix + TERMINAL_PREFIX + "old-shop"
    store._client.hset(oldshop, mapping={f"H{t0 // HOUR}": struct.pack("<ii", 2, 0), "newest": t0})
    store._client.set(store._prefix + "x:w3", f"old-shop\t{t0 // HOUR}\t-")
    with pytest.raises(OnlineStoreUnavailableError, match="materialize"):
        store.apply_labels([("w2", 1), ("w3", 1)])
    assert store.fields(TERMINAL_PREFIX + "open-shop") == before  # the first label was not applied either
    assert store.apply_labels([("w2", 1)]).applied == 1


def test_a_full_redis_refuses_the_call_before_its_first_write_and_nothing_is_half_written(store: RedisStore):
    """noeviction at maxmemory: Redis refuses a script's writes only before its first (scripting.c/script.c)."""
    t0 = int(START.timestamp())
    batch = [RawTransaction(f"m{i}", t0 + i, f"full-card{i % 3}", "full-shop", 5.0) for i in range(50)]
    store._client.config_set("maxmemory-policy", "noeviction")
    store._client.config_set("maxmemory", 1)
    try:
        with pytest.raises(OnlineStoreUnavailableError, match="maxmemory"):
            store.score_batch(batch)
    finally:
        store._client.config_set("maxmemory", 0)
    assert not any(store._client.exists(store._prefix + f"x:m{i}") for i in range(50))
    assert not store._client.exists(store._prefix + TERMINAL_PREFIX + "full-shop")
    assert store.score_batch(batch).seen.sum() == 0  # the retry once Redis has room records every row


def test_a_hash_in_the_earlier_text_layout_is_refused_with_the_fix_not_misread(store: RedisStore):
    t0 = int(START.timestamp())
    key = store._prefix + CUSTOMER_PREFIX + "old"
    store._client.hset(key, mapping={f"h{t0 // HOUR - 2}": "3 1500 750000", "newest": t0 - 2 * HOUR})
    with pytest.raises(OnlineStoreUnavailableError, match=r"layout of an earlier version.*materialize"):
        store.score_batch([RawTransaction("n1", t0, "old", "shop", 1.0)])
    assert not store._client.exists(store._prefix + "x:n1")  # nothing half-written
    tkey = store._prefix + TERMINAL_PREFIX + "oldshop"
    store._client.hset(tkey, mapping={f"h{t0 // HOUR}": "2 0", "newest": t0})
    store._client.set(store._prefix + "x:n2", f"oldshop\t{t0 // HOUR}\t-")
    with pytest.raises(OnlineStoreUnavailableError, match="materialize"):
        store.apply_labels([("n2", 1)])


def test_a_script_redis_has_forgotten_is_loaded_again_and_the_call_succeeds(store: RedisStore):
    t0 = int(START.timestamp())
    store.score_batch([RawTransaction("f1", t0, "c", "x", 1.0)])
    store._client.script_flush()  # as after a restart without persistence of scripts, or SCRIPT FLUSH
    (state,) = store.score_batch([after := RawTransaction("f2", t0 + MINUTE, "c", "x", 1.0)])
    assert online_features(after, state)["num_prev_tx_24h"] == 1.0
    assert store.apply_labels([("f1", 1)]).applied == 1  # the label script too


def test_a_connection_redis_closed_while_in_use_fails_that_call_clearly_then_the_next_reconnects(store: RedisStore):
    t0 = int(START.timestamp())
    store.score_batch([RawTransaction("k1", t0, "c", "x", 1.0)])
    store._client.client_kill_filter(_type="normal", skipme=True)  # a failover, just as the call is sent
    with pytest.raises(OnlineStoreUnavailableError, match="scoring failed: Connection closed by server"):
        store.score_batch([RawTransaction("k2", t0 + MINUTE, "c", "x", 1.0)])
    (state,) = store.score_batch([after := RawTransaction("k3", t0 + 2 * MINUTE, "c", "x", 1.0)])
    assert online_features(after, state)["num_prev_tx_24h"] == 1.0  # k2 never ran: the call is not sent twice


def test_an_idle_connection_redis_closed_is_replaced_before_the_call_not_failed(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
):
    from fraud_detection.features.state import redis_store

    t0 = int(START.timestamp())
    store.score_batch([RawTransaction("i1", t0, "c", "x", 1.0)])
    store._client.client_kill_filter(_type="normal", skipme=True)  # Redis's idle `timeout`, a managed Redis
    monkeypatch.setattr(redis_store, "IDLE_CHECK_SECONDS", 0.0)  # as if idle past the check's threshold
    (state,) = store.score_batch([after := RawTransaction("i2", t0 + MINUTE, "c", "x", 1.0)])
    assert online_features(after, state)["num_prev_tx_24h"] == 1.0
    (retry,) = store.score_batch([RawTransaction("i1", t0, "c", "x", 1.0)])
    assert retry.seen


def test_threads_sharing_one_store_each_get_a_connection_and_lose_no_update(store: RedisStore):
    from concurrent.futures import ThreadPoolExecutor

    t0, n = int(START.timestamp()), 150

    def write(who: str) -> None:
        for i in range(n):
            store.score_batch([RawTransaction(f"{who}-{i}", t0 + i, "shared", "x", 1.0)])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, ["a", "b", "c", "d"]))
    customer = store.fields(CUSTOMER_PREFIX + "shared")
    assert sum(v for k, v in customer.items() if k.startswith("h") and k.endswith("n")) == 4 * n
    assert len(store._idle) <= 4
