"""Prometheus metrics of the model server and of the drift job (the contract is docs/METRICS.md).

Each test registers the metrics on a fresh registry. The Pushgateway is a real HTTP server on 127.0.0.1 that
records what it receives; the real Pushgateway is in tests/integration/test_monitoring_stack.py.
"""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fraud_detection.monitoring.drift import ColumnDrift, DriftResult
from fraud_detection.monitoring.drift_job import DriftJobResult, VersionReport
from fraud_detection.monitoring.labels import QualityRow
from fraud_detection.monitoring.telemetry import (
    DECISIONS,
    DRIFT_JOB,
    ERROR_KINDS,
    PROTOCOLS,
    SCORE_BUCKETS,
    DriftMetrics,
    ServingMetrics,
    drift_registry,
    observe_many,
    push_drift_result,
)

METRICS_DOC = Path(__file__).resolve().parents[3] / "docs" / "METRICS.md"
NAME = re.compile(r"^fraud_(?P<subsystem>serving|drift|quality)_[a-z0-9_]+$")
MODEL = "fraud-detector"


def _families(registry: CollectorRegistry) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exposed metric name -> (type, label names), read from the registry's collectors."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for collector in registry._collector_to_names:  # the label names are not in collect() output
        for family in collector.describe():
            name = family.name + ("_total" if family.type == "counter" else "")
            out[name] = (family.type, tuple(collector._labelnames))
    return out


