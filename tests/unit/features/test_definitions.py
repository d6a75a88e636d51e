"""The derived features: one row alone equals the same row in a batch, bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fraud_detection.data import schema
from fraud_detection.features.definitions import AGGREGATES, SECONDS_PER_DAY, derive_matrix

_T0 = 1_750_000_000

# Counts from 0 (undefined means and rates) to busy; sums so that means and spreads hit zero, tiny and large values.
_counts = st.integers(0, 3)
_row = st.fixed_dictionaries(
    {
        "seconds": st.integers(_T0, _T0 + 60 * SECONDS_PER_DAY),
        "amount": st.one_of(st.sampled_from([0.0, 0.005, 0.015, 0.01, 1e-9, 2.675]), st.floats(0, 50_000)),
        "tenure": st.integers(-SECONDS_PER_DAY, 400 * SECONDS_PER_DAY),
        "aggregates": st.lists(
            st.one_of(_counts, st.integers(0, 10**12), st.sampled_from([2**53 - 1, 2**53 + 1])),
            min_size=len(AGGREGATES),
            max_size=len(AGGREGATES),
        ),
    }
)


def _derive(rows: list[dict[str, object]]) -> np.ndarray:
    seconds = np.array([r["seconds"] for r in rows], dtype=np.int64)
    return derive_matrix(
        seconds,
        np.array([r["amount"] for r in rows], dtype=np.float64),
        seconds - np.array([r["tenure"] for r in rows], dtype=np.int64),
        np.array([r["aggregates"] for r in rows], dtype=np.int64),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_row, min_size=2, max_size=8))
def test_a_row_derived_alone_equals_the_same_row_in_a_batch_bit_for_bit(rows):
    batch = _derive(rows)
    alone = np.vstack([_derive([r]) for r in rows])
    assert alone.shape == (len(rows), len(schema.FEATURES))
    # the same IEEE doubles, bit for bit (every undefined ratio has a documented default, so no NaN)
    assert np.array_equal(alone.view(np.int64), batch.view(np.int64))
    assert np.isfinite(batch).all()


def test_undefined_windows_take_their_documented_defaults():
    row = {"seconds": _T0, "amount": 12.5, "tenure": 0, "aggregates": [0] * len(AGGREGATES)}
    features = dict(zip(schema.FEATURES, _derive([row])[0].tolist(), strict=True))
    assert features["customer_tx_count_30d"] == 1.0  # the transaction itself
    assert features["customer_avg_amount_30d"] == 12.5
    assert features["amount_to_customer_avg_30d"] == 1.0
    assert features["amount_zscore_30d"] == 0.0
    assert features["customer_avg_7d_to_baseline"] == 1.0
    assert features["terminal_fraud_rate_30d"] == 0.0


def test_amounts_are_rounded_to_cents_half_to_even_alone_and_in_a_batch():
    rows = [
        {"seconds": _T0, "amount": a, "tenure": 0, "aggregates": [0] * len(AGGREGATES)} for a in (0.125, 0.135, 0.005)
    ]
    col = schema.FEATURES.index("customer_avg_amount_1d")
    expected = [np.rint(a * 100.0) / 100.0 for a in (0.125, 0.135, 0.005)]
    assert _derive(rows)[:, col].tolist() == expected
    assert [float(_derive([r])[0, col]) for r in rows] == expected
