"""The training data window: which days train, calibrate and test, and whether they can be trained on."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fraud_detection.data import schema
from fraud_detection.data.splits import TRAINING_SPLIT, train_delay_test_split


def training_window(
    frame: pd.DataFrame,
    *,
    window_end: str = "",
    window_days: int = 0,
    train_days: int = TRAINING_SPLIT.train,
    test_days: int = TRAINING_SPLIT.test,
    delay_days: int = TRAINING_SPLIT.delay,
    min_rows: int = 1_000,
) -> pd.DataFrame:
    """Cut the data window and check it can train and test a model.

    Args:
        frame: Validated raw transactions.
        window_end: Exclusive end of the window (ISO date/time, UTC); empty for the day after the last event.
        window_days: Days in the window before ``window_end``; 0 for all the data.
        train_days: Most recent days the training step will train on (0 for all before the delay window).
        test_days: Held-out test days the training step will use.
        delay_days: Label delay between training and test.
        min_rows: Fewest transactions accepted in the window.

    Returns:
        The transactions of the window.

    Raises:
        SchemaError: The window is too small, too short, or lacks fraud or legitimate rows; the message says which.
    """
    times = frame[schema.EVENT_TIME]
    if window_end or window_days:
        end = pd.Timestamp(window_end) if window_end else times.max().floor("D") + pd.Timedelta(days=1)
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        start = end - pd.Timedelta(days=window_days) if window_days else times.min()
        frame = frame[(times >= start) & (times < end)].reset_index(drop=True)
    if len(frame) < min_rows:
        raise schema.SchemaError(f"the data window holds {len(frame)} transaction(s); min_rows is {min_rows}")
    try:
        split = holdout_split(frame, test_days, delay_days, train_days or None)
    except ValueError as exc:
        raise schema.SchemaError(str(exc)) from exc
    for name, part in (("training", split.train), ("test", split.test)):
        if part[schema.LABEL].nunique() < 2:
            raise schema.SchemaError(f"column {schema.LABEL!r}: the {name} window needs both fraud and legitimate rows")
    return frame


@dataclass(frozen=True)
class HoldoutSplit:
    """Train and test frames separated by a delay window.

    Attributes:
        train: Rows before the delay window.
        test: The last ``test_days`` days, without cards with fraud known by each test day.
    """

    train: pd.DataFrame
    test: pd.DataFrame


def training_span(
    first: pd.Timestamp, last: pd.Timestamp, train_days: int | None, delay_days: int, test_days: int
) -> tuple[pd.Timestamp, int]:
    """Where training starts and how many days it covers, so that the delay and test windows end on the last day.

    Args:
        first: The earliest event time of the data.
        last: The latest event time of the data.
        train_days: Most recent training days wanted (None for every day available).
        delay_days: Label delay window.
        test_days: Test window.

    Returns:
        (first training day at UTC midnight, training days).

    Raises:
        ValueError: The data spans too few days.
    """
    first_day, last_day = first.floor("D"), last.floor("D")
    total_days = int((last_day - first_day).days) + 1
    available = total_days - delay_days - test_days
    if available < 2:
        raise ValueError(
            f"the data spans {total_days} day(s); training needs at least {delay_days + test_days + 2} "
            f"(delay {delay_days} + test {test_days} + 2 training days)"
        )
    days = available if train_days is None else min(train_days, available)
    return first_day + pd.Timedelta(days=available - days), days


def holdout_split(
    features: pd.DataFrame,
    test_days: int = TRAINING_SPLIT.test,
    delay_days: int = TRAINING_SPLIT.delay,
    train_days: int | None = TRAINING_SPLIT.train,
) -> HoldoutSplit:
    """Hold out the latest days as a test set, after a delay window never trained on.

    Args:
        features: Labelled feature frame.
        test_days: Days in the test window.
        delay_days: Days between training and test.
        train_days: Days of training data before the delay window (the most recent ones); None for all.

    Returns:
        The split.

    Raises:
        ValueError: The data spans too few days.
    """
    start, days = training_span(
        features[schema.EVENT_TIME].min(), features[schema.EVENT_TIME].max(), train_days, delay_days, test_days
    )
    split = train_delay_test_split(features, start, days, delay_days, test_days)
    return HoldoutSplit(train=split.train, test=split.test)
