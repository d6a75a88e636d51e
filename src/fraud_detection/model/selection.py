"""Prequential model selection: a grid search on validation folds that precede the test folds (Handbook, chapter 5).

Every grid point is backtested (:func:`fraud_detection.model.backtest.backtest`, the same folds, known-compromised
rule and thread cap as ``fraud backtest``) on *validation* folds, and the point with the best mean validation metric
is chosen. The validation folds are the test folds moved back in time so that the last validation test day ends
before the first test fold's training window closes: every label the choice uses was known when the first test
model was trained, and no validation test day is a test day. The chosen parameters are then backtested on the test
folds, which the choice never saw, beside the default parameters, so validation and test can be compared.

The chosen parameters travel as a small JSON document (:func:`params_document`, :func:`parse_params`) that
``fraud train --params`` and the pipeline's ``train_model`` component read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any, cast

import numpy as np
import pandas as pd

from fraud_detection.data.splits import BACKTEST_SPLIT, _utc_day
from fraud_detection.model.backtest import BacktestResult, backtest
from fraud_detection.model.train import ModelType, TrainConfig, fit_and_score_fn

LOG = logging.getLogger(__name__)

ParamValue = int | float | None
#: Metrics a selection may maximise (names of :class:`~fraud_detection.model.metrics.FraudMetrics` fields).
SELECTION_METRICS: tuple[str, ...] = ("average_precision", "card_precision_at_100")
#: Metrics reported per grid point.
REPORTED_METRICS: tuple[str, ...] = ("average_precision", "roc_auc", "card_precision_at_100")

#: The TrainConfig fields a search (and a params file) may set, per model type, with their accepted value types.
TUNABLE: dict[str, dict[str, tuple[type, ...]]] = {
    "hgb": {
        "max_iter": (int,),
        "learning_rate": (float, int),
        "max_leaf_nodes": (int,),
        "min_samples_leaf": (int,),
        "max_features": (float, int),
        "max_depth": (int, type(None)),
    },
    "rf": {
        "n_estimators": (int,),
        "max_depth": (int, type(None)),
        "min_samples_leaf": (int,),
        "max_samples": (float, type(None)),
    },
}

#: Small default grids: 12 points for hgb (around the default learning rate, tree size and leaf size), 9 for rf.
DEFAULT_GRIDS: dict[str, dict[str, tuple[ParamValue, ...]]] = {
    "hgb": {"learning_rate": (0.03, 0.1), "max_leaf_nodes": (15, 31, 63), "min_samples_leaf": (20, 100)},
    "rf": {"n_estimators": (100,), "max_depth": (None, 10, 20), "min_samples_leaf": (1, 5, 20)},
}


@dataclass(frozen=True)
class Folds:
    """A prequential fold schedule (the arguments of :func:`~fraud_detection.model.backtest.backtest`).

    Attributes:
        start: First training day of the first fold (UTC midnight).
        folds: Number of folds.
        step_days: Days between fold starts.
        train_days: Training window length.
        delay_days: Delay window length (never trained on).
        test_days: Test window length.
    """

    start: pd.Timestamp
    folds: int = 4
    step_days: int = 7
    train_days: int = BACKTEST_SPLIT.train
    delay_days: int = BACKTEST_SPLIT.delay
    test_days: int = BACKTEST_SPLIT.test

    @classmethod
    def starting(cls, start: pd.Timestamp | str, **kwargs: int) -> Folds:
        """A schedule from a date or timestamp (floored to its UTC day).

        Args:
            start: First training day of the first fold.
            **kwargs: The other fields.

        Returns:
            The schedule.
        """
        return cls(start=_utc_day(start), **kwargs)

    def test_windows(self) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """Each fold's first and last test day."""
        first = self.start + pd.Timedelta(days=self.train_days + self.delay_days)
        return [
            (
                first + pd.Timedelta(days=i * self.step_days),
                first + pd.Timedelta(days=i * self.step_days + self.test_days - 1),
            )
            for i in range(self.folds)
        ]

    def validation(self) -> Folds:
        """The Handbook's validation folds for these test folds.

        The same schedule moved back by ``delay + test`` days plus the span of the fold starts: the Handbook anchors
        its validation folds ``delay + test`` days before the test folds and runs both backwards in time. The last
        validation test window then ends with the first test fold's training window, ``delay`` days before the
        first test day: the selection uses only labels known when the first test model is trained.

        Returns:
            The validation schedule.
        """
        shift = (self.folds - 1) * self.step_days + self.delay_days + self.test_days
        return dataclasses.replace(self, start=self.start - pd.Timedelta(days=shift))

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (the start as an ISO date)."""
        return {**dataclasses.asdict(self), "start": str(self.start.date())}


@dataclass(frozen=True)
class GridPoint:
    """One grid point's validation backtest.

    Attributes:
        params: The parameters set on top of the base config.
        mean: Mean over the validation folds of each reported metric and ``train_seconds``.
        std: Their standard deviation over the folds.
        backtest: The full validation backtest.
    """

    params: dict[str, ParamValue]
    mean: dict[str, float]
    std: dict[str, float]
    backtest: BacktestResult


@dataclass(frozen=True)
class SelectionResult:
    """A prequential grid search.

    Attributes:
        model_type: Model searched.
        metric: Metric maximised (mean over the validation folds).
        params: The chosen grid point's parameters.
        config: The base config with the chosen parameters.
        grid: Every grid point, in grid order.
        best: Index of the chosen point in ``grid``.
        validation: The validation fold schedule.
        wall_seconds: Wall time of the whole search.
        cpu_seconds: CPU time of this process over the search, all threads together.
        n_fits: Fold trainings run (grid points x folds); each trains the model twice when the config refits on
            the full window after calibrating (``TrainConfig.refit_full``, the default).
    """

    model_type: str
    metric: str
    params: dict[str, ParamValue]
    config: TrainConfig
    grid: tuple[GridPoint, ...]
    best: int
    validation: Folds
    wall_seconds: float
    cpu_seconds: float
    n_fits: int

    def table(self) -> pd.DataFrame:
        """One row per grid point: its parameters, mean and std of AP, AUC, CP@100, and train seconds per fold."""
        rows = []
        for i, point in enumerate(self.grid):
            row: dict[str, Any] = {"chosen": i == self.best, **point.params}
            for name in (*REPORTED_METRICS, "train_seconds"):
                row[f"{name}_mean"] = point.mean[name]
                row[f"{name}_std"] = point.std[name]
            rows.append(row)
        return pd.DataFrame(rows)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (the grid table, not the per-fold backtests)."""
        return {
            "model_type": self.model_type,
            "metric": self.metric,
            "params": self.params,
            "validation_folds": self.validation.as_dict(),
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds,
            "n_fits": self.n_fits,
            "grid": [{**p.params, "mean": p.mean, "std": p.std} for p in self.grid],
        }


