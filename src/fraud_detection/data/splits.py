"""Time-ordered splits: train window, a delay window never trained on, test window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraud_detection.data import schema


@dataclass(frozen=True)
class SplitDays:
    """Lengths of a train/delay/test split, in days.

    Attributes:
        train: Days of the training window.
        delay: Days of the delay window (the label delay), never trained on.
        test: Days of the test window.
    """

    train: int
    delay: int
    test: int


#: The training step's defaults (``fraud train``, the pipeline): the last 14 days held out after a 7-day label delay,
#: the 28 days before them trained on.
TRAINING_SPLIT = SplitDays(train=28, delay=7, test=14)
#: Each fold of the prequential backtest (``fraud backtest``): a week each of training, delay and test.
BACKTEST_SPLIT = SplitDays(train=7, delay=7, test=7)


@dataclass(frozen=True)
class TimeSplit:
    """A time-ordered split of a feature frame.

    Attributes:
        train: Rows of the training window.
        test: Rows of the test window, without cards known compromised before each test day.
        train_start: First day of training.
        test_start: First day of the test window (after the delay window).
    """

    train: pd.DataFrame
    test: pd.DataFrame
    train_start: pd.Timestamp
    test_start: pd.Timestamp


def train_delay_test_split(
    frame: pd.DataFrame,
    start: pd.Timestamp,
    train_days: int = BACKTEST_SPLIT.train,
    delay_days: int = BACKTEST_SPLIT.delay,
    test_days: int = BACKTEST_SPLIT.test,
) -> TimeSplit:
    """Split into a training window, a delay window never trained on, and a test window (handbook protocol).

    Cards with a known fraud (in the training window, or in the delay period before each test day) are removed from
    that test day, since they would already be blocked in production.

    Args:
        frame: Feature frame with ``event_time``, ``customer_id`` and ``is_fraud``.
        start: First day of training (UTC midnight).
        train_days: Length of the training window.
        delay_days: Length of the delay window.
        test_days: Length of the test window.

    Returns:
        The split.
    """
    start = _utc_day(start)
    day_index = ((frame[schema.EVENT_TIME] - start).dt.total_seconds() // 86_400).astype(np.int64).to_numpy()
    train = frame[(day_index >= 0) & (day_index < train_days)]
    known = set(train.loc[train[schema.LABEL] == 1, schema.CUSTOMER_ID])
    parts = []
    for offset in range(test_days):
        # Fraud discovered in the delay period up to the day before this test day is known by then.
        delay_day = frame[day_index == train_days + offset - 1]
        known |= set(delay_day.loc[delay_day[schema.LABEL] == 1, schema.CUSTOMER_ID])
        today = frame[day_index == train_days + delay_days + offset]
        parts.append(today[~today[schema.CUSTOMER_ID].isin(known)])
    test = pd.concat(parts) if parts else frame.iloc[0:0]
    return TimeSplit(
        train=train,
        test=test,
        train_start=start,
        test_start=start + pd.Timedelta(days=train_days + delay_days),
    )


def _utc_day(value: pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("D")
