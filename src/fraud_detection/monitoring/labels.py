"""Delayed labels (chargebacks, confirmed fraud reports) and the realised quality of logged predictions.

Labels arrive days or weeks after a transaction. A label file holds ``transaction_id``, ``is_fraud`` and
``reported_at``; ingested files are stored under ``labels/`` in the store. Realised quality joins them to the payload
log per model version and per label-maturity window: only predictions at least that old are counted, and within a
mature window a prediction without a label counts as legitimate (chargebacks are reported for fraud; silence after
the maturity period means none came). The share still unlabelled is reported beside it. Before any label arrives,
precision is estimated from the calibrated scores: the expected number of frauds among the alerts, divided by the
number of alerts.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from fraud_detection.data import schema
from fraud_detection.data.schema import SchemaError
from fraud_detection.store.base import ArtifactStore

LOG = logging.getLogger(__name__)
LABEL_COLUMNS: tuple[str, ...] = (schema.TRANSACTION_ID, schema.LABEL, "reported_at")
LABELS_PREFIX = "labels/"
DEFAULT_MATURITIES_DAYS: tuple[int, ...] = (7, 14, 30)
#: How many example ids a message about unknown or conflicting ids shows.
EXAMPLES = 5


class ConflictingLabelsError(SchemaError):
    """One label file gives one transaction id both labels (0 and 1); nothing is ingested."""


def validate_labels(df: pd.DataFrame, *, allow_conflicts: bool = False, source: str = "label file") -> pd.DataFrame:
    """Check and normalise a label frame.

    Args:
        df: Frame with ``transaction_id``, ``is_fraud`` (0/1) and ``reported_at`` (time).
        allow_conflicts: Keep the latest report of an id given both labels instead of refusing (stored objects).
        source: What the frame came from, as error messages name it (e.g. ``label file labels.csv``).

    Rows repeating an id with the same label collapse to one (the latest ``reported_at``); an id given both labels
    in one file is refused (:class:`ConflictingLabelsError`). Across files, the latest report wins (a correction).

    Returns:
        The normalised frame: ids as strings, labels as int8, ``reported_at`` as UTC, one row per id.

    Raises:
        SchemaError: A column is missing or holds bad values; the message names it.
        ConflictingLabelsError: An id has both labels in this frame; the message counts them and shows examples.
    """
    missing = [c for c in LABEL_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"{source}: missing column(s): {', '.join(missing)}")
    out = df.loc[:, list(LABEL_COLUMNS)].copy()
    if out[schema.TRANSACTION_ID].isna().any():
        raise SchemaError(f"{source}: column {schema.TRANSACTION_ID!r} has null ids")
    out[schema.TRANSACTION_ID] = out[schema.TRANSACTION_ID].astype(str)
    label = pd.to_numeric(out[schema.LABEL], errors="coerce")
    if not label.isin([0, 1]).all():
        raise SchemaError(f"{source}: column {schema.LABEL!r} must be 0 or 1")
    out[schema.LABEL] = label.astype("int8")
    reported = pd.to_datetime(out["reported_at"], utc=True, errors="coerce", format="mixed")
    if reported.isna().any():
        bad = out.loc[reported.isna(), "reported_at"].iloc[0]
        raise SchemaError(f"{source}: column 'reported_at' has an unparseable time, e.g. {bad!r}")
    out["reported_at"] = reported
    ids = out[schema.TRANSACTION_ID]
    labels_per_id = out.groupby(schema.TRANSACTION_ID)[schema.LABEL].nunique()
    conflicting = labels_per_id[labels_per_id > 1].index.tolist()
    if conflicting and not allow_conflicts:
        raise ConflictingLabelsError(
            f"{source}: {len(conflicting)} transaction id(s) labelled both 0 and 1, e.g. "
            f"{', '.join(map(repr, conflicting[:EXAMPLES]))}: fix the file (one label per id) and ingest it again"
        )
    if ids.duplicated().any():
        LOG.info("%s: %d repeated id(s) collapsed, the latest report kept", source, int(ids.duplicated().sum()))
        out = out.sort_values("reported_at", kind="stable").drop_duplicates(schema.TRANSACTION_ID, keep="last")
        out = out.reset_index(drop=True)
    return out


def unknown_ids(labels: pd.DataFrame, known_keys: set[str], identifier_key: bytes | None = None) -> list[str]:
    """Label ids that match no logged prediction (their hash is not among the payload log's transaction keys).

    Args:
        labels: Validated labels.
        known_keys: ``transaction_key`` values of the payload log.
        identifier_key: The HMAC key the payload log hashed transaction ids with.

    Returns:
        The unknown ids, in file order.
    """
    from fraud_detection.monitoring.payload_columns import hash_identifier

    ids = labels[schema.TRANSACTION_ID].astype(str)
    return [i for i in ids if hash_identifier(i, identifier_key) not in known_keys]


def label_changes(stored: pd.DataFrame, new: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Ids of a new batch whose label differs from the stored one, split by which report wins.

    Across label objects the report with the latest ``reported_at`` wins (:func:`load_labels`; on a tie, the object
    ingested later). A differing label in a new batch is therefore a correction when its report is at least as
    recent as the stored one, and has no effect when the stored report is later.

    Args:
        stored: Labels already in the store (:func:`load_labels`).
        new: The validated batch about to be ingested.

    Returns:
        (ids whose label the batch corrects, ids whose differing label is overridden by a later stored report),
        each in the batch's order.
    """
    if stored.empty or new.empty:
        return [], []
    key = schema.TRANSACTION_ID
    both = new.assign(**{key: new[key].astype(str)}).merge(
        stored.assign(**{key: stored[key].astype(str)}), on=key, how="inner", suffixes=("", "_stored")
    )  # in the batch's order; stored labels are one row per id
    differs = both[schema.LABEL] != both[f"{schema.LABEL}_stored"]
    newer = both["reported_at"] >= both["reported_at_stored"]
    return both.loc[differs & newer, key].tolist(), both.loc[differs & ~newer, key].tolist()


def read_label_file(path: Path) -> pd.DataFrame:
    """Read and validate a CSV or Parquet label file.

    Args:
        path: The file.

    Returns:
        The validated labels.

    Raises:
        SchemaError: Unreadable file or bad content.
    """
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"label file {path}: no such file")
    if path.suffix == ".parquet":
        df = schema.read_parquet_bytes(path.read_bytes(), f"label file {path}")
    else:
        try:
            df = pd.read_csv(path)
        except Exception as exc:
            raise SchemaError(f"label file {path}: cannot be read: {' '.join(str(exc).split())[:300]}") from exc
    if df.empty:
        raise SchemaError(f"label file {path}: no rows")
    return validate_labels(df, source=f"label file {path}")