@dataclass(frozen=True)
class SelectionReport:
    """A selection with the chosen and default configs on validation and on the test folds.

    Attributes:
        selection: The search on the validation folds.
        test_folds: The test fold schedule.
        chosen_test: The chosen config backtested on the test folds.
        default_validation: The base (default) config on the validation folds.
        default_test: The base config on the test folds.
        test_wall_seconds: Wall time of the test backtests.
    """

    selection: SelectionResult
    test_folds: Folds
    chosen_test: BacktestResult
    default_validation: GridPoint
    default_test: BacktestResult
    test_wall_seconds: float

    def comparison(self) -> pd.DataFrame:
        """Rows default/chosen x validation/test; columns mean ± std of AP, AUC and CP@100."""
        cells = {
            ("default", "validation"): (self.default_validation.mean, self.default_validation.std),
            ("default", "test"): (self.default_test.mean, self.default_test.std),
            ("chosen", "validation"): (
                self.selection.grid[self.selection.best].mean,
                self.selection.grid[self.selection.best].std,
            ),
            ("chosen", "test"): (self.chosen_test.mean, self.chosen_test.std),
        }
        rows = {
            f"{config} / {folds}": {m: f"{mean[m]:.3f} ± {std[m]:.3f}" for m in REPORTED_METRICS}
            for (config, folds), (mean, std) in cells.items()
        }
        return pd.DataFrame.from_dict(rows, orient="index")

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "selection": self.selection.as_dict(),
            "test_folds": self.test_folds.as_dict(),
            "chosen": {
                "validation": self.selection.grid[self.selection.best].mean,
                "test": self.chosen_test.mean,
                "test_std": self.chosen_test.std,
            },
            "default": {
                "params": self.default_validation.params,
                "validation": self.default_validation.mean,
                "test": self.default_test.mean,
                "test_std": self.default_test.std,
            },
            "test_wall_seconds": self.test_wall_seconds,
        }


