import numpy as np
import pytest

from fraud_detection.data import schema
from fraud_detection.model.threads import bounded_threads
from fraud_detection.model.train import CalibratedPipeline, TrainConfig, feature_matrix, score, scorer_for, train
from fraud_detection.scoring.results import InputError
from fraud_detection.scoring.scorer import Scorer


@pytest.mark.parametrize("model_type", ["hgb", "logreg", "rf"])
def test_each_model_type_learns_and_is_calibrated(small_features, model_type):
    cfg = TrainConfig(model_type=model_type, max_iter=50, n_estimators=30)
    result = train(small_features, cfg)
    s = score(result.model, small_features)
    assert s.min() >= 0 and s.max() <= 1
    assert result.validation.roc_auc > 0.75
    # Calibrated: the mean score on the calibration window is close to the observed fraud rate.
    cal = small_features[small_features.event_time >= small_features.event_time.quantile(0.8)]
    assert abs(score(result.model, cal).mean() - cal.is_fraud.mean()) < 0.02
    assert 0 < result.threshold <= 1


def test_pipeline_holds_its_preprocessing(small_features):
    result = train(small_features, TrainConfig(model_type="logreg"))
    assert "scale" in result.model.pipeline.named_steps


def test_threshold_follows_review_cost(small_features):
    cheap = train(small_features, TrainConfig(model_type="hgb", max_iter=30, review_cost=0.5)).threshold
    dear = train(small_features, TrainConfig(model_type="hgb", max_iter=30, review_cost=200)).threshold
    assert dear > cheap


def test_bad_config_and_one_class_data_are_rejected(small_features):
    with pytest.raises(ValueError, match="model_type"):
        TrainConfig(model_type="xgb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_samples_leaf must be >= 1, got 0"):
        TrainConfig(min_samples_leaf=0)
    with pytest.raises(ValueError, match=r"max_samples must be in \(0, 1\] or None, got 1.5"):
        TrainConfig(max_samples=1.5)
    legit_only = small_features[small_features[schema.LABEL] == 0]
    with pytest.raises(ValueError, match="both fraud and legitimate"):
        train(legit_only, TrainConfig(model_type="hgb", max_iter=5))


def test_the_default_model_is_the_forest_with_its_own_leaf_size():
    config = TrainConfig()
    assert (config.model_type, config.n_estimators, config.min_samples_leaf, config.max_samples) == ("rf", 100, 5, 0.5)
    assert TrainConfig(model_type="hgb").min_samples_leaf == 20
    assert TrainConfig(min_samples_leaf=3).min_samples_leaf == 3


def test_a_forest_scores_the_same_whatever_threads_fitted_it(small_features):
    config = TrainConfig(n_estimators=8)
    with bounded_threads(1):
        one = train(small_features, config).model
    with bounded_threads(2):
        two = train(small_features, config).model
    assert one.pipeline.named_steps["clf"].n_jobs is None  # predicts on one thread: sums in a fixed order
    rows = small_features.head(500)
    np.testing.assert_array_equal(score(one, rows), score(two, rows))
    X = rows[list(schema.FEATURES)].to_numpy()
    np.testing.assert_array_equal(one.predict_proba(X), two.predict_proba(X))


def test_training_is_reproducible(small_features):
    a = score(train(small_features, TrainConfig(model_type="hgb", max_iter=20)).model, small_features.head(500))
    b = score(train(small_features, TrainConfig(model_type="hgb", max_iter=20)).model, small_features.head(500))
    np.testing.assert_array_equal(a, b)


# -- one scoring path: offline scores come from the served engine -------------------------------------------------


@pytest.mark.parametrize(
    ("model_type", "engine"), [("hgb", "hgb-compiled"), ("logreg", "linear-compiled"), ("rf", "rf-compiled")]
)
def test_score_is_the_served_engine_for_any_frame_size(small_features, model_type, engine):
    result = train(small_features, TrainConfig(model_type=model_type, max_iter=30, n_estimators=15))
    scorer = scorer_for(result.model, result.threshold)
    assert scorer.engine_name == engine
    assert len(small_features) > 10 * scorer.max_batch_size  # no request limit on offline scoring
    scores = score(result.model, small_features)
    np.testing.assert_array_equal(scores, score(scorer, small_features))
    # What a request of the same rows gets (the server hands the engine a C-contiguous float64 matrix).
    X = feature_matrix(small_features)
    served = Scorer(result.model, threshold=result.threshold, max_batch_size=len(X))
    np.testing.assert_array_equal(scores, served.score(served.check(X)).scores)
    # The engines equal scikit-learn, so today's numbers hold within floating-point tolerance.
    sklearn = result.model.predict_proba(feature_matrix(small_features))[:, 1]
    np.testing.assert_allclose(scores, sklearn, rtol=0, atol=1e-6)


def test_training_and_scoring_never_score_through_scikit_learn(small_features, monkeypatch):
    def forbidden(self, X):
        raise AssertionError("scored with scikit-learn's predict_proba instead of the served engine")

    monkeypatch.setattr(CalibratedPipeline, "predict_proba", forbidden)
    result = train(small_features, TrainConfig(model_type="hgb", max_iter=20))
    assert 0 < result.threshold <= 1 and result.validation.roc_auc > 0.75
    assert score(result.model, small_features.head(50)).shape == (50,)


def test_score_applies_the_served_value_checks(small_features):
    result = train(small_features, TrainConfig(model_type="logreg"))
    bad = small_features.head(20).copy()
    bad.loc[bad.index[3], "hour_of_day"] = 25
    with pytest.raises(InputError, match="hour_of_day") as failure:
        score(result.model, bad)
    assert failure.value.kind == "out_of_range"
    assert score(result.model, small_features.head(0)).shape == (0,)
