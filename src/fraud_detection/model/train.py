"""Model training: a scikit-learn Pipeline, calibrated on later data, with a cost-based decision threshold.

Every score used offline (the calibration window's threshold and metrics, test metrics, the reference sample, the
promotion gate, the evaluation report, the backtest) comes from :func:`score`, which evaluates the model with the
model server's :class:`~fraud_detection.scoring.scorer.Scorer`: the same compiled engine and calibration as served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from joblib import parallel_config
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fraud_detection.data import schema
from fraud_detection.model.metrics import FraudMetrics, choose_threshold, compute_metrics
from fraud_detection.model.threads import joblib_workers
from fraud_detection.scoring.scorer import Scorer

LOG = logging.getLogger(__name__)
ModelType = Literal["hgb", "logreg", "rf"]
MODEL_TYPES: tuple[str, ...] = ("hgb", "logreg", "rf")
#: The default model: a random forest (chosen on prequential folds of simulated draws, docs/PERFORMANCE.md).
DEFAULT_MODEL_TYPE: ModelType = "rf"
#: Minimum rows per leaf when the configuration leaves it unset, per model type.
DEFAULT_MIN_SAMPLES_LEAF: dict[str, int] = {"hgb": 20, "rf": 5, "logreg": 20}


@dataclass(frozen=True)
class TrainConfig:
    """Training parameters.

    Attributes:
        model_type: ``rf`` (random forest, the default), ``hgb`` (HistGradientBoosting) or ``logreg``.
        calibration_fraction: Share of the training period (its latest part) held out to calibrate and pick the
            threshold while the model is fitted on the earlier part.
        refit_full: After calibrating, refit the Pipeline on the whole period and keep the calibration (more recent
            data for the model; the calibration then comes from a model fitted on slightly less data).
        review_cost: Cost of reviewing one false alert, in amount units.
        max_iter: Boosting iterations (hgb).
        learning_rate: Boosting learning rate (hgb).
        max_leaf_nodes: Leaves per tree (hgb).
        min_samples_leaf: Minimum rows per leaf (hgb, rf); None for the model type's default
            (:data:`DEFAULT_MIN_SAMPLES_LEAF`: 20 for hgb, 5 for rf), resolved when the configuration is made.
        n_estimators: Trees (rf).
        max_samples: Share of the training rows each tree's bootstrap sample draws (rf); None for all of them.
        max_features: Share of features considered per split (hgb).
        max_depth: Tree depth (rf; hgb when set).
        random_state: Seed.
    """

    model_type: ModelType = DEFAULT_MODEL_TYPE
    calibration_fraction: float = 0.2
    refit_full: bool = True
    review_cost: float = 10.0
    max_iter: int = 300
    learning_rate: float = 0.03
    max_leaf_nodes: int = 31
    min_samples_leaf: int | None = None
    max_features: float = 0.5
    n_estimators: int = 100
    max_samples: float | None = 0.5
    max_depth: int | None = None
    random_state: int = 0

    def __post_init__(self) -> None:
        """Reject invalid parameters with a message naming them; resolve the model type's default leaf size."""
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.min_samples_leaf is None:
            object.__setattr__(self, "min_samples_leaf", DEFAULT_MIN_SAMPLES_LEAF[self.model_type])
        elif self.min_samples_leaf < 1:
            raise ValueError(f"min_samples_leaf must be >= 1, got {self.min_samples_leaf}")
        if self.max_samples is not None and not 0.0 < self.max_samples <= 1.0:
            raise ValueError(f"max_samples must be in (0, 1] or None, got {self.max_samples}")
        if not 0.05 <= self.calibration_fraction <= 0.5:
            raise ValueError(f"calibration_fraction must be in [0.05, 0.5], got {self.calibration_fraction}")
        if self.review_cost < 0:
            raise ValueError(f"review_cost must be >= 0, got {self.review_cost}")


@dataclass(frozen=True)
class TrainResult:
    """A trained, calibrated model with its threshold.

    Attributes:
        model: Calibrated classifier wrapping the fitted Pipeline; :func:`score` gives its fraud scores as served.
        threshold: Decision threshold chosen on the calibration window by expected cost.
        validation: Metrics on the calibration window.
        n_train: Rows the Pipeline was fitted on.
        n_calibration: Rows used for calibration and the threshold.
    """

    model: CalibratedPipeline
    threshold: float
    validation: FraudMetrics
    n_train: int
    n_calibration: int


