"""Prometheus metric definitions (names and labels are the contract in docs/METRICS.md).

Every metric is created on a registry passed in, never on import: the model server passes the process-wide
``prometheus_client.REGISTRY`` (what ``/metrics`` exposes), tests pass a fresh ``CollectorRegistry``.

Sections:

* Model server (``fraud_serving_*``): :class:`ServingMetrics`, scraped from ``/metrics``.
* Drift job (``fraud_drift_*``, ``fraud_quality_*``): pushed to the Pushgateway; add them below the serving section
  as a ``DriftMetrics`` class built the same way (a dataclass of metrics plus a ``create(registry)`` constructor).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from fraud_detection.monitoring.drift_job import DriftJobResult

# --------------------------------------------------------------------------------------------------------------
# Shared label names and values
# --------------------------------------------------------------------------------------------------------------

MODEL_LABELS: tuple[str, str] = ("model_name", "model_version")
#: Values of the ``protocol`` label.
PROTOCOLS: tuple[str, ...] = ("v2_rest", "v2_grpc", "v1_rest")
#: Values of the ``kind`` label of ``fraud_serving_errors_total``.
ERROR_KINDS: tuple[str, ...] = ("validation", "not_found", "unavailable", "internal")
#: Values of the ``decision`` label.
DECISIONS: tuple[str, str] = ("fraud", "legit")

# --------------------------------------------------------------------------------------------------------------
# Model server
# --------------------------------------------------------------------------------------------------------------

#: Request latency buckets (seconds): sub-millisecond resolution for single rows, up to the 2 s alert threshold.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
)
#: Score buckets (calibrated probability), 0.001 .. 1 as the contract says.
SCORE_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


@dataclass(frozen=True)
class ServingMetrics:
    """The model server's metrics (docs/METRICS.md, "Model server").

    Create once per process with :meth:`create`, then :meth:`bind` to the loaded model for cheap hot-path updates.
    """

    requests: Counter
    duration: Histogram
    errors: Counter
    predictions: Counter
    score: Histogram
    model_info: Gauge
    payload_log_dropped: Counter
    online_store_failures: Counter
    degraded_rows: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ServingMetrics:
        """Register the serving metrics on a registry.

        Args:
            registry: Where to register (``prometheus_client.REGISTRY`` in the server).

        Returns:
            The metrics.
        """
        return cls(
            requests=Counter(
                "fraud_serving_requests_total",
                "Scoring requests received.",
                [*MODEL_LABELS, "protocol"],
                registry=registry,
            ),
            duration=Histogram(
                "fraud_serving_request_duration_seconds",
                "End-to-end scoring latency inside the server.",
                [*MODEL_LABELS, "protocol"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            errors=Counter(
                "fraud_serving_errors_total",
                "Failed scoring requests by kind: validation (400), not_found (404), unavailable (503), "
                "internal (500).",
                [*MODEL_LABELS, "protocol", "kind"],
                registry=registry,
            ),
            predictions=Counter(
                "fraud_serving_predictions_total",
                "Scored rows by decision.",
                [*MODEL_LABELS, "decision"],
                registry=registry,
            ),
            score=Histogram(
                "fraud_serving_score_ratio",
                "Calibrated fraud score per scored row.",
                list(MODEL_LABELS),
                buckets=SCORE_BUCKETS,
                registry=registry,
            ),
            model_info=Gauge(
                "fraud_serving_model_info",
                "The loaded bundle (always 1).",
                [*MODEL_LABELS, "threshold"],
                registry=registry,
            ),
            payload_log_dropped=Counter(
                "fraud_serving_payload_log_dropped_total",
                "Payload-log rows dropped because the buffer was full or the store failed.",
                list(MODEL_LABELS),
                registry=registry,
            ),
            online_store_failures=Counter(
                "fraud_serving_online_store_failures_total",
                "Raw-transaction requests the online feature store could not serve (unreachable, slow or failing).",
                list(MODEL_LABELS),
                registry=registry,
            ),
            degraded_rows=Counter(
                "fraud_serving_degraded_rows_total",
                "Rows scored in degraded mode: features without history because the online store was unavailable.",
                list(MODEL_LABELS),
                registry=registry,
            ),
        )

    def bind(self, model_name: str, model_version: str, threshold: float) -> BoundServingMetrics:
        """Label children for one loaded model, created up front so that the hot path does no label lookups.

        Also sets ``fraud_serving_model_info`` and initialises every series to 0 so that rates exist from the
        first scrape.

        Args:
            model_name: Served model name.
            model_version: Bundle version.
            threshold: Bundle threshold.

        Returns:
            The bound metrics.
        """
        self.model_info.labels(model_name, model_version, f"{threshold:g}").set(1)
        return BoundServingMetrics(
            requests={p: self.requests.labels(model_name, model_version, p) for p in PROTOCOLS},
            duration={p: self.duration.labels(model_name, model_version, p) for p in PROTOCOLS},
            errors={
                (p, k): self.errors.labels(model_name, model_version, p, k) for p in PROTOCOLS for k in ERROR_KINDS
            },
            predictions={d: self.predictions.labels(model_name, model_version, d) for d in DECISIONS},
            score=self.score.labels(model_name, model_version),
            payload_log_dropped=self.payload_log_dropped.labels(model_name, model_version),
            online_store_failures=self.online_store_failures.labels(model_name, model_version),
            degraded_rows=self.degraded_rows.labels(model_name, model_version),
        )


@dataclass(frozen=True)
class BoundServingMetrics:
    """Serving metrics bound to one model name and version (see :meth:`ServingMetrics.bind`)."""

    requests: dict[str, Counter]
    duration: dict[str, Histogram]
    errors: dict[tuple[str, str], Counter]
    predictions: dict[str, Counter]
    score: Histogram
    payload_log_dropped: Counter
    online_store_failures: Counter
    degraded_rows: Counter

    def online_store_failure(self, degraded_rows: int = 0) -> None:
        """Count a request the online store could not serve (and its rows scored degraded, if any).

        Args:
            degraded_rows: Rows scored without history instead of failing.
        """
        self.online_store_failures.inc()
        if degraded_rows:
            self.degraded_rows.inc(degraded_rows)

    def request(self, protocol: str, seconds: float, error_kind: str | None = None) -> None:
        """Record one request: count, latency and (if it failed) its error kind.

        Args:
            protocol: ``v2_rest``, ``v2_grpc`` or ``v1_rest``.
            seconds: Latency.
            error_kind: ``validation``, ``not_found``, ``unavailable``, ``internal`` or None on success.
        """
        self.requests[protocol].inc()
        self.duration[protocol].observe(seconds)
        if error_kind is not None:
            self.errors[(protocol, error_kind)].inc()

    def scored(self, scores: Sequence[float] | np.ndarray, decisions: Sequence[bool] | np.ndarray) -> None:
        """Record scored rows: the score histogram (in one go, see :func:`observe_many`) and predictions by decision.

        Args:
            scores: Calibrated scores.
            decisions: True for fraud, one per score.

        Raises:
            ValueError: Not one decision per score (nothing is recorded then).
        """
        values = np.asarray(scores, dtype=np.float64).reshape(-1)
        flags = np.asarray(decisions, dtype=bool).reshape(-1)
        if values.size != flags.size:
            relation = "shorter" if flags.size < values.size else "longer"
            raise ValueError(f"{flags.size} decisions for {values.size} scores: the decisions are {relation}")
        observe_many(self.score, values)
        fraud = int(np.count_nonzero(flags))
        if fraud:
            self.predictions["fraud"].inc(fraud)
        if values.size - fraud:
            self.predictions["legit"].inc(values.size - fraud)


def observe_many(histogram: Histogram, values: Sequence[float] | np.ndarray) -> None:
    """Observe many values in one go: one increment per bucket hit and one of the sum, not a call per value.

    Buckets and count equal those of ``histogram.observe`` on each value (a value exactly on a bound counts in that
    bound's bucket, +Inf in the last one, NaN in none); the sum equals theirs up to the rounding of the addition
    order. prometheus_client (0.26) has no batch API, so this uses its private ``_upper_bounds``, ``_buckets`` and
    ``_sum`` (tests/unit/monitoring/test_telemetry.py compares the exposition with ``observe``'s), and falls back to
    ``observe`` per value on a version without them.

    Args:
        histogram: An observable histogram (unlabelled, or a child with its labels bound).
        values: The values.
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(buckets) != len(bounds):
        for value in arr.tolist():
            histogram.observe(value)
        return
    if arr.size == 0:
        return
    # side="left": the first bound >= value, as observe's `value <= bound`; NaN sorts past the last bound (no bucket)
    index = np.searchsorted(np.asarray(bounds, dtype=np.float64), arr, side="left")
    counts = np.bincount(index, minlength=len(bounds) + 1)[: len(bounds)]
    total.inc(float(arr.sum()))
    for bucket, count in zip(buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)


# --------------------------------------------------------------------------------------------------------------
# Drift job (Pushgateway): add DriftMetrics here, following ServingMetrics (docs/METRICS.md, "Drift job").
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# Drift job (pushed to the Pushgateway)
# --------------------------------------------------------------------------------------------------------------

DRIFT_JOB = "fraud-drift"
#: Values of the ``kind`` label of ``fraud_drift_skipped_objects_total`` (``SkippedObject.kind`` of the drift job).
SKIP_KINDS: tuple[str, ...] = ("payload_log", "labels", "model_version")


@dataclass(frozen=True)
class DriftMetrics:
    """The drift job's gauges (docs/METRICS.md, "Drift job"), on a dedicated registry pushed once per run."""

    feature_score: Gauge
    feature_drifted: Gauge
    drifted_features_ratio: Gauge
    dataset_drifted: Gauge
    prediction_score: Gauge
    prediction_drifted: Gauge
    window_rows: Gauge
    window_too_small: Gauge
    last_success: Gauge
    duration: Gauge
    average_precision: Gauge
    recall: Gauge
    precision: Gauge
    estimated_precision: Gauge
    unlabelled: Gauge
    skipped_objects: Counter
    dropped_rows: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> DriftMetrics:
        """Define every drift-job gauge on ``registry``.

        Args:
            registry: A fresh registry (pushed whole, so the Pushgateway group holds only this run's series).

        Returns:
            The metrics.
        """
        feature = (*MODEL_LABELS, "feature")
        quality = (*MODEL_LABELS, "maturity")

        def gauge(name: str, doc: str, labels: Iterable[str] = MODEL_LABELS) -> Gauge:
            return Gauge(name, doc, list(labels), registry=registry)

        return cls(
            feature_score=gauge("fraud_drift_feature_score", "Evidently drift statistic of one feature", feature),
            feature_drifted=gauge("fraud_drift_feature_drifted", "1 when the feature drifted", feature),
            drifted_features_ratio=gauge("fraud_drift_drifted_features_ratio", "Share of drifted features"),
            dataset_drifted=gauge("fraud_drift_dataset_drifted", "1 when the dataset drifted"),
            prediction_score=gauge("fraud_drift_prediction_score", "Drift statistic of the fraud-score distribution"),
            prediction_drifted=gauge("fraud_drift_prediction_drifted", "1 when the score distribution drifted"),
            window_rows=gauge("fraud_drift_window_rows", "Logged predictions in the analysed window"),
            window_too_small=gauge("fraud_drift_window_too_small", "1 when the window was too small to judge"),
            last_success=gauge(
                "fraud_drift_last_success_timestamp_seconds", "Time of the last successful run", ("model_name",)
            ),
            duration=gauge("fraud_drift_duration_seconds", "Wall time of the last run", ("model_name",)),
            average_precision=gauge(
                "fraud_quality_average_precision_ratio", "Realised average precision on labelled predictions", quality
            ),
            recall=gauge("fraud_quality_recall_ratio", "Realised recall at the threshold", quality),
            precision=gauge("fraud_quality_precision_ratio", "Realised precision at the threshold", quality),
            estimated_precision=gauge(
                "fraud_quality_estimated_precision_ratio", "Precision estimated from calibrated scores (an estimate)"
            ),
            unlabelled=gauge("fraud_quality_unlabelled_ratio", "Share of logged predictions without a label yet"),
            skipped_objects=Counter(
                "fraud_drift_skipped_objects",
                "Objects the last run skipped because they could not be read or used (kind: payload_log, labels, "
                "model_version)",
                ["model_name", "kind"],
                registry=registry,
            ),
            dropped_rows=Counter(
                "fraud_drift_dropped_rows",
                "Payload-log rows the last run dropped for a non-finite or out-of-range feature or score",
                ["model_name"],
                registry=registry,
            ),
        )


def drift_registry(result: DriftJobResult, now: float | None = None) -> CollectorRegistry:
    """A registry holding the gauges of one successful drift-job run.

    Args:
        result: The run's result.
        now: Last-success time (default: the current time).

    Returns:
        The filled registry.
    """
    import math
    import time

    registry = CollectorRegistry()
    m = DriftMetrics.create(registry)
    name = result.model_name
    for report in result.versions:
        labels = (name, report.model_version)
        drift = report.drift
        m.window_rows.labels(*labels).set(drift.n_current)
        m.window_too_small.labels(*labels).set(1 if drift.too_small else 0)
        m.dataset_drifted.labels(*labels).set(1 if drift.dataset_drifted else 0)
        m.drifted_features_ratio.labels(*labels).set(drift.drifted_share)
        m.prediction_drifted.labels(*labels).set(1 if drift.prediction and drift.prediction.drifted else 0)
        if drift.prediction is not None:
            m.prediction_score.labels(*labels).set(drift.prediction.score)
        for feature in drift.features:
            m.feature_score.labels(*labels, feature.column).set(feature.score)
            m.feature_drifted.labels(*labels, feature.column).set(1 if feature.drifted else 0)
        if not math.isnan(report.estimated_precision):
            m.estimated_precision.labels(*labels).set(report.estimated_precision)
        for row in report.quality:
            for gauge, value in (
                (m.average_precision, row.average_precision),
                (m.recall, row.recall),
                (m.precision, row.precision),
            ):
                if not math.isnan(value):
                    gauge.labels(*labels, row.maturity).set(value)
            if row.maturity == "all":
                m.unlabelled.labels(*labels).set(row.unlabelled_ratio)
    for kind in SKIP_KINDS:  # every kind present (0 too), so that alerts can use the series
        m.skipped_objects.labels(name, kind).inc(sum(1 for o in result.skipped if o.kind == kind))
    m.dropped_rows.labels(name).inc(result.dropped_rows)
    m.duration.labels(name).set(result.duration_seconds)
    m.last_success.labels(name).set(time.time() if now is None else now)
    return registry


def push_drift_result(gateway_url: str, result: DriftJobResult) -> None:
    """Push one run's gauges, replacing the model's whole group (old versions' series disappear).

    Args:
        gateway_url: Pushgateway base URL.
        result: The successful run's result.

    Raises:
        OSError: The Pushgateway cannot be reached or refused the push (the message names its URL).
    """
    from prometheus_client import push_to_gateway

    try:
        push_to_gateway(
            gateway_url, job=DRIFT_JOB, grouping_key={"model_name": result.model_name}, registry=drift_registry(result)
        )
    except OSError as exc:
        raise OSError(f"cannot push the drift gauges to the Pushgateway at {gateway_url}: {exc}") from exc