def ingest_labels(store: ArtifactStore, labels: pd.DataFrame) -> str:
    """Store a validated label batch as one Parquet object.

    Args:
        store: The artifact store.
        labels: Validated labels.

    Returns:
        The object key written.
    """
    buf = io.BytesIO()
    labels.to_parquet(buf, index=False)
    key = f"{LABELS_PREFIX}{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}.parquet"
    store.write_bytes(key, buf.getvalue())
    LOG.info("ingested %d labels (%d fraud) into %s", len(labels), int(labels[schema.LABEL].sum()), store.uri(key))
    return key


def load_labels(store: ArtifactStore, *, on_skip: Callable[[str, str], None] | None = None) -> pd.DataFrame:
    """All ingested labels, the latest report per transaction winning.

    An object that cannot be read or fails validation is skipped: ``on_skip(key, reason)`` is called (default: a
    warning naming the key), and the other objects are used.

    Args:
        store: The artifact store.
        on_skip: Called with the key and a one-line reason for each skipped object.

    Returns:
        Labels (possibly empty).
    """
    frames = []
    for key in store.list(LABELS_PREFIX):
        if not key.endswith(".parquet"):
            continue
        try:
            frames.append(validate_labels(schema.read_parquet_bytes(store.read_bytes(key), key), allow_conflicts=True))
        except (SchemaError, OSError, KeyError) as exc:
            reason = " ".join(str(exc).split())[:300]
            if on_skip is None:
                LOG.warning("skipped label object %s: %s", key, reason)
            else:
                on_skip(key, reason)
    if not frames:
        return pd.DataFrame(
            {c: pd.Series(dtype=t) for c, t in zip(LABEL_COLUMNS, ("str", "int8", "datetime64[ns, UTC]"), strict=True)}
        )
    labels = pd.concat(frames, ignore_index=True).sort_values("reported_at", kind="stable")
    return labels.drop_duplicates(schema.TRANSACTION_ID, keep="last").reset_index(drop=True)