class CalibratedPipeline(ClassifierMixin, BaseEstimator):
    """A fitted Pipeline followed by Platt scaling of its margin: ``p = 1 / (1 + exp(-(a * margin + b)))``.

    The margin is the Pipeline's ``decision_function`` (log-odds for boosting and logistic regression) or, for models
    without one, the log-odds of ``predict_proba``. Kept deliberately simple so the model server can compile it.

    Args:
        pipeline: A fitted binary classification Pipeline.
        a: Platt slope.
        b: Platt intercept.
    """

    def __init__(self, pipeline: Pipeline, a: float = 1.0, b: float = 0.0) -> None:
        self.pipeline = pipeline
        self.a = a
        self.b = b

    @property
    def classes_(self) -> np.ndarray:
        """The class labels (0, 1)."""
        return np.asarray(self.pipeline.classes_)

    def margin(self, X: np.ndarray) -> np.ndarray:
        """The uncalibrated margin of each row.

        Args:
            X: Feature matrix in schema order.

        Returns:
            One value per row.
        """
        if hasattr(self.pipeline, "decision_function"):
            return np.asarray(self.pipeline.decision_function(X), dtype=np.float64)
        p = np.clip(self.pipeline.predict_proba(X)[:, 1], 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    def fit_calibration(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> CalibratedPipeline:
        """Fit the Platt parameters on held-out rows.

        Args:
            X: Held-out feature matrix.
            y: Held-out labels.
            sample_weight: Population rows each row stands for (``1 / rate`` for a sampled legitimate row): the
                weighted fit gives probabilities calibrated on the unsampled population (its intercept absorbs the
                sampling); None for 1 each.

        Returns:
            self.
        """
        lr = LogisticRegression(C=1e6, max_iter=1_000).fit(
            self.margin(X).reshape(-1, 1), y, sample_weight=sample_weight
        )
        self.a = float(lr.coef_[0, 0])
        self.b = float(lr.intercept_[0])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of (legitimate, fraud).

        Args:
            X: Feature matrix in schema order.

        Returns:
            Array of shape (rows, 2).
        """
        p = 1.0 / (1.0 + np.exp(-(self.a * self.margin(X) + self.b)))
        return np.column_stack([1 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class at probability 0.5 (the served decision uses the bundle's cost-based threshold instead).

        Args:
            X: Feature matrix.

        Returns:
            0/1 per row.
        """
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


def feature_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The model input: features in schema order as a float64 array.

    Args:
        frame: Feature frame.

    Returns:
        Array of shape (rows, len(FEATURES)).
    """
    return frame.loc[:, list(schema.FEATURES)].to_numpy(dtype=np.float64)


def build_pipeline(config: TrainConfig) -> Pipeline:
    """The unfitted scikit-learn Pipeline for a model type (preprocessing inside it).

    Args:
        config: Training parameters.

    Returns:
        The Pipeline.
    """
    if config.model_type == "logreg":
        return Pipeline(
            [
                ("scale", StandardScaler()),
                ("clf", LogisticRegression(max_iter=1_000, C=1.0, random_state=config.random_state)),
            ]
        )
    if config.model_type == "rf":
        return Pipeline(
            [
                (
                    "clf",
                    RandomForestClassifier(
                        n_estimators=config.n_estimators,
                        max_depth=config.max_depth,
                        min_samples_leaf=config.min_samples_leaf,
                        max_samples=config.max_samples,
                        n_jobs=None,  # fitted on joblib_workers() threads (fit_pipeline), predicts on one
                        random_state=config.random_state,
                    ),
                )
            ]
        )
    return Pipeline(
        [
            (
                "clf",
                HistGradientBoostingClassifier(
                    max_iter=config.max_iter,
                    learning_rate=config.learning_rate,
                    max_leaf_nodes=config.max_leaf_nodes,
                    min_samples_leaf=config.min_samples_leaf,
                    max_depth=config.max_depth,
                    max_features=config.max_features,
                    l2_regularization=1.0,
                    early_stopping=False,
                    random_state=config.random_state,
                ),
            )
        ]
    )


def split_for_calibration(frame: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a labelled frame by time: the earlier part to fit, the latest ``fraction`` to calibrate.

    Args:
        frame: Labelled feature frame.
        fraction: Share of the time span used for calibration.

    Returns:
        (fit part, calibration part).

    Raises:
        ValueError: Either part lacks one of the classes.
    """
    times = frame[schema.EVENT_TIME]
    cut = times.min() + (times.max() - times.min()) * (1 - fraction)
    fit, cal = frame[times < cut], frame[times >= cut]
    for name, part in (("fit", fit), ("calibration", cal)):
        if part.empty or part[schema.LABEL].nunique() < 2:
            raise ValueError(
                f"the {name} part of the training data ({len(part)} rows) needs both fraud and legitimate "
                "transactions; use more data"
            )
    return fit, cal


def sample_weights(frame: pd.DataFrame) -> np.ndarray | None:
    """The rows' sample weights (:data:`~fraud_detection.data.schema.SAMPLE_WEIGHT`), or None for an unsampled frame.

    Args:
        frame: Feature frame.

    Returns:
        float64 weights, or None.
    """
    if schema.SAMPLE_WEIGHT not in frame.columns:
        return None
    return frame[schema.SAMPLE_WEIGHT].to_numpy(dtype=np.float64)


def fit_pipeline(pipeline: Pipeline, frame: pd.DataFrame) -> Pipeline:
    """Fit a Pipeline on a frame, with its sample weights when it has them (every step that accepts weights).

    Args:
        pipeline: Unfitted Pipeline from :func:`build_pipeline`.
        frame: Labelled feature frame, sampled (with weights) or not.

    Returns:
        The fitted Pipeline.
    """
    weights = sample_weights(frame)
    params = {} if weights is None else {f"{name}__sample_weight": weights for name, _ in pipeline.steps}
    # A forest fits its trees on joblib threads: as many as an enclosing bounded_threads allows, else every CPU.
    # Outside this block the fitted model predicts on one thread, so its sums (and scores) are reproducible.
    with parallel_config(n_jobs=joblib_workers()):
        return pipeline.fit(feature_matrix(frame), frame[schema.LABEL].to_numpy(), **params)


def train(frame: pd.DataFrame, config: TrainConfig | None = None) -> TrainResult:
    """Fit a Pipeline, calibrate it (Platt) on the latest part of the period and choose the threshold.

    A frame sampled by :mod:`fraud_detection.data.sampling` carries a weight per row
    (:data:`~fraud_detection.data.schema.SAMPLE_WEIGHT`): the fit, the calibration, the threshold's expected cost
    and the calibration-window metrics are then weighted, so they estimate what the unsampled data would give.

    Args:
        frame: Labelled feature frame from :func:`fraud_detection.features.offline.build_features`, or a weighted
            sample of one.
        config: Training parameters.

    Returns:
        The calibrated model, its threshold and its calibration-window metrics.
    """
    cfg = config or TrainConfig()
    schema.validate_feature_frame(frame)
    fit, cal = split_for_calibration(frame, cfg.calibration_fraction)
    LOG.info("fitting %s on %d rows (%d fraud)", cfg.model_type, len(fit), int(fit[schema.LABEL].sum()))
    pipeline = fit_pipeline(build_pipeline(cfg), fit)
    cal_weights = sample_weights(cal)
    model = CalibratedPipeline(pipeline).fit_calibration(feature_matrix(cal), cal[schema.LABEL].to_numpy(), cal_weights)
    scores = score(model, cal)
    threshold = choose_threshold(
        scores,
        cal[schema.LABEL].to_numpy(),
        cal[schema.AMOUNT].to_numpy(dtype=np.float64),
        cfg.review_cost,
        cal_weights,
    )
    validation = compute_metrics(cal, scores, threshold, cfg.review_cost, sample_weight=cal_weights)
    n_fit = len(fit)
    if cfg.refit_full:
        full = fit_pipeline(build_pipeline(cfg), frame)
        model = CalibratedPipeline(full, model.a, model.b)
        n_fit = len(frame)
    LOG.info(
        "calibrated on %d rows: threshold %.4f, AP %.4f, AUC %.4f",
        len(cal),
        threshold,
        validation.average_precision,
        validation.roc_auc,
    )
    return TrainResult(model, threshold, validation, n_fit, len(cal))


def scorer_for(model: CalibratedPipeline, threshold: float = 0.5) -> Scorer:
    """The serving Scorer of a freshly trained model that has no bundle yet.

    Use ``Scorer.from_bundle(bundle)`` for a bundle (as the model server does); the scores are the same.

    Args:
        model: A trained model.
        threshold: Decision threshold (irrelevant to the scores).

    Returns:
        The scorer, with the model compiled into its engine.
    """
    return Scorer(model, threshold=threshold)


def score(model: CalibratedPipeline | Scorer, frame: pd.DataFrame) -> np.ndarray:
    """Calibrated fraud scores of a feature frame, as the model server computes them: the one offline scoring path.

    Scores through :meth:`Scorer.score_batch`: the served engine and calibration, the served value checks, no
    per-request row limit.

    Args:
        model: A Scorer (``Scorer.from_bundle(bundle)``), or a trained model, which is compiled into one; pass a
            Scorer to score several frames with one compilation.
        frame: Feature frame holding every schema feature.

    Returns:
        Scores in [0, 1], one per row.

    Raises:
        fraud_detection.scoring.results.InputError: A feature value the server would reject (NaN, out of range).
    """
    scorer = model if isinstance(model, Scorer) else scorer_for(model)
    return scorer.score_batch(feature_matrix(frame))


def fit_and_score_fn(config: TrainConfig):  # type: ignore[no-untyped-def]
    """Adapter for :func:`fraud_detection.model.backtest.backtest`: train on one frame, score another.

    Args:
        config: Training parameters.

    Returns:
        A callable ``(train_frame, test_frame) -> (test scores, threshold)``; the scores come from the served
        engine (:func:`score`).
    """

    def fit_and_score(train_frame: pd.DataFrame, test_frame: pd.DataFrame) -> tuple[np.ndarray, float]:
        result = train(train_frame, config)
        return score(scorer_for(result.model, result.threshold), test_frame), result.threshold

    return fit_and_score
