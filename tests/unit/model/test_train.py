import numpy as np
import pytest

from fraud_detection.data import schema
from fraud_detection.model.train import TrainConfig, score, train


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
    cheap = train(small_features, TrainConfig(max_iter=30, review_cost=0.5)).threshold
    dear = train(small_features, TrainConfig(max_iter=30, review_cost=200)).threshold
    assert dear > cheap


def test_bad_config_and_one_class_data_are_rejected(small_features):
    with pytest.raises(ValueError, match="model_type"):
        TrainConfig(model_type="xgb")  # type: ignore[arg-type]
    legit_only = small_features[small_features[schema.LABEL] == 0]
    with pytest.raises(ValueError, match="both fraud and legitimate"):
        train(legit_only, TrainConfig(max_iter=5))


def test_training_is_reproducible(small_features):
    a = score(train(small_features, TrainConfig(max_iter=20)).model, small_features.head(500))
    b = score(train(small_features, TrainConfig(max_iter=20)).model, small_features.head(500))
    np.testing.assert_array_equal(a, b)