def _documented() -> dict[str, tuple[str, ...]]:
    """Metric name -> label names, from the tables of docs/METRICS.md."""
    rows: dict[str, tuple[str, ...]] = {}
    for line in METRICS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(fraud_[a-z0-9_]+)`", cells[0]) if cells else None
        if match:
            label_cell = cells[2] if cells[1] in ("counter", "histogram", "gauge", "gauge (1)") else cells[1]
            rows[match.group(1)] = tuple(re.findall(r"`([a-z_]+)`", label_cell))
    return rows


def _serving() -> tuple[CollectorRegistry, ServingMetrics]:
    registry = CollectorRegistry()
    return registry, ServingMetrics.create(registry)


def _drift_metrics() -> CollectorRegistry:
    registry = CollectorRegistry()
    DriftMetrics.create(registry)
    return registry


# ---------------------------------------------------------------------------------------------------------------
# Names and labels
# ---------------------------------------------------------------------------------------------------------------


def test_serving_and_drift_metrics_are_exactly_the_documented_ones_with_their_labels():
    documented = _documented()
    assert len(documented) >= 20, "the METRICS.md tables were not found"
    families = {**_families(_serving()[0]), **_families(_drift_metrics())}
    assert {name: labels for name, (_, labels) in families.items()} == documented


@pytest.mark.parametrize("registry_of", [lambda: _serving()[0], _drift_metrics], ids=["serving", "drift"])
def test_metric_names_follow_fraud_subsystem_name_unit(registry_of):
    families = _families(registry_of())
    for name, (kind, _) in families.items():
        assert NAME.match(name), name
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "histogram":
            assert name.endswith(("_seconds", "_ratio")), name
        if "timestamp" in name or "duration" in name:
            assert name.endswith("_seconds"), name


def test_serving_metrics_are_in_the_serving_subsystem_and_drift_metrics_in_drift_or_quality():
    assert {NAME.match(n)["subsystem"] for n in _families(_serving()[0])} == {"serving"}
    assert {NAME.match(n)["subsystem"] for n in _families(_drift_metrics())} == {"drift", "quality"}


def test_every_serving_metric_is_labelled_with_model_name_and_version():
    for name, (_, labels) in _families(_serving()[0]).items():
        assert labels[:2] == ("model_name", "model_version"), name


def test_every_drift_metric_but_the_run_level_ones_is_labelled_with_model_version():
    run_level = {
        "fraud_drift_last_success_timestamp_seconds",
        "fraud_drift_duration_seconds",
        "fraud_drift_skipped_objects_total",
        "fraud_drift_dropped_rows_total",
    }
    counters = {"fraud_drift_skipped_objects_total", "fraud_drift_dropped_rows_total"}
    for name, (kind, labels) in _families(_drift_metrics()).items():
        assert kind == ("counter" if name in counters else "gauge"), name
        expected = ("model_name",) if name in run_level else ("model_name", "model_version")
        assert labels[: len(expected)] == expected, name


def test_serving_metrics_can_be_created_only_once_per_registry():
    registry, _ = _serving()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        ServingMetrics.create(registry)


# ---------------------------------------------------------------------------------------------------------------
# Model server
# ---------------------------------------------------------------------------------------------------------------


def test_bind_publishes_the_model_info_and_zeroes_every_series():
    registry, metrics = _serving()
    metrics.bind(MODEL, "v1", 0.4375)
    labels = {"model_name": MODEL, "model_version": "v1"}
    assert registry.get_sample_value("fraud_serving_model_info", {**labels, "threshold": "0.4375"}) == 1
    for protocol in PROTOCOLS:
        assert registry.get_sample_value("fraud_serving_requests_total", {**labels, "protocol": protocol}) == 0
        assert (
            registry.get_sample_value("fraud_serving_request_duration_seconds_count", {**labels, "protocol": protocol})
            == 0
        )
        for kind in ERROR_KINDS:
            series = {**labels, "protocol": protocol, "kind": kind}
            assert registry.get_sample_value("fraud_serving_errors_total", series) == 0
    for decision in DECISIONS:
        assert registry.get_sample_value("fraud_serving_predictions_total", {**labels, "decision": decision}) == 0
    assert registry.get_sample_value("fraud_serving_score_ratio_count", labels) == 0
    assert registry.get_sample_value("fraud_serving_payload_log_dropped_total", labels) == 0


def test_a_request_counts_and_times_and_only_a_failed_one_counts_an_error():
    registry, metrics = _serving()
    bound = metrics.bind(MODEL, "v1", 0.5)
    bound.request("v2_rest", 0.003)
    bound.request("v2_rest", 0.2, error_kind="validation")
    bound.request("v2_grpc", 0.0004)
    labels = {"model_name": MODEL, "model_version": "v1"}

    def value(name: str, **extra: str) -> float | None:
        return registry.get_sample_value(name, {**labels, **extra})

    assert value("fraud_serving_requests_total", protocol="v2_rest") == 2
    assert value("fraud_serving_requests_total", protocol="v2_grpc") == 1
    assert value("fraud_serving_requests_total", protocol="v1_rest") == 0
    assert value("fraud_serving_request_duration_seconds_sum", protocol="v2_rest") == pytest.approx(0.203)
    assert value("fraud_serving_request_duration_seconds_bucket", protocol="v2_rest", le="0.005") == 1
    assert value("fraud_serving_request_duration_seconds_bucket", protocol="v2_grpc", le="0.0005") == 1
    assert value("fraud_serving_errors_total", protocol="v2_rest", kind="validation") == 1
    assert value("fraud_serving_errors_total", protocol="v2_grpc", kind="validation") == 0
    assert value("fraud_serving_errors_total", protocol="v2_rest", kind="internal") == 0


def test_scored_rows_fill_the_score_histogram_and_the_decisions():
    registry, metrics = _serving()
    bound = metrics.bind(MODEL, "v1", 0.5)
    bound.scored([0.0008, 0.3, 0.95, 0.6], [False, False, True, True])
    labels = {"model_name": MODEL, "model_version": "v1"}
    assert registry.get_sample_value("fraud_serving_predictions_total", {**labels, "decision": "fraud"}) == 2
    assert registry.get_sample_value("fraud_serving_predictions_total", {**labels, "decision": "legit"}) == 2
    assert registry.get_sample_value("fraud_serving_score_ratio_count", labels) == 4
    assert registry.get_sample_value("fraud_serving_score_ratio_sum", labels) == pytest.approx(1.8508)
    assert registry.get_sample_value("fraud_serving_score_ratio_bucket", {**labels, "le": "0.001"}) == 1
    assert registry.get_sample_value("fraud_serving_score_ratio_bucket", {**labels, "le": "0.5"}) == 2
    assert registry.get_sample_value("fraud_serving_score_ratio_bucket", {**labels, "le": "1.0"}) == 4


def test_scores_and_decisions_of_different_lengths_are_refused():
    _, metrics = _serving()
    with pytest.raises(ValueError, match=r"shorter|longer"):
        metrics.bind(MODEL, "v1", 0.5).scored([0.1, 0.2], [True])


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


@pytest.mark.parametrize(
    "batches",
    [
        # on a bound (0.25, 0.5, 1.0), between, below the first, above the last, +Inf, -Inf; two batches add up
        [[0.25, 0.125, 0.5, 0.75, 1.0, 2.0, -1.0], [math.inf, 0.25, 0.0625]],
        [[-math.inf, 0.5], []],
        [[math.nan, 0.25]],  # NaN: in no bucket and a NaN sum, as observe does
    ],
)
def test_observe_many_exposes_exactly_what_observe_per_value_does(batches: list[list[float]]):
    one_by_one, bulk = CollectorRegistry(), CollectorRegistry()
    # dyadic values: any addition order gives the same sum, so the whole exposition must match to the last bit
    each = Histogram("h", "doc", ["model"], buckets=(0.25, 0.5, 1.0), registry=one_by_one).labels("m")
    many = Histogram("h", "doc", ["model"], buckets=(0.25, 0.5, 1.0), registry=bulk).labels("m")
    for batch in batches:
        for value in batch:
            each.observe(value)
        observe_many(many, np.asarray(batch))
    assert _exposition(bulk) == _exposition(one_by_one)


def test_scored_buckets_equal_observe_per_value_on_the_score_buckets():
    rng = np.random.default_rng(7)
    scores = np.concatenate([rng.random(997), np.asarray(SCORE_BUCKETS[:3]), [0.0]])  # three exactly on a bound
    registry, metrics = _serving()
    metrics.bind(MODEL, "v1", 0.5).scored(scores, scores >= 0.5)
    reference = Histogram("fraud_serving_score_ratio", "doc", buckets=SCORE_BUCKETS, registry=CollectorRegistry())
    for value in scores.tolist():
        reference.observe(value)
    labels = {"model_name": MODEL, "model_version": "v1"}
    expected = {s.labels["le"]: s.value for s in reference.collect()[0].samples if s.name.endswith("_bucket")}
    for le, count in expected.items():
        assert registry.get_sample_value("fraud_serving_score_ratio_bucket", {**labels, "le": le}) == count
    assert registry.get_sample_value("fraud_serving_score_ratio_count", labels) == len(scores)
    assert registry.get_sample_value("fraud_serving_score_ratio_sum", labels) == pytest.approx(scores.sum(), rel=1e-12)
    assert registry.get_sample_value("fraud_serving_predictions_total", {**labels, "decision": "fraud"}) == int(
        (scores >= 0.5).sum()
    )


def test_observe_many_falls_back_to_observe_without_the_private_fields():
    seen: list[float] = []

    class Plain:
        def observe(self, amount: float) -> None:
            seen.append(amount)

    observe_many(Plain(), [0.5, 2.0])  # type: ignore[arg-type]
    assert seen == [0.5, 2.0]


def test_stable_and_canary_versions_are_separate_series():
    registry, metrics = _serving()
    stable = metrics.bind(MODEL, "v1", 0.5)
    canary = metrics.bind(MODEL, "v2", 0.4)
    stable.request("v2_rest", 0.01)
    canary.request("v2_rest", 0.01)
    canary.request("v2_rest", 0.01, error_kind="internal")
    total = "fraud_serving_requests_total"
    assert registry.get_sample_value(total, {"model_name": MODEL, "model_version": "v1", "protocol": "v2_rest"}) == 1
    assert registry.get_sample_value(total, {"model_name": MODEL, "model_version": "v2", "protocol": "v2_rest"}) == 2
    info = "fraud_serving_model_info"
    assert registry.get_sample_value(info, {"model_name": MODEL, "model_version": "v2", "threshold": "0.4"}) == 1


# ---------------------------------------------------------------------------------------------------------------
# Drift job
# ---------------------------------------------------------------------------------------------------------------


def _column(name: str, score: float, drifted: bool) -> ColumnDrift:
    return ColumnDrift(column=name, score=score, drifted=drifted, method="wasserstein", threshold=0.1)


def _quality(version: str, maturity: str, ap: float, precision: float, recall: float, unlabelled: float) -> QualityRow:
    return QualityRow(
        model_version=version,
        maturity=maturity,
        n_predictions=1000,
        n_labelled=900,
        n_fraud=12,
        average_precision=ap,
        precision=precision,
        recall=recall,
        unlabelled_ratio=unlabelled,
    )


def _result(model_name: str = MODEL) -> DriftJobResult:
    drifted = VersionReport(
        model_version="v1",
        drift=DriftResult(
            n_reference=5000,
            n_current=1234,
            too_small=False,
            features=[_column("amount", 0.42, True), _column("hour_of_day", 0.03, False)],
            drifted_share=0.5,
            dataset_drifted=True,
            prediction=_column("fraud_score", 0.17, True),
        ),
        quality=[
            _quality("v1", "7d", 0.61, 0.7, 0.55, 0.4),
            _quality("v1", "all", math.nan, 0.65, 0.5, 0.1),
        ],
        estimated_precision=0.72,
    )
    too_small = VersionReport(
        model_version="v2",
        drift=DriftResult(n_reference=5000, n_current=12, too_small=True),
    )
    return DriftJobResult(
        model_name=model_name,
        window_start=datetime(2026, 1, 1, tzinfo=UTC),
        window_end=datetime(2026, 1, 2, tzinfo=UTC),
        versions=[drifted, too_small],
        retrain_reasons=["dataset drift"],
        retrain_started=False,
        duration_seconds=12.5,
    )


def test_drift_registry_gauges_carry_the_values_of_the_result():
    registry = drift_registry(_result(), now=1_700_000_000.0)

    def value(name: str, version: str | None = "v1", **extra: str) -> float | None:
        labels = {"model_name": MODEL, **({"model_version": version} if version else {}), **extra}
        return registry.get_sample_value(name, labels)

    assert value("fraud_drift_window_rows") == 1234
    assert value("fraud_drift_window_too_small") == 0
    assert value("fraud_drift_dataset_drifted") == 1
    assert value("fraud_drift_drifted_features_ratio") == 0.5
    assert value("fraud_drift_prediction_score") == 0.17
    assert value("fraud_drift_prediction_drifted") == 1
    assert value("fraud_drift_feature_score", feature="amount") == 0.42
    assert value("fraud_drift_feature_drifted", feature="amount") == 1
    assert value("fraud_drift_feature_score", feature="hour_of_day") == 0.03
    assert value("fraud_drift_feature_drifted", feature="hour_of_day") == 0
    assert value("fraud_quality_estimated_precision_ratio") == 0.72
    assert value("fraud_quality_average_precision_ratio", maturity="7d") == 0.61
    assert value("fraud_quality_precision_ratio", maturity="7d") == 0.7
    assert value("fraud_quality_recall_ratio", maturity="7d") == 0.55
    assert value("fraud_quality_precision_ratio", maturity="all") == 0.65
    assert value("fraud_quality_recall_ratio", maturity="all") == 0.5
    assert value("fraud_quality_unlabelled_ratio") == 0.1  # from the "all" row, not the 7d one
    assert value("fraud_drift_duration_seconds", version=None) == 12.5
    assert value("fraud_drift_last_success_timestamp_seconds", version=None) == 1_700_000_000.0


def test_nan_values_are_not_published():
    registry = drift_registry(_result(), now=0.0)
    labels = {"model_name": MODEL, "model_version": "v1"}
    assert registry.get_sample_value("fraud_quality_average_precision_ratio", {**labels, "maturity": "all"}) is None
    v2 = {"model_name": MODEL, "model_version": "v2"}
    assert registry.get_sample_value("fraud_quality_estimated_precision_ratio", v2) is None


def test_a_window_too_small_reports_no_drift_and_no_prediction_score():
    registry = drift_registry(_result(), now=0.0)
    v2 = {"model_name": MODEL, "model_version": "v2"}
    assert registry.get_sample_value("fraud_drift_window_too_small", v2) == 1
    assert registry.get_sample_value("fraud_drift_window_rows", v2) == 12
    assert registry.get_sample_value("fraud_drift_dataset_drifted", v2) == 0
    assert registry.get_sample_value("fraud_drift_prediction_drifted", v2) == 0
    assert registry.get_sample_value("fraud_drift_prediction_score", v2) is None
    assert registry.get_sample_value("fraud_drift_feature_score", {**v2, "feature": "amount"}) is None


def test_last_success_defaults_to_the_current_time():
    before = time.time()
    registry = drift_registry(_result())
    after = time.time()
    stamp = registry.get_sample_value("fraud_drift_last_success_timestamp_seconds", {"model_name": MODEL})
    assert stamp is not None and before <= stamp <= after


def test_each_run_gets_a_fresh_registry():
    first = drift_registry(_result(), now=1.0)
    second = drift_registry(_result("other-model"), now=2.0)
    assert first is not second
    assert (
        first.get_sample_value("fraud_drift_window_rows", {"model_name": "other-model", "model_version": "v1"}) is None
    )
    assert (
        second.get_sample_value("fraud_drift_window_rows", {"model_name": "other-model", "model_version": "v1"}) == 1234
    )


# ---------------------------------------------------------------------------------------------------------------
# Pushgateway
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Gateway:
    """A loopback HTTP server standing in for the Pushgateway: records every request, answers ``status``."""

    url: str
    status: int = 200
    requests: list[dict[str, object]] = field(default_factory=list)


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    state = Gateway(url="")

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            state.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "body": self.rfile.read(length).decode(),
                }
            )
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = do_DELETE = _record  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_push_replaces_the_models_group_with_the_runs_gauges(gateway: Gateway):
    push_drift_result(gateway.url, _result())
    assert len(gateway.requests) == 1
    request = gateway.requests[0]
    assert request["method"] == "PUT"  # PUT replaces the whole group: old versions' series disappear
    assert request["path"] == f"/metrics/job/{DRIFT_JOB}/model_name/{MODEL}"
    assert str(request["content_type"]).startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(str(request["body"]))}
    rows = {s.labels["model_version"]: s.value for s in families["fraud_drift_window_rows"].samples}
    assert rows == {"v1": 1234, "v2": 12}
    drifted = [s for s in families["fraud_drift_dataset_drifted"].samples if s.labels["model_version"] == "v1"]
    assert drifted[0].value == 1 and drifted[0].labels["model_name"] == MODEL
    assert "fraud_drift_last_success_timestamp_seconds" in families
    assert not any(name.startswith("fraud_serving_") for name in families)


def test_push_of_a_model_name_with_a_slash_uses_the_base64_grouping_key(gateway: Gateway):
    push_drift_result(gateway.url, _result("team/model"))
    assert gateway.requests[0]["path"] == f"/metrics/job/{DRIFT_JOB}/model_name@base64/dGVhbS9tb2RlbA=="


def test_a_gateway_answering_an_error_status_raises(gateway: Gateway):
    gateway.status = 500
    with pytest.raises(OSError, match="500"):
        push_drift_result(gateway.url, _result())
    assert len(gateway.requests) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_gateway_raises_connection_refused():
    with pytest.raises(OSError, match="Connection refused"):
        push_drift_result(f"http://127.0.0.1:{_closed_port()}", _result())


def test_an_unreachable_gateway_error_names_the_gateway_url():
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(OSError, match=re.escape(url)):
        push_drift_result(url, _result())
