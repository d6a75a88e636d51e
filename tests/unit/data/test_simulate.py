import pandas as pd
import pytest

from fraud_detection.data import schema
from fraud_detection.data.simulate import DriftConfig, SimulationConfig, simulate

CFG = SimulationConfig(n_customers=400, n_terminals=800, n_days=40, seed=3)


def test_same_seed_gives_same_data_and_other_seed_differs():
    a, b = simulate(CFG), simulate(CFG)
    pd.testing.assert_frame_equal(a, b)
    c = simulate(SimulationConfig(n_customers=400, n_terminals=800, n_days=40, seed=4))
    assert not a["amount"].equals(c["amount"])


def test_output_satisfies_the_contract_and_is_time_ordered():
    df = simulate(CFG)
    out = schema.validate_transactions(df, require_label=True)
    assert out["event_time"].is_monotonic_increasing
    assert out["event_time"].min() >= pd.Timestamp("2018-04-01", tz="UTC")
    assert out["event_time"].max() < pd.Timestamp("2018-04-01", tz="UTC") + pd.Timedelta(days=40)
    assert (df["customer_since"] < df["event_time"]).all()


def test_all_three_handbook_fraud_scenarios_occur_with_their_rules():
    df = simulate(CFG)
    counts = df["fraud_scenario"].value_counts()
    assert {1, 2, 3} <= set(counts.index)
    assert (df.loc[df["amount"] > 220, "is_fraud"] == 1).all()
    assert ((df["fraud_scenario"] > 0) == (df["is_fraud"] == 1)).all()


def test_default_size_matches_the_handbook_volume_and_fraud_rate():
    df = simulate()
    assert 1_650_000 < len(df) < 1_900_000
    assert 0.006 < df["is_fraud"].mean() < 0.011


def test_customers_only_use_terminals_within_the_radius():
    # With a tiny radius almost nobody has a terminal nearby, so few transactions remain.
    small = simulate(SimulationConfig(n_customers=200, n_terminals=50, n_days=10, radius=0.5, seed=1))
    normal = simulate(SimulationConfig(n_customers=200, n_terminals=50, n_days=10, radius=50, seed=1))
    assert len(small) < len(normal) / 5


def test_drift_injection_changes_amounts_hours_and_adds_a_new_fraud_pattern():
    drift = DriftConfig(start_day=20, amount_factor=2.0, hour_shift_hours=5.0, new_fraud_rate=0.01)
    base = simulate(CFG)
    drifted = simulate(SimulationConfig(n_customers=400, n_terminals=800, n_days=40, seed=3, drift=drift))
    cut = pd.Timestamp("2018-04-21", tz="UTC")
    before, after = drifted[drifted.event_time < cut], drifted[drifted.event_time >= cut]
    legit_after = after[after.fraud_scenario == 0]
    assert (
        legit_after.amount.median() > 1.6 * base[(base.event_time >= cut) & (base.fraud_scenario == 0)].amount.median()
    )
    assert after.event_time.dt.hour.mean() > before.event_time.dt.hour.mean() + 2
    assert (after.fraud_scenario == 4).sum() > 0
    assert (before.fraud_scenario == 4).sum() == 0


def test_invalid_size_is_rejected():
    with pytest.raises(ValueError, match="n_days"):
        SimulationConfig(n_days=0)
