"""Reading the payload log back: a window of rows, skipping (and naming) objects that are not payload-log Parquet."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pandas as pd

from fraud_detection.data import schema
from fraud_detection.model.bundle import SCORE_COLUMN
from fraud_detection.monitoring.payload_columns import (
    BASE_COLUMNS,
    DECISION_COLUMN,
    EVENT_TIME_COLUMN,
    PAYLOAD_PREFIX,
    REQUIRED_COLUMNS,
    SKIPPED_ATTR,
)
from fraud_detection.store.base import ArtifactStore

LOG = logging.getLogger(__name__)


def _utc(value: datetime | date) -> datetime:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _read_object(data: bytes) -> pd.DataFrame:
    """One payload-log object as a frame with a UTC ``scored_at``.

    Raises:
        ValueError: The object is empty, not Parquet, or lacks :data:`REQUIRED_COLUMNS`.
    """
    if not data:
        raise ValueError("empty object")
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:
        raise ValueError(f"not Parquet ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"not payload-log columns (missing {', '.join(missing[:5])}{'...' if len(missing) > 5 else ''})"
        )
    try:
        frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
    except Exception as exc:
        raise ValueError(f"unreadable scored_at ({exc})") from exc
    return frame


def read_payload_log(
    store: ArtifactStore,
    model_name: str,
    start: datetime | date,
    end: datetime | date,
    *,
    on_skip: Callable[[str, str], None] | None = None,
) -> pd.DataFrame:
    """Payload-log rows of a model scored in ``[start, end)`` (the drift job's input).

    An object that is empty, not Parquet or lacks :data:`REQUIRED_COLUMNS` is skipped, not fatal: a warning names
    it, ``on_skip`` is called with its key and the reason, and its key is listed in the result's
    ``attrs[SKIPPED_ATTR]`` (``"skipped_keys"``). A store that cannot be read still raises.

    Args:
        store: The artifact store.
        model_name: Served model name.
        start: Window start (naive values are UTC; a date means its midnight).
        end: Window end, exclusive.
        on_skip: Called with (key, reason) for each skipped object.

    Returns:
        The rows sorted by ``scored_at``, with at least :data:`BASE_COLUMNS` (empty when nothing was logged).
    """
    lo, hi = _utc(start), _utc(end)
    prefix = f"{PAYLOAD_PREFIX}/{model_name}/"
    frames = []
    skipped: list[str] = []
    first_day, last_day = lo.date(), (hi - timedelta(microseconds=1)).date()
    for key in store.list(prefix):
        part = key[len(prefix) :].split("/", 1)[0]
        if not part.startswith("date=") or not key.endswith(".parquet"):
            continue
        try:
            day = date.fromisoformat(part[len("date=") :])
        except ValueError:
            continue
        if not first_day <= day <= last_day:
            continue
        try:
            frames.append(_read_object(store.read_bytes(key)))
        except ValueError as exc:
            LOG.warning("payload log: skipping %s: %s", key, exc)
            skipped.append(key)
            if on_skip is not None:
                on_skip(key, str(exc))
    frames = [f for f in frames if len(f)]
    if not frames:
        empty = _empty_frame()
        empty.attrs[SKIPPED_ATTR] = skipped
        return empty
    frame = pd.concat(frames, ignore_index=True)
    scored_at = pd.to_datetime(frame["scored_at"], utc=True)
    frame["scored_at"] = scored_at
    frame = frame[(scored_at >= lo) & (scored_at < hi)]
    result = frame.sort_values(["scored_at", "request_id", "row"], kind="stable").reset_index(drop=True)
    result.attrs[SKIPPED_ATTR] = skipped
    return result


def _empty_frame() -> pd.DataFrame:
    data: dict[str, pd.Series] = {}
    for name in BASE_COLUMNS:
        if name in schema.FEATURES or name == SCORE_COLUMN:
            dtype = "float64"
        elif name == "row":
            dtype = "int32"
        elif name == DECISION_COLUMN:
            dtype = "bool"
        elif name in ("scored_at", EVENT_TIME_COLUMN):
            dtype = "datetime64[ns, UTC]"
        else:
            dtype = "object"
        data[name] = pd.Series([], dtype=dtype)
    return pd.DataFrame(data)
