"""Offline = online, row by row: every transaction's features served from the embedded state equal the offline
executor's, for generated histories with same-minute events, events exactly on window bounds, and labels ingested as
they pass the label delay."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraud_detection.data import schema
from fraud_detection.features.definitions import CUSTOMER_TILES, HOUR, MINUTE, SECONDS_PER_DAY, terminal_tiles
from fraud_detection.features.offline import FeatureConfig, build_features
from fraud_detection.features.online import (
    CUSTOMER_PREFIX,
    TERMINAL_PREFIX,
    RawTransaction,
    TileSeries,
    online_features,
    tile_ranges,
    window_sums,
)
from fraud_detection.features.state.embedded import EmbeddedStore

START = pd.Timestamp("2024-03-01", tz="UTC")


def _raw(frame: pd.DataFrame) -> list[RawTransaction]:
    seconds = frame["event_time"].to_numpy(dtype="datetime64[s]").astype(np.int64)
    return [
        RawTransaction(str(r.transaction_id), int(s), str(r.customer_id), str(r.terminal_id), float(r.amount))
        for r, s in zip(frame.itertuples(), seconds, strict=True)
    ]


def replay(frame: pd.DataFrame, delay_days: int, store: EmbeddedStore) -> pd.DataFrame:
    """Score every transaction in event order through the store, ingesting each label once it is behind the delay."""
    txs = _raw(frame)
    labels = frame["is_fraud"].to_numpy()
    order = np.argsort([t.seconds for t in txs], kind="stable")
    pending = list(order)
    rows: dict[int, dict[str, float]] = {}
    for i in order:
        tx = txs[i]
        due = [j for j in pending if txs[j].seconds <= tx.seconds - delay_days * SECONDS_PER_DAY and j in rows]
        store.apply_labels([(txs[j].transaction_id, int(labels[j])) for j in due])
        pending = [j for j in pending if j not in due]
        (state,) = store.score_batch([tx])
        rows[i] = online_features(tx, state)
    return pd.DataFrame([rows[i] for i in range(len(txs))], index=frame.index)[list(schema.FEATURES)]


@st.composite
def histories(draw):
    n = draw(st.integers(1, 40))
    # Offsets on a coarse grid plus jitter, so same-minute events and events exactly on hour/day bounds are common.
    base = draw(st.lists(st.integers(0, 40 * 24), min_size=n, max_size=n))
    jitter = draw(st.lists(st.sampled_from([0, 0, 1, 59, 60, 61, 3599, 3600]), min_size=n, max_size=n))
    offsets = sorted(b * HOUR + j for b, j in zip(base, jitter, strict=True))
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "event_time": START + pd.to_timedelta(offsets, unit="s"),
            "customer_id": draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n)),
            "terminal_id": draw(st.lists(st.sampled_from(["x", "y"]), min_size=n, max_size=n)),
            "amount": draw(
                st.lists(st.floats(0, 3000, allow_nan=False).map(lambda v: round(v, 2)), min_size=n, max_size=n)
            ),
            "is_fraud": draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)),
        }
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=histories(), delay=st.integers(0, 8))
def test_online_features_equal_offline_features_row_by_row(frame, delay):
    frame = schema.validate_transactions(frame)
    offline = build_features(frame, FeatureConfig(label_delay_days=delay))[list(schema.FEATURES)]
    online = replay(frame, delay, EmbeddedStore(None, delay))
    pd.testing.assert_frame_equal(online, offline, check_exact=True)


def test_parity_on_simulated_data_with_a_materialized_history(small_raw: pd.DataFrame):
    from fraud_detection.features.materialize import build_snapshot

    frame = small_raw.sort_values("event_time", kind="stable").reset_index(drop=True)
    cut = frame["event_time"].iloc[0] + pd.Timedelta(days=45)
    history, live = frame[frame["event_time"] < cut], frame[frame["event_time"] >= cut].head(3_000)
    store = EmbeddedStore(None, 7)
    snapshot, summary = build_snapshot(history, 7)
    store.load(snapshot)
    assert summary.transactions == len(history)
    offline = build_features(pd.concat([history, live]), FeatureConfig(label_delay_days=7))
    want = offline.loc[live.index, list(schema.FEATURES)]
    got = replay(live, 7, store)
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_a_retried_transaction_never_counts_twice():
    store = EmbeddedStore(None, 7)
    tx = RawTransaction("t1", int(START.timestamp()), "c", "x", 12.5)
    later = RawTransaction("t2", int(START.timestamp()) + HOUR, "c", "x", 1.0)
    first, again = store.score_batch([tx, tx])
    assert not first.seen and again.seen
    (state,) = store.score_batch([later])
    assert online_features(later, state)["num_prev_tx_24h"] == 1.0
    assert store.fields(CUSTOMER_PREFIX + "c")[f"f{tx.seconds // MINUTE}n"] == 1


def test_an_out_of_order_event_is_counted_for_later_events_only():
    t0 = int(START.timestamp()) + 10 * HOUR
    store = EmbeddedStore(None, 7)
    store.score_batch([RawTransaction("late-arrival-but-newest", t0, "c", "x", 5.0)])
    (state,) = store.score_batch([early := RawTransaction("older", t0 - 2 * HOUR, "c", "x", 7.0)])
    # The newer event is in the state but after the older one's window: it does not count.
    assert online_features(early, state)["num_prev_tx_24h"] == 0.0
    (state,) = store.score_batch([after := RawTransaction("after", t0 + MINUTE, "c", "x", 1.0)])
    assert online_features(after, state)["num_prev_tx_24h"] == 2.0


def test_labels_move_the_terminal_fraud_count_once_and_follow_corrections():
    store = EmbeddedStore(None, 0)
    t0 = int(START.timestamp())
    store.score_batch([RawTransaction("t1", t0, "c", "x", 5.0)])
    assert store.apply_labels([("t1", 1), ("t1", 1), ("nope", 1)]).__dict__ == {
        "applied": 1,
        "unchanged": 1,
        "unknown": 1,
    }
    assert store.fields(TERMINAL_PREFIX + "x")[f"h{t0 // HOUR}f"] == 1
    store.apply_labels([("t1", 0)])
    assert store.fields(TERMINAL_PREFIX + "x")[f"h{t0 // HOUR}f"] == 0


def test_state_per_entity_stays_bounded_whatever_the_traffic():
    store = EmbeddedStore(None, 7)
    t0 = int(START.timestamp())
    busy = [RawTransaction(f"t{i}", t0 + i * 37, "card", "shop", 1.0) for i in range(60_000)]  # 26 days, 1 tx / 37 s
    for i in range(0, len(busy), 1_000):
        store.score_batch(busy[i : i + 1_000])
    customer = store.fields(CUSTOMER_PREFIX + "card")
    terminal = store.fields(TERMINAL_PREFIX + "shop")
    tiles = lambda fields: len({name[:-1] for name in fields if name[:1] in "fh"})  # noqa: E731
    assert tiles(customer) <= CUSTOMER_TILES.max_tiles + 64
    assert tiles(terminal) <= terminal_tiles(7).max_tiles + 64
    fine = [int(n[1:-1]) for n in customer if n.startswith("f")]
    assert min(fine) * MINUTE >= busy[-1].seconds - CUSTOMER_TILES.fine_horizon_seconds - 64 * 37 - MINUTE


@pytest.mark.parametrize("directory", [True, False])
def test_the_embedded_store_persists_in_its_directory(tmp_path, directory):
    path = tmp_path / "state" if directory else None
    store = EmbeddedStore(path, 7)
    store.score_batch([RawTransaction("t1", int(START.timestamp()), "c", "x", 5.0)])
    store.close()
    reopened = EmbeddedStore(path, 7)
    assert bool(reopened.fields(CUSTOMER_PREFIX + "c")) is directory
    reopened.close()


def test_materializing_the_same_history_twice_changes_nothing(small_raw: pd.DataFrame, tmp_path):
    from fraud_detection.features.materialize import build_snapshot

    snapshot, _ = build_snapshot(small_raw, 7)
    once, twice = EmbeddedStore(None, 7), EmbeddedStore(None, 7)
    once.load(snapshot)
    twice.load(snapshot)
    twice.load(snapshot)
    customer = CUSTOMER_PREFIX + str(small_raw["customer_id"].iloc[0])
    terminal = TERMINAL_PREFIX + str(small_raw["terminal_id"].iloc[0])
    assert once.fields(customer) == twice.fields(customer) and once.fields(terminal) == twice.fields(terminal)


_TILE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 40), st.tuples(st.integers(-3, 5), st.integers(-(10**12), 10**12))),
        st.tuples(st.just("drop"), st.integers(0, 40), st.just((0, 0))),
        st.tuples(st.just("replace"), st.integers(0, 40), st.tuples(st.integers(0, 9), st.integers(0, 99))),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_TILE_OPS, lo=st.integers(-2, 42), hi=st.integers(-2, 42))
def test_tile_series_running_sums_equal_summing_the_tiles(ops, lo, hi):
    """The running sums answer every range as summing the tiles would, after in-order, out-of-order and repeated
    adds, prunes and loads."""
    series, tiles = TileSeries(2), {}
    for op, idx, values in ops:
        if op == "add":
            series.add(idx, values)
            tiles[idx] = [a + b for a, b in zip(tiles.get(idx, [0, 0]), values, strict=True)]
        elif op == "drop":
            series.drop_before(idx)
            tiles = {k: v for k, v in tiles.items() if k >= idx}
        else:
            loaded = {idx: list(values), idx + 3: [1, 1]}
            series.replace(loaded)
            tiles = loaded
        assert series.index == sorted(tiles)
    assert dict(series.items()) == tiles
    expected = [sum(v[c] for k, v in tiles.items() if lo <= k < hi) for c in range(2)]
    assert window_sums(series, TileSeries(2), (lo, hi, 0, 0)) == expected  # as minute tiles
    assert window_sums(TileSeries(2), series, (0, 0, lo, hi)) == expected  # as hour tiles


def test_tile_ranges_depend_on_the_minute_only():
    """Ranges are remembered per minute: any second of a minute gives the ranges its first second gives."""
    minute = 1_700_000_000 // MINUTE
    first = tile_ranges(minute * MINUTE, 7)
    assert all(tile_ranges(minute * MINUTE + s, 7) == first for s in range(MINUTE))
    assert tile_ranges((minute + 1) * MINUTE, 7) != first
