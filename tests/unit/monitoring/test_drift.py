import pandas as pd
import pytest

from fraud_detection.data.simulate import DriftConfig, SimulationConfig, simulate
from fraud_detection.features.offline import build_features
from fraud_detection.monitoring.drift import compute_drift

CFG = {"n_customers": 500, "n_terminals": 1000, "n_days": 90, "seed": 1}
REF_START, CUT = pd.Timestamp("2018-05-11", tz="UTC"), pd.Timestamp("2018-05-31", tz="UTC")


@pytest.fixture(scope="module")
def frames():
    base = build_features(simulate(SimulationConfig(**CFG)))
    drift = DriftConfig(start_day=60, amount_factor=1.5, hour_shift_hours=4, new_fraud_rate=0.002)
    drifted = build_features(simulate(SimulationConfig(**CFG, drift=drift)))
    reference = base[(base.event_time >= REF_START) & (base.event_time < CUT)].sample(5000, random_state=0)
    return reference, base[base.event_time >= CUT].sample(3000, random_state=1), drifted[drifted.event_time >= CUT]


def test_no_drift_is_found_where_none_was_injected(frames):
    reference, same, _ = frames
    result = compute_drift(reference, same)
    assert not result.dataset_drifted
    assert result.drifted_share < 0.15
    assert not {"amount", "hour_of_day"} & {f.column for f in result.features if f.drifted}


def test_injected_drift_is_found_in_the_injected_features(frames, tmp_path):
    reference, _, drifted = frames
    result = compute_drift(reference, drifted.sample(3000, random_state=1), report_path=tmp_path / "r.html")
    drifted_cols = {f.column for f in result.features if f.drifted}
    assert {"amount", "hour_of_day", "is_night"} <= drifted_cols
    assert result.dataset_drifted
    assert (tmp_path / "r.html").read_text().lower().startswith("<!doctype html") or "<html" in (
        tmp_path / "r.html"
    ).read_text()[:500].lower()


def test_score_drift_is_measured_when_both_sides_have_scores(frames):
    reference, same, _ = frames
    ref = reference.assign(fraud_score=0.01)
    shifted = same.assign(fraud_score=0.5)
    result = compute_drift(ref, shifted)
    assert result.prediction is not None
    assert result.prediction.drifted


def test_too_small_window_is_reported_not_judged(frames):
    reference, same, _ = frames
    result = compute_drift(reference, same.head(50), min_rows=200)
    assert result.too_small
    assert not result.dataset_drifted
    assert result.features == []


def test_missing_feature_is_a_clear_error(frames):
    reference, same, _ = frames
    with pytest.raises(ValueError, match="lacks feature column"):
        compute_drift(reference, same.drop(columns=["amount"]))