def grid_points(model_type: str, grid: Mapping[str, Sequence[ParamValue]] | None = None) -> list[dict[str, ParamValue]]:
    """Expand a grid (parameter -> values) into its points, in order; the model type's default grid when None.

    Args:
        model_type: ``hgb`` or ``rf``.
        grid: Values per parameter.

    Returns:
        One dict per point.

    Raises:
        ValueError: Unknown model type or parameter, a value of the wrong type, or an empty value list.
    """
    allowed = _allowed(model_type)
    spec = DEFAULT_GRIDS[model_type] if grid is None else grid
    for name, values in spec.items():
        if not values:
            raise ValueError(f"grid parameter {name!r} has no values")
    names = list(spec)
    points = [dict(zip(names, combo, strict=True)) for combo in product(*(spec[n] for n in names))]
    for point in points:
        _check_params(point, allowed, model_type)
    return points


def evaluate_config(
    frame: pd.DataFrame,
    config: TrainConfig,
    folds: Folds,
    *,
    threads: int | None = 1,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Backtest one config on a fold schedule.

    Args:
        frame: Labelled feature frame.
        config: Training parameters.
        folds: The schedule.
        threads: Native thread cap per fit (1 avoids OpenMP busy-waiting on a shared machine); None for all CPUs.
        progress: Called with the fold index after each fold.

    Returns:
        The backtest.
    """
    return backtest(
        frame,
        fit_and_score_fn(config),
        model_type=config.model_type,
        start=folds.start,
        train_days=folds.train_days,
        delay_days=folds.delay_days,
        test_days=folds.test_days,
        folds=folds.folds,
        step_days=folds.step_days,
        review_cost=config.review_cost,
        threads=threads,
        progress=progress,
    )


def select(
    frame: pd.DataFrame,
    base: TrainConfig,
    validation: Folds,
    *,
    grid: Mapping[str, Sequence[ParamValue]] | None = None,
    metric: str = "average_precision",
    threads: int | None = 1,
    progress: Callable[[int], None] | None = None,
) -> SelectionResult:
    """Backtest every grid point on the validation folds and choose the best mean metric.

    Ties (equal means) go to the lower standard deviation over the folds, then to the lower mean training time.

    Args:
        frame: Labelled feature frame.
        base: Config the grid's parameters are set on (model type, review cost, seed...).
        validation: Validation folds (:meth:`Folds.validation` of the test folds for the Handbook's).
        grid: Values per parameter; the model type's :data:`DEFAULT_GRIDS` entry when None.
        metric: One of :data:`SELECTION_METRICS`.
        threads: Native thread cap per fit.
        progress: Called with the fold index after each fold of each point.

    Returns:
        The grid table, the chosen parameters and the search's cost.

    Raises:
        ValueError: Unknown metric, model type or parameter; a fold without data.
    """
    if metric not in SELECTION_METRICS:
        raise ValueError(f"selection metric must be one of {', '.join(SELECTION_METRICS)}, got {metric!r}")
    points = grid_points(base.model_type, grid)
    wall, cpu = time.perf_counter(), time.process_time()
    evaluated = []
    for i, params in enumerate(points):
        config = dataclasses.replace(base, **params)  # type: ignore[arg-type]
        result = evaluate_config(frame, config, validation, threads=threads, progress=progress)
        evaluated.append(_grid_point(params, result))
        LOG.info(
            "grid point %d/%d %s: %s %.4f ± %.4f, %.1f s per fold",
            i + 1,
            len(points),
            params,
            metric,
            result.mean[metric],
            result.std[metric],
            result.mean["train_seconds"],
        )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    best = min(range(len(evaluated)), key=lambda i: _rank_key(evaluated[i], metric))
    chosen = evaluated[best].params
    return SelectionResult(
        model_type=base.model_type,
        metric=metric,
        params=chosen,
        config=dataclasses.replace(base, **chosen),  # type: ignore[arg-type]
        grid=tuple(evaluated),
        best=best,
        validation=validation,
        wall_seconds=wall,
        cpu_seconds=cpu,
        n_fits=len(points) * validation.folds,
    )


def select_and_test(
    frame: pd.DataFrame,
    base: TrainConfig,
    test: Folds,
    *,
    validation: Folds | None = None,
    grid: Mapping[str, Sequence[ParamValue]] | None = None,
    metric: str = "average_precision",
    threads: int | None = 1,
    progress: Callable[[int], None] | None = None,
) -> SelectionReport:
    """Select on validation folds, then backtest the chosen and the base configs on the test folds.

    The base config's validation figures come from the grid when it is a grid point, otherwise from one more
    validation backtest (not counted in the search's cost).

    Args:
        frame: Labelled feature frame.
        base: The default config; the grid's parameters are set on it.
        test: The test folds.
        validation: Validation folds; :meth:`Folds.validation` of ``test`` when None.
        grid: Values per parameter; the model type's default grid when None.
        metric: One of :data:`SELECTION_METRICS`.
        threads: Native thread cap per fit.
        progress: Called with the fold index after each fold.

    Returns:
        The selection and the validation/test comparison.

    Raises:
        ValueError: A validation test day falls on or after the first test day, or :func:`select`'s errors.
    """
    folds = test.validation() if validation is None else validation
    check_disjoint(folds, test)
    selection = select(frame, base, folds, grid=grid, metric=metric, threads=threads, progress=progress)
    default = next((p for p in selection.grid if dataclasses.replace(base, **p.params) == base), None)  # type: ignore[arg-type]
    if default is None:
        default = _grid_point({}, evaluate_config(frame, base, folds, threads=threads, progress=progress))
    wall = time.perf_counter()
    chosen_test = evaluate_config(frame, selection.config, test, threads=threads, progress=progress)
    default_test = (
        chosen_test
        if selection.config == base
        else evaluate_config(frame, base, test, threads=threads, progress=progress)
    )
    return SelectionReport(
        selection=selection,
        test_folds=test,
        chosen_test=chosen_test,
        default_validation=default,
        default_test=default_test,
        test_wall_seconds=time.perf_counter() - wall,
    )


def check_disjoint(validation: Folds, test: Folds) -> None:
    """Refuse validation folds whose test days reach the test folds' first test day.

    Args:
        validation: Validation folds.
        test: Test folds.

    Raises:
        ValueError: The last validation test day is on or after the first test day.
    """
    last_validation = max(last for _, last in validation.test_windows())
    first_test = min(first for first, _ in test.test_windows())
    if last_validation >= first_test:
        raise ValueError(
            f"validation folds from {validation.start.date()} test up to {last_validation.date()}, not before the "
            f"first test day {first_test.date()}; start them earlier"
        )


@dataclass(frozen=True)
class SelectedParams:
    """Parameters chosen for a model type, as a params file carries them.

    Attributes:
        model_type: ``hgb`` or ``rf``.
        params: TrainConfig fields to set (keys of :data:`TUNABLE` for the model type).
    """

    model_type: str
    params: dict[str, ParamValue]

    def apply(self, config: TrainConfig) -> TrainConfig:
        """The config with these parameters set.

        Args:
            config: Base config; its model type must match.

        Returns:
            The new config.

        Raises:
            ValueError: The config trains another model type.
        """
        if config.model_type != self.model_type:
            raise ValueError(
                f"the parameters were selected for {self.model_type}, not {config.model_type}; "
                f"train with model type {self.model_type}"
            )
        return dataclasses.replace(config, **self.params)  # type: ignore[arg-type]


def params_document(selection: SelectionResult) -> dict[str, Any]:
    """The params file's content: the model type, the chosen parameters and how they were chosen.

    Args:
        selection: A finished search.

    Returns:
        A JSON-serialisable dict that :func:`parse_params` reads back.
    """
    best = selection.grid[selection.best]
    return {
        "model_type": selection.model_type,
        "params": selection.params,
        "selected_by": {
            "metric": selection.metric,
            "validation_mean": best.mean,
            "validation_std": best.std,
            "validation_folds": selection.validation.as_dict(),
            "grid_points": len(selection.grid),
            "n_fits": selection.n_fits,
        },
    }


_DOCUMENT_KEYS = frozenset({"model_type", "params", "selected_by"})


def parse_params(text: str, source: str = "params") -> SelectedParams:
    """Read a params document (:func:`params_document`), checking every key and value.

    Args:
        text: The JSON text.
        source: What to call it in errors (a file name, ``params_json``).

    Returns:
        The parameters.

    Raises:
        ValueError: Not JSON, not an object, an unknown key or parameter, a missing model type or a value of the
            wrong type; the message is one line and names the key.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{source}: expected a JSON object with model_type and params, got {type(doc).__name__}")
    unknown = sorted(set(doc) - _DOCUMENT_KEYS)
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r}; expected {', '.join(sorted(_DOCUMENT_KEYS))}")
    model_type = doc.get("model_type")
    if not isinstance(model_type, str):
        raise ValueError(f"{source}: key 'model_type' must be one of {', '.join(TUNABLE)}")
    try:
        allowed = _allowed(model_type)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc
    params = doc.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f"{source}: key 'params' must be an object of parameter values")
    try:
        _check_params(params, allowed, model_type)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc
    return SelectedParams(model_type=model_type, params=dict(params))


def _allowed(model_type: str) -> dict[str, tuple[type, ...]]:
    if model_type not in TUNABLE:
        raise ValueError(f"model type {model_type!r} has no tunable parameters; choose from {', '.join(TUNABLE)}")
    return TUNABLE[model_type]


def _check_value(name: str, value: object, allowed: dict[str, tuple[type, ...]], model_type: str) -> None:
    if name not in allowed:
        raise ValueError(f"unknown parameter {name!r} for {model_type}; allowed: {', '.join(allowed)}")
    types = allowed[name]
    if isinstance(value, bool) or not isinstance(value, types):
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise ValueError(f"parameter {name!r} must be {names}, got {value!r}")
    if isinstance(value, int | float) and (not math.isfinite(value) or value <= 0):
        raise ValueError(f"parameter {name!r} must be positive, got {value!r}")


def _check_params(params: Mapping[str, object], allowed: dict[str, tuple[type, ...]], model_type: str) -> None:
    """Each value's type and sign, then the ranges a training config accepts (e.g. ``max_samples`` at most 1)."""
    for name, value in params.items():
        _check_value(name, value, allowed, model_type)
    TrainConfig(model_type=model_type, **params)  # type: ignore[arg-type]


def _grid_point(params: Mapping[str, ParamValue], result: BacktestResult) -> GridPoint:
    keys = (*REPORTED_METRICS, "train_seconds")
    return GridPoint(
        params=dict(params),
        mean={k: result.mean[k] for k in keys},
        std={k: result.std[k] for k in keys},
        backtest=result,
    )


def _rank_key(point: GridPoint, metric: str) -> tuple[float, float, float]:
    mean, std = point.mean[metric], point.std[metric]
    return (
        -mean if not np.isnan(mean) else math.inf,
        std if not np.isnan(std) else math.inf,
        point.mean["train_seconds"],
    )


def model_type_of(name: str) -> ModelType:
    """Check a model type for selection.

    Args:
        name: ``hgb`` or ``rf``.

    Returns:
        The name, typed.

    Raises:
        ValueError: Another model type (logreg has nothing to tune here).
    """
    _allowed(name)
    return cast(ModelType, name)
