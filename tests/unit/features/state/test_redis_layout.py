"""The Redis layout's Python side: what the load script is given and how a stored hash reads back."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from fraud_detection.features.definitions import MINUTE
from fraud_detection.features.online import tile_ranges
from fraud_detection.features.state.redis_layout import (
    CUSTOMER_RECORD_FORMAT,
    TERMINAL_RECORD_FORMAT,
    load_arguments,
    logical_fields,
    packed_ranges,
    series_tiles,
)

_TILES = st.dictionaries(
    st.integers(0, 2**31 - 1), st.tuples(st.integers(0, 10**6), st.integers(-(10**6), 10**13)), max_size=40
)


def _running(tiles: dict[int, tuple[int, int]]) -> bytes:
    """Records as the scripts store them: each tile's index and the running sums through it."""
    out, n, f = b"", 0, 0
    for idx in sorted(tiles):
        n, f = n + tiles[idx][0], f + tiles[idx][1]
        out += struct.pack(TERMINAL_RECORD_FORMAT, idx, n, f)
    return out


@given(_TILES)
def test_a_stored_series_reads_back_as_each_tiles_own_counters(tiles: dict[int, tuple[int, int]]):
    assert dict(series_tiles(_running(tiles), 2)) == {idx: list(v) for idx, v in tiles.items()}


def test_load_arguments_carry_each_tiles_own_counters_sorted_and_the_other_fields_as_pairs():
    fields = {"h7n": 2, "h7s": 300, "h7q": 50_000, "h5n": 1, "h5s": 10, "h5q": 100, "f420n": 1, "f420s": 10}
    args = load_arguments({**fields, "f420q": 100, "since": 3, "newest": 9, "_p": 4}, "nsq")
    assert args[0] == 3
    assert list(struct.iter_unpack(CUSTOMER_RECORD_FORMAT, args[1])) == [(420, 1, 10.0, 100.0)]
    assert list(struct.iter_unpack(CUSTOMER_RECORD_FORMAT, args[2])) == [(5, 1, 10.0, 100.0), (7, 2, 300.0, 5e4)]
    assert args[3:] == ["since", 3, "newest", 9, "_p", 4]


def test_a_stored_hash_reads_back_in_the_one_field_per_counter_layout():
    coarse = _running({10: (2, 1), 12: (3, 0)})
    assert logical_fields({"coarse": coarse, "newest": b"43200", "_p": b"5"}, "nf") == {
        "h10n": 2,
        "h10f": 1,
        "h12n": 3,
        "h12f": 0,
        "newest": 43_200,
        "_p": 5,
    }


@given(st.integers(0, 2**31 * MINUTE // 2), st.sampled_from([0, 1, 7, 30]))
def test_packed_ranges_are_the_tile_ranges_as_int32(seconds: int, delay: int):
    ranges = tile_ranges(seconds, delay)
    assert struct.unpack(f"<{len(ranges)}i", packed_ranges(seconds, delay)) == ranges
