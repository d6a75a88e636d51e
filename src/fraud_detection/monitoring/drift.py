"""Data and prediction drift with Evidently (the only module importing evidently).

Compares a window of logged predictions with the bundle's reference sample: per-feature drift (Evidently picks
the test per column and size: a p-value test such as Kolmogorov-Smirnov on small samples, a distance such as
normed Wasserstein on large ones), the share of drifted features, dataset drift (that share at or above
``drift_share``), and drift of the fraud-score distribution.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fraud_detection.data import schema
from fraud_detection.model.bundle import SCORE_COLUMN
from fraud_detection.store.files import atomic_file

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column.

    Attributes:
        column: Column name.
        score: The statistic Evidently computed (a p-value or a distance, see ``method``).
        drifted: Whether the column drifted.
        method: The test or distance used.
        threshold: Its threshold (a p-value below it, or a distance at or above it, means drift).
    """

    column: str
    score: float
    drifted: bool
    method: str
    threshold: float


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one drift comparison.

    Attributes:
        n_reference: Reference rows.
        n_current: Current-window rows (before sampling).
        too_small: The window had fewer than the minimum rows; nothing else is judged.
        features: Per-feature drift.
        drifted_share: Share of drifted features.
        dataset_drifted: ``drifted_share >= drift_share``.
        prediction: Drift of the score distribution (None when the window has no scores).
        min_rows: The minimum window size used.
    """

    n_reference: int
    n_current: int
    too_small: bool
    features: list[ColumnDrift] = field(default_factory=list)
    drifted_share: float = 0.0
    dataset_drifted: bool = False
    prediction: ColumnDrift | None = None
    min_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "too_small": self.too_small,
            "drifted_share": self.drifted_share,
            "dataset_drifted": self.dataset_drifted,
            "drifted_features": [f.column for f in self.features if f.drifted],
            "features": {f.column: {"score": f.score, "drifted": f.drifted, "method": f.method} for f in self.features},
            "prediction": None
            if self.prediction is None
            else {"score": self.prediction.score, "drifted": self.prediction.drifted, "method": self.prediction.method},
        }


def _column_drift(column: str, config: dict[str, Any], value: float) -> ColumnDrift:
    method = str(config.get("method", ""))
    threshold = float(config.get("threshold", 0.05))
    # p-value tests drift when the p-value is small; distances drift when they are large.
    drifted = value < threshold if "p_value" in method else value >= threshold
    return ColumnDrift(column, float(value), bool(drifted), method, threshold)


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    features: Sequence[str] = schema.FEATURES,
    score_column: str = SCORE_COLUMN,
    min_rows: int = 200,
    drift_share: float = 0.3,
    max_rows: int | None = 200_000,
    seed: int = 0,
    report_path: Path | None = None,
) -> DriftResult:
    """Compare a current window with the reference sample.

    Args:
        reference: Reference features (and scores), e.g. the bundle's reference sample.
        current: Current window of logged features (and scores).
        features: Feature columns to compare.
        score_column: Score column for prediction drift (skipped when absent from either frame).
        min_rows: A window smaller than this is reported as too small, not judged.
        drift_share: Share of drifted features that makes the dataset drifted.
        max_rows: Sample the window down to this many rows (drift tests do not need more); None to keep all.
        seed: Sampling seed.
        report_path: Write Evidently's HTML report here when given (atomically).

    Returns:
        The drift result.

    Raises:
        ValueError: A feature column is missing from either frame.
    """
    for name, frame in (("reference", reference), ("current window", current)):
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks feature column(s): {', '.join(missing)}")
    if len(current) < min_rows:
        LOG.warning("window has %d rows, fewer than the minimum %d: drift not judged", len(current), min_rows)
        return DriftResult(len(reference), len(current), True, min_rows=min_rows)
    from evidently import Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    cols = list(features)
    with_score = score_column in reference.columns and score_column in current.columns
    if with_score:
        cols.append(score_column)
    cur = current[cols]
    if max_rows is not None and len(cur) > max_rows:
        cur = cur.sample(n=max_rows, random_state=seed)
    metrics: list[Any] = [DriftedColumnsCount(columns=list(features), drift_share=drift_share)]
    metrics += [ValueDrift(column=c) for c in features]
    if with_score:
        metrics.append(ValueDrift(column=score_column))
    snapshot = Report(metrics).run(cur.reset_index(drop=True), reference[cols].reset_index(drop=True))
    per_column: dict[str, ColumnDrift] = {}
    share = 0.0
    for item in snapshot.dict()["metrics"]:
        config = item["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            share = float(item["value"]["share"])
        elif config["type"].endswith("ValueDrift"):
            value = float(item["value"])
            per_column[config["column"]] = _column_drift(config["column"], config, value if math.isfinite(value) else 0)
    feature_drift = [per_column[f] for f in features]
    result = DriftResult(
        n_reference=len(reference),
        n_current=len(current),
        too_small=False,
        features=feature_drift,
        drifted_share=share,
        dataset_drifted=share >= drift_share,
        prediction=per_column.get(score_column) if with_score else None,
        min_rows=min_rows,
    )
    if report_path is not None:
        with atomic_file(report_path) as tmp:
            snapshot.save_html(str(tmp))
    LOG.info(
        "drift: %d/%d features drifted (share %.2f), dataset drift %s, score drift %s",
        sum(f.drifted for f in feature_drift),
        len(feature_drift),
        share,
        result.dataset_drifted,
        None if result.prediction is None else result.prediction.drifted,
    )
    return result