@dataclass(frozen=True)
class QualityRow:
    """Realised quality of one model version over one label-maturity window.

    Attributes:
        model_version: The version that made the predictions.
        maturity: ``7d``, ``14d``, ``30d`` (predictions at least that old) or ``all``.
        n_predictions: Predictions counted.
        n_labelled: Of those, predictions with a label.
        n_fraud: Labelled fraud.
        average_precision: AP of the scores against the labels (NaN without fraud).
        precision: Precision of the alerts.
        recall: Recall of the alerts.
        unlabelled_ratio: Share of counted predictions without a label.
    """

    model_version: str
    maturity: str
    n_predictions: int
    n_labelled: int
    n_fraud: int
    average_precision: float
    precision: float
    recall: float
    unlabelled_ratio: float

    def as_dict(self) -> dict[str, object]:
        """Plain dict."""
        return asdict(self)


def realised_quality(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    now: datetime,
    *,
    maturities_days: Sequence[int] = DEFAULT_MATURITIES_DAYS,
    identifier_key: bytes | None = None,
) -> list[QualityRow]:
    """Join labels to logged predictions and measure realised quality per version and maturity.

    The payload log holds ``transaction_key``, the sha256 of the transaction id the client sent (raw ids are not
    logged by default); labels are joined by hashing their ``transaction_id`` the same way.

    Args:
        predictions: Payload-log rows with ``transaction_key``, ``model_version``, ``fraud_score``, ``decision``
            and ``scored_at``.
        labels: Labels from :func:`load_labels`.
        now: The evaluation time.
        maturities_days: Maturity windows in days; ``all`` is always added.
        identifier_key: The HMAC key the payload log hashed transaction ids with.

    Returns:
        One row per (version, maturity) with at least one prediction.
    """
    from fraud_detection.monitoring.payload_columns import DECISION_COLUMN, TRANSACTION_KEY, hash_identifier

    if predictions.empty:
        return []
    keyed = labels.assign(
        _key=labels[schema.TRANSACTION_ID].astype(str).map(lambda v: hash_identifier(v, identifier_key))
    )
    joined = predictions.assign(_key=predictions[TRANSACTION_KEY]).merge(
        keyed[["_key", schema.LABEL]].rename(columns={schema.LABEL: "_label"}), on="_key", how="left"
    )
    age = pd.Timestamp(now) - pd.to_datetime(joined["scored_at"], utc=True)
    rows = []
    windows = [(f"{d}d", age >= pd.Timedelta(days=d)) for d in maturities_days] + [("all", age >= pd.Timedelta(0))]
    for version, group_idx in joined.groupby("model_version").groups.items():
        group = joined.loc[group_idx]
        for name, mask in windows:
            part = group[mask.loc[group_idx]]
            if part.empty:
                continue
            labelled = part["_label"].notna()
            y = part["_label"].fillna(0).astype(int).to_numpy()
            alert = part[DECISION_COLUMN].astype(bool).to_numpy()
            tp = int((alert & (y == 1)).sum())
            rows.append(
                QualityRow(
                    model_version=str(version),
                    maturity=name,
                    n_predictions=len(part),
                    n_labelled=int(labelled.sum()),
                    n_fraud=int(y.sum()),
                    average_precision=float(average_precision_score(y, part["fraud_score"]))
                    if y.any()
                    else float("nan"),
                    precision=tp / int(alert.sum()) if alert.any() else float("nan"),
                    recall=tp / int(y.sum()) if y.any() else float("nan"),
                    unlabelled_ratio=float(1 - labelled.mean()),
                )
            )
    return rows


def estimated_precision(predictions: pd.DataFrame) -> dict[str, float]:
    """Precision of the alerts estimated from calibrated scores, per model version (an estimate, not a measurement).

    Args:
        predictions: Payload-log rows with ``model_version``, ``fraud_score`` and ``decision``.

    Returns:
        Version to expected share of fraud among its alerts (NaN without alerts).
    """
    from fraud_detection.monitoring.payload_columns import DECISION_COLUMN

    out: dict[str, float] = {}
    for version, group in predictions.groupby("model_version"):
        alerts = group[group[DECISION_COLUMN].astype(bool)]
        out[str(version)] = float(np.mean(alerts["fraud_score"])) if len(alerts) else float("nan")
    return out
