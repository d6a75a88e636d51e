"""Prequential model selection: validation folds before the test days, the best validation mean chosen, params files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fraud_detection.model.selection import (
    DEFAULT_GRIDS,
    Folds,
    SelectionReport,
    check_disjoint,
    grid_points,
    params_document,
    parse_params,
    select_and_test,
)
from fraud_detection.model.threads import bounded_threads
from fraud_detection.model.train import TrainConfig

# The small simulated set spans 2018-04-01..2018-05-30. Two weekly 7/7/7 test folds from 05-02 test 05-16..05-29;
# their validation folds start (2 - 1) x 7 + 7 + 7 = 21 days earlier, on 04-11, and test 04-25..05-08.
TEST = Folds.starting("2018-05-02", folds=2)
GRID = {"max_iter": [1, 50]}  # one boosting iteration is a far weaker model than fifty


@pytest.fixture(scope="module")
def report(small_features: pd.DataFrame) -> SelectionReport:
    with bounded_threads(1):
        return select_and_test(small_features, TrainConfig(model_type="hgb", max_iter=50), TEST, grid=GRID, threads=1)


def _day(value: str) -> pd.Timestamp:
    return pd.Timestamp(value, tz="UTC")


def test_the_default_validation_folds_are_the_handbooks_and_end_before_the_first_test_day():
    test = Folds.starting("2018-07-25")  # the Handbook's test folds: 4 weekly 7/7/7 folds
    validation = test.validation()
    # Handbook chapter 5: validation trainings start 07-11, 07-04, 06-27 and 06-20 (delay + test = 14 days before
    # the test anchor, folds running back a week each).
    assert validation.start == _day("2018-06-20")
    windows = validation.test_windows()
    assert windows[0] == (_day("2018-07-04"), _day("2018-07-10"))
    assert windows[-1] == (_day("2018-07-25"), _day("2018-07-31"))
    first_test_day = test.test_windows()[0][0]
    assert first_test_day == _day("2018-08-08")
    validation_days = {d for a, b in windows for d in pd.date_range(a, b)}
    test_days = {d for a, b in test.test_windows() for d in pd.date_range(a, b)}
    assert not validation_days & test_days
    # The last validation label (07-31) is the last label of the first test fold's training window.
    assert max(validation_days) == test.start + pd.Timedelta(days=test.train_days - 1)


def test_validation_folds_that_reach_a_test_day_are_refused():
    # Eight days later than the Handbook's 06-20: the last validation fold tests 08-01..08-08.
    with pytest.raises(ValueError, match="test up to 2018-08-08, not before the first test day 2018-08-08"):
        check_disjoint(Folds.starting("2018-06-28"), Folds.starting("2018-07-25"))
    check_disjoint(Folds.starting("2018-06-27"), Folds.starting("2018-07-25"))  # tests up to 08-07: accepted


def test_the_search_backtests_every_point_on_validation_days_only_and_picks_the_best_mean(report: SelectionReport):
    selection = report.selection
    assert [p.params for p in selection.grid] == [{"max_iter": 1}, {"max_iter": 50}]
    # Every grid point was backtested on the validation folds, whose test days all precede the first test day.
    first_test_day = _day("2018-05-16")
    for point in selection.grid:
        starts = [_day(f.test_start) for f in point.backtest.folds]
        assert starts == [_day("2018-04-25"), _day("2018-05-02")]
        assert all(s + pd.Timedelta(days=6) < first_test_day for s in starts)
        # The reported mean is the mean of the folds' AP.
        assert point.mean["average_precision"] == pytest.approx(
            np.mean([f.metrics.average_precision for f in point.backtest.folds])
        )
    aps = [p.mean["average_precision"] for p in selection.grid]
    assert aps[1] > aps[0] + 0.02, aps  # the premise: 50 iterations clearly beat one (0.46 against 0.51 here)
    assert selection.best == int(np.argmax(aps))
    assert selection.best == 1
    assert selection.params == {"max_iter": 50}
    assert selection.config == TrainConfig(model_type="hgb", max_iter=50)
    table = selection.table()
    assert table["chosen"].tolist() == [False, True]
    assert table["average_precision_mean"].tolist() == aps


def test_the_search_counts_its_fits_and_measures_its_cost(report: SelectionReport):
    selection = report.selection
    assert selection.n_fits == 2 * 2  # grid points x validation folds
    assert sum(len(p.backtest.folds) for p in selection.grid) == selection.n_fits
    fold_seconds = sum(f.train_seconds for p in selection.grid for f in p.backtest.folds)
    assert fold_seconds <= selection.wall_seconds
    assert selection.cpu_seconds > 0


def test_the_chosen_and_default_configs_are_backtested_on_the_test_folds(report: SelectionReport):
    assert [f.test_start for f in report.chosen_test.folds] == ["2018-05-16", "2018-05-23"]
    # The base config (max_iter 50) is the chosen grid point: its validation figures come from the grid, its test
    # backtest is the chosen one.
    assert report.default_validation.params == {"max_iter": 50}
    assert report.default_test is report.chosen_test
    assert list(report.comparison().index) == [
        "default / validation",
        "default / test",
        "chosen / validation",
        "chosen / test",
    ]
    doc = json.loads(json.dumps(report.as_dict()))
    assert doc["selection"]["n_fits"] == 4
    assert doc["chosen"]["test"]["average_precision"] == report.chosen_test.mean["average_precision"]


def test_a_params_document_round_trips_to_the_chosen_config(report: SelectionReport):
    text = json.dumps(params_document(report.selection))
    selected = parse_params(text)
    assert selected.model_type == "hgb"
    assert selected.params == {"max_iter": 50}
    assert selected.apply(TrainConfig(model_type="hgb", review_cost=3.0)) == TrainConfig(
        model_type="hgb", max_iter=50, review_cost=3.0
    )
    rf = parse_params('{"model_type": "rf", "params": {"max_depth": null, "n_estimators": 7}}')
    assert rf.apply(TrainConfig(model_type="rf")) == TrainConfig(model_type="rf", n_estimators=7, max_depth=None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"^p: not valid JSON \(.* at line 1 column 2\)$"),
        ("[1]", "^p: expected a JSON object with model_type and params, got list$"),
        ('{"model_type": "hgb", "paramz": {}}', "^p: unknown key 'paramz'; expected model_type, params, selected_by$"),
        ('{"params": {}}', "^p: key 'model_type' must be one of hgb, rf$"),
        ('{"model_type": "logreg", "params": {}}', "^p: model type 'logreg' has no tunable parameters"),
        ('{"model_type": "hgb", "params": {"max_itr": 5}}', "^p: unknown parameter 'max_itr' for hgb; allowed: "),
        ('{"model_type": "rf", "params": {"learning_rate": 0.1}}', "^p: unknown parameter 'learning_rate' for rf"),
        ('{"model_type": "hgb", "params": {"max_iter": "5"}}', "^p: parameter 'max_iter' must be int, got '5'$"),
        ('{"model_type": "hgb", "params": {"max_iter": 2.5}}', "^p: parameter 'max_iter' must be int, got 2.5$"),
        ('{"model_type": "hgb", "params": {"max_iter": true}}', "^p: parameter 'max_iter' must be int, got True$"),
        ('{"model_type": "hgb", "params": {"learning_rate": -1}}', "^p: parameter 'learning_rate' must be positive"),
        ('{"model_type": "hgb", "params": [1]}', "^p: key 'params' must be an object of parameter values$"),
        (
            '{"model_type": "rf", "params": {"max_samples": 1.5}}',
            r"^p: max_samples must be in \(0, 1\] or None, got 1.5$",
        ),
    ],
)
def test_a_bad_params_document_gives_a_one_line_error_naming_the_key(text: str, message: str):
    with pytest.raises(ValueError, match=message) as info:
        parse_params(text, source="p")
    assert "\n" not in str(info.value)


def test_params_for_one_model_type_are_refused_for_another():
    with pytest.raises(ValueError, match="selected for rf, not hgb"):
        parse_params('{"model_type": "rf", "params": {"n_estimators": 5}}').apply(TrainConfig(model_type="hgb"))


def test_grids_expand_in_order_and_reject_unknown_parameters():
    assert len(grid_points("hgb")) == 12
    assert len(grid_points("rf")) == 9
    assert grid_points("hgb")[0] == {name: values[0] for name, values in DEFAULT_GRIDS["hgb"].items()}
    assert grid_points("hgb", {"max_iter": [1, 2], "learning_rate": [0.1]}) == [
        {"max_iter": 1, "learning_rate": 0.1},
        {"max_iter": 2, "learning_rate": 0.1},
    ]
    with pytest.raises(ValueError, match="unknown parameter 'n_estimators' for hgb"):
        grid_points("hgb", {"n_estimators": [10]})
    with pytest.raises(ValueError, match=r"^max_samples must be in \(0, 1\] or None, got 2.0$"):
        grid_points("rf", {"max_samples": [0.5, 2.0]})
    with pytest.raises(ValueError, match="grid parameter 'max_iter' has no values"):
        grid_points("hgb", {"max_iter": []})


def test_random_forest_is_searched_on_its_own_parameters(small_features: pd.DataFrame):
    test = Folds.starting("2018-05-09", folds=1)  # one fold: validation from 05-09 - 14 = 04-25
    with bounded_threads(1):
        report = select_and_test(
            small_features,
            TrainConfig(model_type="rf", n_estimators=10),
            test,
            grid={"max_depth": [1, None]},
            metric="card_precision_at_100",
            threads=1,
        )
    selection = report.selection
    assert selection.validation.start == _day("2018-04-25")
    assert [f.test_start for f in selection.grid[0].backtest.folds] == ["2018-05-09"]
    assert [f.test_start for f in report.chosen_test.folds] == ["2018-05-23"]
    cps = [p.mean["card_precision_at_100"] for p in selection.grid]
    assert cps[selection.best] == max(cps), cps
    assert selection.config.model_type == "rf" and selection.config.n_estimators == 10
    # The base config (max_depth None) is a grid point: its validation row is reused, not refitted.
    assert report.default_validation is selection.grid[1]
    assert selection.n_fits == 2
