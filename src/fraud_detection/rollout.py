"""Canary rollout: put a new model version beside the stable one, judge it from Prometheus, promote or roll back.

The flow, over a KServe InferenceService in Serverless mode (the only mode in which KServe splits traffic for
``canaryTrafficPercent``):

1. **Start** (:func:`start_canary`): point ``STORAGE_URI`` and ``FRAUD_MODEL_VERSION`` of the predictor's
   ``kserve-container`` at the new version and set ``spec.predictor.canaryTrafficPercent``. KServe creates a new
   revision and sends that share of the requests to it; the previously rolled-out revision keeps the rest. The
   versions are written to the annotations ``fraud-detection.io/rollout-stable-version`` and
   ``fraud-detection.io/rollout-canary-version``, and the store alias ``canary`` moves to the new version.
2. **Analyse** (:func:`analyse`): over a window, query Prometheus for each version (the model server's metrics
   carry ``model_version``, see ``docs/METRICS.md``) and compare the canary with the stable version: error rate,
   p99 latency, the distance between their score distributions (max CDF difference and PSI over the
   ``fraud_serving_score_ratio`` buckets), the alert rate (share of rows scored ``decision="fraud"``) and the
   Prometheus alerts firing for the canary. Too little traffic on either side is *inconclusive* (wait), never a
   promotion.
3. **Apply** (:func:`apply_decision`): *promote* sends 100 % to the canary (it is already the spec;
   ``canaryTrafficPercent`` is removed) and moves the store alias ``production`` to it; *rollback* first pins
   100 % of the traffic on the previously rolled-out revision (``canaryTrafficPercent: 0``) while restoring the
   stable version in the spec, waits for that spec's revision to be ready, then removes ``canaryTrafficPercent``
   (removing it earlier would route everything to the latest *ready* revision, the bad canary, until the restored
   revision is up). Every decision, with each check's value, threshold and outcome, is written to
   ``rollouts/<model_name>/<timestamp>.json`` in the store and summarised in the InferenceService annotations
   ``fraud-detection.io/rollout-decision``, ``-reasons``, ``-time`` and ``-record``.

All InferenceService changes are JSON patches (RFC 6902) with ``test`` operations guarding the container and env
indexes they touch, so a concurrent edit makes the patch fail instead of silently overwriting it; a JSON merge
patch would replace the whole containers list. The patch builders (:func:`canary_patch`, :func:`promote_patch`,
:func:`rollback_patch`, :func:`finish_rollback_patch`) are pure functions of the current object.

Prometheus is queried over its HTTP API with :mod:`urllib` (no client library); Kubernetes through the
``kubernetes`` client's CustomObjectsApi, imported only when a cluster is used.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import Field, SecretStr

from fraud_detection.deploy import VERSION_ANNOTATION as DEPLOY_VERSION_ANNOTATION
from fraud_detection.registry import ModelRegistry
from fraud_detection.settings import Settings
from fraud_detection.store import ArtifactStore

LOG = logging.getLogger(__name__)

GROUP = "serving.kserve.io"
API_VERSION = "v1beta1"
PLURAL = "inferenceservices"
CONTAINER_NAME = "kserve-container"
ENV_STORAGE_URI = "STORAGE_URI"
ENV_MODEL_VERSION = "FRAUD_MODEL_VERSION"

ANNOTATION_PREFIX = "fraud-detection.io/"
ANNOTATION_DECISION = ANNOTATION_PREFIX + "rollout-decision"
ANNOTATION_REASONS = ANNOTATION_PREFIX + "rollout-reasons"
ANNOTATION_TIME = ANNOTATION_PREFIX + "rollout-time"
ANNOTATION_RECORD = ANNOTATION_PREFIX + "rollout-record"
ANNOTATION_STABLE = ANNOTATION_PREFIX + "rollout-stable-version"
ANNOTATION_CANARY = ANNOTATION_PREFIX + "rollout-canary-version"

DEFAULT_CANARY_PERCENT = 10
ROLLOUTS_PREFIX = "rollouts/"
_STORAGE_URI_RE = re.compile(r"^(?P<root>.*)/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/?$")
_DURATION_RE = re.compile(r"(\d+)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class RolloutError(RuntimeError):
    """A rollout step cannot go ahead; the message says why and what to do."""


class PrometheusError(RuntimeError):
    """Prometheus could not be queried or answered an error."""


class RolloutSettings(Settings):
    """Settings of the rollout step, on top of :class:`~fraud_detection.settings.Settings` (prefix ``FRAUD_``).

    The chart's pipeline ConfigMap sets ``FRAUD_PROMETHEUS_URL``, ``FRAUD_SERVING_NAMESPACE`` and
    ``FRAUD_INFERENCE_SERVICE``.
    """

    prometheus_url: str | None = Field(default=None, description="Prometheus base URL, e.g. http://prometheus:9090")
    prometheus_bearer_token: SecretStr | None = Field(
        default=None, description="bearer token for Prometheus (e.g. Azure Monitor's query endpoint)"
    )
    serving_namespace: str = "fraud-detection"
    inference_service: str = "fraud-detector"


# --------------------------------------------------------------------------------------------------- decision


class Decision(StrEnum):
    """Outcome of an analysis."""

    PROMOTE = "promote"
    ROLLBACK = "rollback"
    INCONCLUSIVE = "inconclusive"


class Outcome(StrEnum):
    """Outcome of one check."""

    PASS = "pass"
    FAIL = "fail"
    INSUFFICIENT = "insufficient"


@dataclass(frozen=True)
class Thresholds:
    """Limits of the canary analysis.

    A ratio-and-margin pair fails only when the canary exceeds *both* ``ratio x stable`` and
    ``stable + margin`` (the canary alert rules use the same shape), so that neither a flawless stable version
    (ratio of zero) nor a tiny absolute difference decides alone.

    Attributes:
        min_requests: Requests each version must have served in the window; fewer is inconclusive.
        min_scored_rows: Scored rows each version needs for the score-distribution and alert-rate checks.
        max_error_rate_ratio: Canary error rate may be at most this multiple of the stable one ...
        max_error_rate_increase: ... or this much above it (absolute, 0.01 = 1 point), whichever is larger.
        max_p99_latency_ratio: Canary p99 latency may be at most this multiple of the stable one ...
        max_p99_latency_increase_seconds: ... or this many seconds above it, whichever is larger.
        max_score_ks: Largest tolerated max-CDF difference between the score distributions (0-1).
        max_score_psi: Largest tolerated population stability index between the score distributions.
        max_alert_rate_ratio: Canary share of ``fraud`` decisions may be at most this multiple of stable ...
        max_alert_rate_increase: ... or this much above it (absolute), whichever is larger.
        max_firing_alerts: Prometheus alerts firing for the canary version that are tolerated.
    """

    min_requests: int = 100
    min_scored_rows: int = 100
    max_error_rate_ratio: float = 2.0
    max_error_rate_increase: float = 0.01
    max_p99_latency_ratio: float = 1.5
    max_p99_latency_increase_seconds: float = 0.1
    max_score_ks: float = 0.2
    max_score_psi: float = 0.25
    max_alert_rate_ratio: float = 2.0
    max_alert_rate_increase: float = 0.02
    max_firing_alerts: int = 0

    def __post_init__(self) -> None:
        """Reject limits that cannot mean anything."""
        for name, value in asdict(self).items():
            if not isinstance(value, int | float) or math.isnan(value) or value < 0:
                raise ValueError(f"threshold {name} must be a number >= 0, not {value!r}")
        if self.max_score_ks > 1:
            raise ValueError(f"threshold max_score_ks is a CDF difference in [0, 1], not {self.max_score_ks}")


@dataclass(frozen=True)
class VersionMetrics:
    """What Prometheus saw of one model version over the window.

    Attributes:
        version: Model version (the ``model_version`` label).
        requests: Scoring requests received.
        errors: Failed requests.
        p99_latency_seconds: p99 of the request duration, None without data.
        score_buckets: Cumulative score histogram ``(upper bound, count)`` sorted by bound, ``+Inf`` last.
        predictions: Scored rows by decision (``fraud``, ``legit``).
        firing_alerts: Names of the Prometheus alerts firing for this version.
    """

    version: str
    requests: float
    errors: float
    p99_latency_seconds: float | None
    score_buckets: tuple[tuple[float, float], ...] = ()
    predictions: Mapping[str, float] = field(default_factory=dict)
    firing_alerts: tuple[str, ...] = ()

    @property
    def error_rate(self) -> float | None:
        """Errors per request, None without requests."""
        return self.errors / self.requests if self.requests > 0 else None

    @property
    def scored_rows(self) -> float:
        """Rows scored (all decisions)."""
        return float(sum(self.predictions.values()))

    @property
    def alert_rate(self) -> float | None:
        """Share of scored rows decided ``fraud``, None without scored rows."""
        rows = self.scored_rows
        return self.predictions.get("fraud", 0.0) / rows if rows > 0 else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (infinite bucket bounds as ``"+Inf"``).

        Returns:
            The metrics and the derived rates.
        """
        return {
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p99_latency_seconds": self.p99_latency_seconds,
            "scored_rows": self.scored_rows,
            "alert_rate": self.alert_rate,
            "predictions": dict(self.predictions),
            "firing_alerts": list(self.firing_alerts),
            "score_buckets": [["+Inf" if math.isinf(le) else le, count] for le, count in self.score_buckets],
        }


@dataclass(frozen=True)
class Check:
    """One comparison of canary with stable.

    Attributes:
        name: ``traffic``, ``error_rate``, ``p99_latency``, ``score_ks``, ``score_psi``, ``alert_rate`` or
            ``firing_alerts``.
        outcome: pass, fail, or insufficient (not enough data to judge).
        value: The judged value (the canary's rate, or the distance), None without data.
        threshold: The limit the value must not exceed (for ``traffic``: the minimum it must reach).
        canary: The canary's raw value, when the check compares one.
        stable: The stable version's raw value, when the check compares one.
        reason: A sentence a human can act on.
    """

    name: str
    outcome: Outcome
    value: float | None
    threshold: float
    canary: float | None
    stable: float | None
    reason: str

    @property
    def passed(self) -> bool | None:
        """True on pass, False on fail, None when there was not enough data."""
        return None if self.outcome is Outcome.INSUFFICIENT else self.outcome is Outcome.PASS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form.

        Returns:
            Every field, plus ``passed``.
        """
        return {
            "name": self.name,
            "outcome": self.outcome.value,
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "canary": self.canary,
            "stable": self.stable,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RolloutDecision:
    """A decision with everything behind it.

    Attributes:
        decision: promote, rollback or inconclusive (wait and analyse again).
        model_name: Served model name.
        stable_version: Version at (100 - canary) %.
        canary_version: Version under test.
        reasons: Human reasons, the deciding ones first.
        checks: Every check, in a fixed order (empty for a manual decision).
        decided_at: UTC time of the decision (ISO 8601).
        window: Analysis window as given (e.g. ``10m``), None for a manual decision.
        thresholds: Limits used, None for a manual decision.
        stable: Stable version metrics, None for a manual decision.
        canary: Canary metrics, None for a manual decision.
        source: ``analysis`` or ``manual``.
    """

    decision: Decision
    model_name: str
    stable_version: str
    canary_version: str
    reasons: tuple[str, ...]
    checks: tuple[Check, ...] = ()
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    window: str | None = None
    thresholds: Thresholds | None = None
    stable: VersionMetrics | None = None
    canary: VersionMetrics | None = None
    source: str = "analysis"

    def check(self, name: str) -> Check:
        """One check by name.

        Args:
            name: Check name.

        Returns:
            The check.

        Raises:
            KeyError: No such check.
        """
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the store record's ``decision`` part).

        Returns:
            Every field, recursively.
        """
        return {
            "decision": self.decision.value,
            "source": self.source,
            "model_name": self.model_name,
            "stable_version": self.stable_version,
            "canary_version": self.canary_version,
            "decided_at": self.decided_at,
            "window": self.window,
            "reasons": list(self.reasons),
            "checks": [c.to_dict() for c in self.checks],
            "thresholds": asdict(self.thresholds) if self.thresholds else None,
            "stable": self.stable.to_dict() if self.stable else None,
            "canary": self.canary.to_dict() if self.canary else None,
        }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{1000 * value:.1f} ms"


def _limit(stable: float, ratio: float, margin: float) -> float:
    """Largest tolerated canary value: the larger of ``ratio x stable`` and ``stable + margin``."""
    return max(ratio * stable, stable + margin)


def _relative_check(
    name: str,
    label: str,
    canary: float | None,
    stable: float | None,
    ratio: float,
    margin: float,
    fmt: Callable[[float | None], str],
    *,
    insufficient: str,
    enough: bool = True,
) -> Check:
    """Judge a canary value against the stable one: it may exceed it by ``ratio`` or ``margin``, whichever is larger.

    Args:
        name: The check's name.
        label: How the reason names the measure.
        canary: The canary's value (None without data).
        stable: The stable version's value (None without data).
        ratio: Tolerated ratio to the stable value.
        margin: Tolerated absolute increase over the stable value.
        fmt: Formats a value for the reason.
        insufficient: The reason when there is nothing to judge.
        enough: False when too little traffic was seen to judge at all.

    Returns:
        The check: pass, fail, or insufficient.
    """
    if not enough or canary is None or stable is None:
        return Check(name, Outcome.INSUFFICIENT, canary, math.nan, canary, stable, insufficient)
    limit = _limit(stable, ratio, margin)
    ok = canary <= limit
    reason = (
        f"{label}: canary {fmt(canary)} vs stable {fmt(stable)} ({'within' if ok else 'above'} the limit {fmt(limit)})"
    )
    return Check(name, Outcome.PASS if ok else Outcome.FAIL, canary, limit, canary, stable, reason)


def score_distribution_distance(
    stable: Sequence[tuple[float, float]], canary: Sequence[tuple[float, float]], epsilon: float = 1e-4
) -> tuple[float, float] | None:
    """Max CDF difference (Kolmogorov-Smirnov on the buckets) and PSI of two cumulative histograms.

    Args:
        stable: Cumulative ``(upper bound, count)`` pairs of the stable version, any order.
        canary: The same for the canary; bounds missing on one side are ignored.
        epsilon: Floor of a bin share in the PSI (an empty bin would make it infinite).

    Returns:
        ``(ks, psi)``, or None when either side has no rows or the bounds do not overlap.
    """
    s_map, c_map = dict(stable), dict(canary)
    bounds = sorted(set(s_map) & set(c_map))
    if not bounds or not math.isinf(bounds[-1]):
        return None
    s_total, c_total = s_map[bounds[-1]], c_map[bounds[-1]]
    if s_total <= 0 or c_total <= 0:
        return None
    ks = 0.0
    psi = 0.0
    s_prev = c_prev = 0.0
    for le in bounds:
        # increase() extrapolates each bucket on its own: keep the cumulative counts monotonic and in range.
        s_cum = min(max(s_map[le], s_prev), s_total)
        c_cum = min(max(c_map[le], c_prev), c_total)
        ks = max(ks, abs(s_cum / s_total - c_cum / c_total))
        s_share = max((s_cum - s_prev) / s_total, epsilon)
        c_share = max((c_cum - c_prev) / c_total, epsilon)
        psi += (c_share - s_share) * math.log(c_share / s_share)
        s_prev, c_prev = s_cum, c_cum
    return ks, psi


def evaluate_checks(stable: VersionMetrics, canary: VersionMetrics, thresholds: Thresholds) -> tuple[Check, ...]:
    """Compare canary with stable.

    Args:
        stable: Stable version metrics.
        canary: Canary metrics.
        thresholds: Limits.

    Returns:
        The checks: traffic, error_rate, p99_latency, score_ks, score_psi, alert_rate, firing_alerts.
    """
    t = thresholds
    checks: list[Check] = []

    least = min(stable.requests, canary.requests)
    enough = least >= t.min_requests
    checks.append(
        Check(
            "traffic",
            Outcome.PASS if enough else Outcome.INSUFFICIENT,
            least,
            t.min_requests,
            canary.requests,
            stable.requests,
            f"traffic: canary {canary.requests:.0f} requests, stable {stable.requests:.0f} "
            f"(need {t.min_requests} each)" + ("" if enough else ": too little to judge, wait"),
        )
    )

    c_err, s_err = canary.error_rate, stable.error_rate
    checks.append(
        _relative_check(
            "error_rate", "error rate", c_err, s_err, t.max_error_rate_ratio, t.max_error_rate_increase, _pct,
            insufficient="error rate: no requests",
        )
    )  # fmt: skip
    c_p99, s_p99 = canary.p99_latency_seconds, stable.p99_latency_seconds
    checks.append(
        _relative_check(
            "p99_latency", "p99 latency", c_p99, s_p99, t.max_p99_latency_ratio, t.max_p99_latency_increase_seconds,
            _ms, insufficient=f"p99 latency: no latency data (canary {_ms(c_p99)}, stable {_ms(s_p99)})",
        )
    )  # fmt: skip

    rows_ok = min(stable.scored_rows, canary.scored_rows) >= t.min_scored_rows
    distance = score_distribution_distance(stable.score_buckets, canary.score_buckets) if rows_ok else None
    rows_note = (
        f"score distribution: canary {canary.scored_rows:.0f} scored rows, stable {stable.scored_rows:.0f} "
        f"(need {t.min_scored_rows} each)"
    )
    for name, index, limit_value in (("score_ks", 0, t.max_score_ks), ("score_psi", 1, t.max_score_psi)):
        label = "max CDF difference" if name == "score_ks" else "PSI"
        if distance is None:
            checks.append(Check(name, Outcome.INSUFFICIENT, None, limit_value, None, None, rows_note))
            continue
        value = distance[index]
        ok = value <= limit_value
        checks.append(
            Check(
                name,
                Outcome.PASS if ok else Outcome.FAIL,
                value,
                limit_value,
                None,
                None,
                f"score distribution {label}: {value:.3f} ({'within' if ok else 'above'} the limit {limit_value})",
            )
        )

    checks.append(
        _relative_check(
            "alert_rate", "alert rate (share scored fraud)", canary.alert_rate, stable.alert_rate,
            t.max_alert_rate_ratio, t.max_alert_rate_increase, _pct,
            insufficient=rows_note.replace("score distribution", "alert rate"), enough=rows_ok,
        )
    )  # fmt: skip

    firing = len(canary.firing_alerts)
    ok = firing <= t.max_firing_alerts
    checks.append(
        Check(
            "firing_alerts",
            Outcome.PASS if ok else Outcome.FAIL,
            float(firing),
            t.max_firing_alerts,
            float(firing),
            float(len(stable.firing_alerts)),
            f"alerts firing for the canary: {', '.join(canary.firing_alerts) or 'none'} "
            f"({firing}, tolerated {t.max_firing_alerts})",
        )
    )
    return tuple(checks)


def decide(
    stable: VersionMetrics,
    canary: VersionMetrics,
    thresholds: Thresholds,
    *,
    model_name: str,
    window: str | None = None,
) -> RolloutDecision:
    """Decide from the metrics of both versions.

    Too little traffic is inconclusive whatever the other checks say (a handful of requests proves nothing
    either way). Otherwise any failed check rolls back, any check short of data is inconclusive, and only a
    canary passing every check is promoted.

    Args:
        stable: Stable version metrics.
        canary: Canary metrics.
        thresholds: Limits.
        model_name: Served model name.
        window: Analysis window, for the record.

    Returns:
        The decision.
    """
    checks = evaluate_checks(stable, canary, thresholds)
    failed = [c for c in checks if c.outcome is Outcome.FAIL]
    short = [c for c in checks if c.outcome is Outcome.INSUFFICIENT]
    if checks[0].outcome is Outcome.INSUFFICIENT:
        decision, deciding = Decision.INCONCLUSIVE, [checks[0]]
    elif failed:
        decision, deciding = Decision.ROLLBACK, failed
    elif short:
        decision, deciding = Decision.INCONCLUSIVE, short
    else:
        decision, deciding = Decision.PROMOTE, list(checks)
    others = [c for c in checks if c not in deciding]
    reasons = tuple(dict.fromkeys(c.reason for c in [*deciding, *others]))  # ordered, without repeats
    LOG.info("canary %s vs stable %s: %s (%s)", canary.version, stable.version, decision.value, reasons[0])
    return RolloutDecision(
        decision=decision,
        model_name=model_name,
        stable_version=stable.version,
        canary_version=canary.version,
        reasons=reasons,
        checks=checks,
        window=window,
        thresholds=thresholds,
        stable=stable,
        canary=canary,
    )


# ------------------------------------------------------------------------------------------------- Prometheus


def parse_duration(text: str) -> float:
    """Parse a Prometheus-style duration (``30s``, ``10m``, ``1h30m``) into seconds.

    Args:
        text: The duration.

    Returns:
        Seconds (> 0).

    Raises:
        ValueError: Not a duration.
    """
    stripped = text.strip()
    parts = _DURATION_RE.findall(stripped)
    if not stripped or "".join(n + u for n, u in parts) != stripped:
        raise ValueError(f"window {text!r} is not a duration such as 30s, 10m or 1h30m")
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"window {text!r} must be longer than zero")
    return float(seconds)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class PrometheusClient:
    """The instant-query part of Prometheus' HTTP API.

    Args:
        url: Base URL, e.g. ``http://127.0.0.1:9090``.
        timeout: Seconds per request.
        bearer_token: Optional bearer token (sent as ``Authorization``).
    """

    def __init__(self, url: str, *, timeout: float = 10.0, bearer_token: str | None = None) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"Prometheus URL {url!r} must be http(s)://host[:port][/path]")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._token = bearer_token

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """Run an instant query.

        Args:
            promql: The expression.
            at: Evaluation time (Unix seconds); now by default.

        Returns:
            ``(labels, value)`` per series of the vector (a scalar becomes one series without labels).

        Raises:
            PrometheusError: Unreachable, HTTP error, or an error status in the answer.
        """
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        request = urllib.request.Request(
            f"{self.url}/api/v1/query",
            data=urllib.parse.urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            method="POST",
        )
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise PrometheusError(f"Prometheus at {self.url} answered {exc.code} to {promql!r}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise PrometheusError(f"Prometheus at {self.url} did not answer JSON to {promql!r}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus rejected {promql!r}: {body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise PrometheusError(f"{promql!r} returned a {data['resultType']}, expected an instant vector")
        return [(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]

    def scalar(self, promql: str, at: float | None = None) -> float | None:
        """Run a query expected to return at most one series.

        Args:
            promql: The expression.
            at: Evaluation time.

        Returns:
            Its value, None when empty or NaN.
        """
        result = self.query(promql, at)
        if len(result) > 1:
            raise PrometheusError(f"{promql!r} returned {len(result)} series, expected one")
        if not result or math.isnan(result[0][1]):
            return None
        return result[0][1]


def version_queries(model_name: str, version: str, window: str, namespace: str | None = None) -> dict[str, str]:
    """The PromQL of each metric of one version.

    Args:
        model_name: The ``model_name`` label.
        version: The ``model_version`` label.
        window: Range, e.g. ``10m``.
        namespace: The ``namespace`` label to match, if the metrics carry one (Prometheus Operator).

    Returns:
        Queries keyed by metric: requests, errors, p99, score_buckets, predictions, alerts.
    """
    parse_duration(window)
    matchers = [f'model_name="{_label_value(model_name)}"', f'model_version="{_label_value(version)}"']
    if namespace:
        matchers.append(f'namespace="{_label_value(namespace)}"')
    sel = "{" + ",".join(matchers) + "}"
    alert_sel = "{" + ",".join(['alertstate="firing"', *matchers]) + "}"
    return {
        "requests": f"sum(increase(fraud_serving_requests_total{sel}[{window}]))",
        "errors": f"sum(increase(fraud_serving_errors_total{sel}[{window}]))",
        "p99": (
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(fraud_serving_request_duration_seconds_bucket{sel}[{window}])))"
        ),
        "score_buckets": f"sum by (le) (increase(fraud_serving_score_ratio_bucket{sel}[{window}]))",
        "predictions": f"sum by (decision) (increase(fraud_serving_predictions_total{sel}[{window}]))",
        "alerts": f"count by (alertname) (ALERTS{alert_sel})",
    }


def fetch_version_metrics(
    prometheus: PrometheusClient,
    model_name: str,
    version: str,
    window: str,
    *,
    at: float | None = None,
    namespace: str | None = None,
) -> VersionMetrics:
    """Query Prometheus for one version over the window ending at ``at``.

    Args:
        prometheus: The client.
        model_name: Served model name.
        version: Model version.
        window: Range, e.g. ``10m``.
        at: End of the window (Unix seconds); now by default.
        namespace: ``namespace`` label to match, if any.

    Returns:
        The metrics (zero counts when a series is absent).
    """
    queries = version_queries(model_name, version, window, namespace)
    buckets = []
    for labels, value in prometheus.query(queries["score_buckets"], at):
        if "le" in labels and not math.isnan(value):
            buckets.append((float(labels["le"]), value))
    predictions = {
        labels.get("decision", ""): value
        for labels, value in prometheus.query(queries["predictions"], at)
        if not math.isnan(value)
    }
    alerts = tuple(sorted(labels.get("alertname", "?") for labels, _ in prometheus.query(queries["alerts"], at)))
    return VersionMetrics(
        version=version,
        requests=prometheus.scalar(queries["requests"], at) or 0.0,
        errors=prometheus.scalar(queries["errors"], at) or 0.0,
        p99_latency_seconds=prometheus.scalar(queries["p99"], at),
        score_buckets=tuple(sorted(buckets)),
        predictions=predictions,
        firing_alerts=alerts,
    )


def analyse(
    prometheus: PrometheusClient,
    *,
    model_name: str,
    stable_version: str,
    canary_version: str,
    window: str = "10m",
    thresholds: Thresholds | None = None,
    at: float | None = None,
    namespace: str | None = None,
) -> RolloutDecision:
    """Compare canary with stable over a window and decide.

    Args:
        prometheus: The client.
        model_name: Served model name (``model_name`` label).
        stable_version: Stable version.
        canary_version: Canary version.
        window: Analysis window, e.g. ``10m``.
        thresholds: Limits (defaults when None).
        at: End of the window (Unix seconds); now by default.
        namespace: ``namespace`` label to match, if the metrics carry one.

    Returns:
        The decision.
    """
    if stable_version == canary_version:
        raise ValueError(f"stable and canary are the same version {stable_version!r}: nothing to compare")
    end = time.time() if at is None else at
    stable = fetch_version_metrics(prometheus, model_name, stable_version, window, at=end, namespace=namespace)
    canary = fetch_version_metrics(prometheus, model_name, canary_version, window, at=end, namespace=namespace)
    return decide(stable, canary, thresholds or Thresholds(), model_name=model_name, window=window)


# ------------------------------------------------------------------------------------- InferenceService patches
# The patch builders below are the project's InferenceService patch logic for the rollout. The pipeline's
# deploy_model step (src/fraud_detection/deploy.py) should reuse them rather than keep a second copy.

JsonPatch = list[dict[str, Any]]


def _escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _unescape_pointer(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_json_patch(document: Mapping[str, Any], patch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Apply a JSON patch (RFC 6902: add, remove, replace, test) to a copy of a document.

    Used for dry runs and tests; the API server applies the same patch for real.

    Args:
        document: The JSON document.
        patch: The operations.

    Returns:
        The patched copy.

    Raises:
        ValueError: An operation's path does not exist or a ``test`` fails.
    """
    doc: Any = copy.deepcopy(dict(document))
    for op in patch:
        kind, path = op["op"], op["path"]
        if not path.startswith("/"):
            raise ValueError(f"JSON pointer {path!r} must start with '/'")
        tokens = [_unescape_pointer(t) for t in path.split("/")[1:]]
        parent: Any = doc
        for token in tokens[:-1]:
            parent = _child(parent, token, path)
        last = tokens[-1]
        if kind == "test":
            if _child(parent, last, path) != op["value"]:
                raise ValueError(f"test failed at {path}: expected {op['value']!r}")
        elif kind == "add":
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if not 0 <= index <= len(parent):
                    raise ValueError(f"index out of range at {path}")
                parent.insert(index, copy.deepcopy(op["value"]))
            elif isinstance(parent, dict):
                parent[last] = copy.deepcopy(op["value"])
            else:
                raise ValueError(f"cannot add under a scalar at {path}")
        elif kind in ("remove", "replace"):
            _child(parent, last, path)  # must exist
            if kind == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            else:
                parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(op["value"])
        else:
            raise ValueError(f"unsupported JSON patch operation {kind!r}")
    return dict(doc)


def _child(node: Any, token: str, path: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise ValueError(f"path {path} does not exist (no {token!r})")
        return node[token]
    if isinstance(node, list):
        if not token.isdigit() or int(token) >= len(node):
            raise ValueError(f"path {path} does not exist (index {token!r})")
        return node[int(token)]
    raise ValueError(f"path {path} does not exist (scalar before {token!r})")


@dataclass(frozen=True)
class ServiceState:
    """What the rollout needs to know of an InferenceService.

    Attributes:
        namespace: Namespace.
        name: Name.
        model_version: ``FRAUD_MODEL_VERSION`` of ``kserve-container`` (the version of the spec).
        storage_uri: ``STORAGE_URI`` of ``kserve-container``.
        canary_percent: ``spec.predictor.canaryTrafficPercent``, None when unset.
        stable_version: The stable version recorded when the canary started, if any.
        canary_version: The canary version recorded when the canary started, if any.
        annotations: All annotations.
        traffic: ``(revision, percent, tag)`` from ``status.components.predictor.traffic``.
        latest_created_revision: Knative's latest created revision of the predictor, if known.
        latest_ready_revision: Knative's latest ready revision of the predictor, if known.
        ready: The InferenceService's Ready condition, None when there is no status yet.
        generation: ``metadata.generation``.
        observed_generation: ``status.observedGeneration``.
    """

    namespace: str
    name: str
    model_version: str | None
    storage_uri: str | None
    canary_percent: int | None
    stable_version: str | None
    canary_version: str | None
    annotations: Mapping[str, str]
    traffic: tuple[tuple[str, int, str | None], ...]
    latest_created_revision: str | None
    latest_ready_revision: str | None
    ready: bool | None
    generation: int | None
    observed_generation: int | None

    @property
    def canary_running(self) -> bool:
        """Whether a canary split is configured (``canaryTrafficPercent`` above 0)."""
        return self.canary_percent is not None and self.canary_percent > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form.

        Returns:
            Every field.
        """
        out = asdict(self)
        out["traffic"] = [{"revision": r, "percent": p, "tag": t} for r, p, t in self.traffic]
        out["annotations"] = {k: v for k, v in self.annotations.items() if k.startswith(ANNOTATION_PREFIX)}
        return out


def _container_env(isvc: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    containers = ((isvc.get("spec") or {}).get("predictor") or {}).get("containers") or []
    if not containers or containers[0].get("name") != CONTAINER_NAME:
        name = (isvc.get("metadata") or {}).get("name")
        raise RolloutError(
            f"InferenceService {name}: spec.predictor.containers[0] must be {CONTAINER_NAME!r} "
            f"(found {[c.get('name') for c in containers]}); is it installed by the fraud-detection chart?"
        )
    return containers, list(containers[0].get("env") or [])


def _env_value(env: Sequence[Mapping[str, Any]], name: str) -> str | None:
    for item in env:
        if item.get("name") == name:
            value = item.get("value")
            return None if value is None else str(value)
    return None


def read_state(isvc: Mapping[str, Any]) -> ServiceState:
    """Extract the rollout's view of an InferenceService object.

    Args:
        isvc: The object, as the API returns it.

    Returns:
        Its state.
    """
    meta = isvc.get("metadata") or {}
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    _, env = _container_env(isvc)
    status = isvc.get("status") or {}
    component = (status.get("components") or {}).get("predictor") or {}
    traffic = tuple(
        (str(t.get("revisionName", "")), int(t.get("percent", 0) or 0), t.get("tag"))
        for t in component.get("traffic") or []
    )
    ready = None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
    annotations = dict(meta.get("annotations") or {})
    percent = predictor.get("canaryTrafficPercent")
    return ServiceState(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        model_version=_env_value(env, ENV_MODEL_VERSION),
        storage_uri=_env_value(env, ENV_STORAGE_URI),
        canary_percent=None if percent is None else int(percent),
        stable_version=annotations.get(ANNOTATION_STABLE),
        canary_version=annotations.get(ANNOTATION_CANARY),
        annotations=annotations,
        traffic=traffic,
        latest_created_revision=component.get("latestCreatedRevision"),
        latest_ready_revision=component.get("latestReadyRevision"),
        ready=ready,
        generation=meta.get("generation"),
        observed_generation=status.get("observedGeneration"),
    )


def storage_uri_for(current_uri: str, version: str) -> str:
    """The storage URI of another version under the same root and model name.

    Args:
        current_uri: The current ``STORAGE_URI``: ``<root>/models/<name>/versions/<version>``.
        version: The version to point at.

    Returns:
        ``<root>/models/<name>/versions/<version>``.

    Raises:
        RolloutError: The current URI does not follow the store layout.
    """
    match = _STORAGE_URI_RE.match(current_uri)
    if not match:
        raise RolloutError(
            f"{ENV_STORAGE_URI} {current_uri!r} does not follow <root>/models/<name>/versions/<version>; "
            "cannot derive another version's location"
        )
    if not version or "/" in version:
        raise ValueError(f"model version {version!r} must be a non-empty name without '/'")
    return f"{match['root']}/models/{match['name']}/versions/{version}"


def _env_ops(isvc: Mapping[str, Any], values: Mapping[str, str]) -> JsonPatch:
    """Set env vars of kserve-container by name, guarding each index with a ``test``."""
    _, env = _container_env(isvc)
    base = "/spec/predictor/containers/0"
    ops: JsonPatch = [{"op": "test", "path": f"{base}/name", "value": CONTAINER_NAME}]
    if not env:
        ops.append({"op": "add", "path": f"{base}/env", "value": []})
    for name, value in values.items():
        index = next((i for i, item in enumerate(env) if item.get("name") == name), None)
        if index is None:
            ops.append({"op": "add", "path": f"{base}/env/-", "value": {"name": name, "value": value}})
        else:
            ops.append({"op": "test", "path": f"{base}/env/{index}/name", "value": name})
            ops.append({"op": "replace", "path": f"{base}/env/{index}", "value": {"name": name, "value": value}})
    return ops


def annotation_ops(isvc: Mapping[str, Any], annotations: Mapping[str, str | None]) -> JsonPatch:
    """Set (or, with None, remove) annotations.

    Args:
        isvc: The current object.
        annotations: Key to value; None removes the key if present.

    Returns:
        The operations.
    """
    current = (isvc.get("metadata") or {}).get("annotations")
    if current is None:
        kept = {k: v for k, v in annotations.items() if v is not None}
        return [{"op": "add", "path": "/metadata/annotations", "value": kept}] if kept else []
    ops: JsonPatch = []
    for key, value in annotations.items():
        path = "/metadata/annotations/" + _escape_pointer(key)
        if value is None:
            if key in current:
                ops.append({"op": "remove", "path": path})
        else:
            ops.append({"op": "add", "path": path, "value": str(value)})
    return ops


def _percent_op(isvc: Mapping[str, Any], percent: int | None) -> JsonPatch:
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    path = "/spec/predictor/canaryTrafficPercent"
    if percent is None:
        return [{"op": "remove", "path": path}] if "canaryTrafficPercent" in predictor else []
    return [{"op": "add", "path": path, "value": int(percent)}]


def canary_patch(
    isvc: Mapping[str, Any],
    version: str,
    percent: int = DEFAULT_CANARY_PERCENT,
    *,
    stable_version: str | None = None,
) -> JsonPatch:
    """Start a canary: the spec points at ``version``, ``percent`` % of the traffic goes to it.

    Args:
        isvc: The current object.
        version: The canary version.
        percent: Canary traffic share, 1-99.
        stable_version: The version recorded as stable; by default the spec's current version (give the
            recorded one when replacing a running canary, whose spec version is that canary).

    Returns:
        The JSON patch.

    Raises:
        ValueError: Bad percent or version.
        RolloutError: The object cannot take a canary (no current version, same version, unknown layout).
    """
    if not 1 <= percent <= 99:
        raise ValueError(f"canary traffic percent must be between 1 and 99, not {percent}")
    state = read_state(isvc)
    if not state.model_version or not state.storage_uri:
        raise RolloutError(
            f"InferenceService {state.name}: {CONTAINER_NAME} has no {ENV_MODEL_VERSION}/{ENV_STORAGE_URI}"
        )
    if version == state.model_version:
        raise RolloutError(f"InferenceService {state.name} already serves version {version}")
    uri = storage_uri_for(state.storage_uri, version)
    return (
        _env_ops(isvc, {ENV_STORAGE_URI: uri, ENV_MODEL_VERSION: version})
        + _percent_op(isvc, percent)
        + annotation_ops(
            isvc,
            {
                ANNOTATION_STABLE: stable_version or state.model_version,
                ANNOTATION_CANARY: version,
                DEPLOY_VERSION_ANNOTATION: version,
            },
        )
    )


def promote_patch(isvc: Mapping[str, Any], version: str, annotations: Mapping[str, str]) -> JsonPatch:
    """Promote: ``version`` is the spec and takes 100 % (``canaryTrafficPercent`` removed).

    Args:
        isvc: The current object.
        version: The canary version being promoted (already the spec during a canary).
        annotations: Decision annotations to write.

    Returns:
        The JSON patch.
    """
    return _settle_patch(isvc, version, None, annotations)


def rollback_patch(isvc: Mapping[str, Any], stable_version: str, annotations: Mapping[str, str]) -> JsonPatch:
    """Roll back, first step: all traffic to the previously rolled-out revision, spec back to the stable version.

    ``canaryTrafficPercent: 0`` makes KServe send 100 % to the revision rolled out before the canary at once.
    The restored spec becomes a new revision at 0 %; :func:`finish_rollback_patch` hands it the traffic once
    it is ready.

    Args:
        isvc: The current object.
        stable_version: The version to restore.
        annotations: Decision annotations to write.

    Returns:
        The JSON patch.
    """
    return _settle_patch(isvc, stable_version, 0, annotations)


def _settle_patch(
    isvc: Mapping[str, Any], version: str, percent: int | None, annotations: Mapping[str, str]
) -> JsonPatch:
    """Point the spec at ``version`` (if it is not already), set or remove the canary percent, record the result.

    Args:
        isvc: The current object.
        version: The version that becomes (or stays) the spec and the stable version.
        percent: ``canaryTrafficPercent`` to set, or None to remove it.
        annotations: Decision annotations to write.

    Returns:
        The JSON patch.
    """
    state = read_state(isvc)
    if not state.storage_uri:
        raise RolloutError(f"InferenceService {state.name}: {CONTAINER_NAME} has no {ENV_STORAGE_URI}")
    ops: JsonPatch = []
    if state.model_version != version:
        ops += _env_ops(
            isvc, {ENV_STORAGE_URI: storage_uri_for(state.storage_uri, version), ENV_MODEL_VERSION: version}
        )
    stable = {ANNOTATION_STABLE: version, ANNOTATION_CANARY: None, DEPLOY_VERSION_ANNOTATION: version}
    return ops + _percent_op(isvc, percent) + annotation_ops(isvc, {**annotations, **stable})


def finish_rollback_patch(isvc: Mapping[str, Any]) -> JsonPatch:
    """Roll back, last step: remove ``canaryTrafficPercent`` (the ready, restored revision takes 100 %).

    Args:
        isvc: The current object.

    Returns:
        The JSON patch (empty when there is nothing to remove).
    """
    return _percent_op(isvc, None)


# ------------------------------------------------------------------------------------------- Kubernetes client


class CustomObjects(Protocol):
    """The two CustomObjectsApi calls the rollout uses (a fake in tests)."""

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        """Read a custom object."""

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any:
        """Patch a custom object."""


class InferenceServiceClient:
    """Get and JSON-patch one InferenceService.

    Args:
        namespace: Namespace.
        name: InferenceService name.
        reader: CustomObjectsApi (or a fake) for reads.
        patcher: CustomObjectsApi (or a fake) whose patches are sent as ``application/json-patch+json``.
    """

    def __init__(self, namespace: str, name: str, reader: CustomObjects, patcher: CustomObjects) -> None:
        self.namespace = namespace
        self.name = name
        self._reader = reader
        self._patcher = patcher

    @classmethod
    def connect(cls, namespace: str, name: str) -> InferenceServiceClient:
        """Connect with the in-cluster ServiceAccount, else the local kubeconfig.

        Args:
            namespace: Namespace.
            name: InferenceService name.

        Returns:
            The client.
        """
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                config.load_kube_config()
            except (config.ConfigException, OSError) as exc:
                raise RolloutError(f"no Kubernetes configuration (in-cluster or kubeconfig): {exc}") from exc
        return cls.from_configuration(namespace, name, client.Configuration.get_default_copy())

    @classmethod
    def from_configuration(cls, namespace: str, name: str, configuration: Any) -> InferenceServiceClient:
        """Build the client from a ``kubernetes.client.Configuration``.

        Args:
            namespace: Namespace.
            name: InferenceService name.
            configuration: API server address and credentials.

        Returns:
            The client.
        """
        from kubernetes import client

        reader = client.CustomObjectsApi(client.ApiClient(configuration=configuration))
        # CustomObjectsApi sends every PATCH as a merge patch, which would replace the whole containers list.
        # Default headers override the per-call Content-Type, so this client sends JSON patches instead.
        patch_client = client.ApiClient(configuration=configuration)
        patch_client.set_default_header("Content-Type", "application/json-patch+json")
        return cls(namespace, name, reader, client.CustomObjectsApi(patch_client))

    def _call(self, what: str, fn: Callable[[], Any]) -> dict[str, Any]:
        try:
            result = fn()
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status is None:
                raise
            hint = {
                403: "the identity lacks get/patch on inferenceservices.serving.kserve.io here",
                404: "no such InferenceService",
                409: "it changed meanwhile; run again",
                422: "a guarded field changed meanwhile (the patch's test failed); run again",
            }.get(int(status), getattr(exc, "reason", ""))
            raise RolloutError(
                f"{what} InferenceService {self.namespace}/{self.name} failed with HTTP {status}: {hint}"
            ) from exc
        return dict(result)

    def get(self) -> dict[str, Any]:
        """Read the InferenceService.

        Returns:
            The object.
        """
        return self._call(
            "reading",
            lambda: self._reader.get_namespaced_custom_object(GROUP, API_VERSION, self.namespace, PLURAL, self.name),
        )

    def patch(self, patch: JsonPatch) -> dict[str, Any]:
        """Apply a JSON patch.

        Args:
            patch: The operations.

        Returns:
            The patched object.
        """
        LOG.debug("patching %s/%s: %s", self.namespace, self.name, json.dumps(patch))
        return self._call(
            "patching",
            lambda: self._patcher.patch_namespaced_custom_object(
                GROUP, API_VERSION, self.namespace, PLURAL, self.name, patch
            ),
        )

    def wait_latest_ready(
        self,
        generation: int | None,
        timeout: float,
        *,
        interval: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> bool:
        """Wait until the spec of ``generation`` is observed and its revision is the latest ready one.

        Args:
            generation: ``metadata.generation`` after the patch (None: do not check it).
            timeout: Seconds to wait at most.
            interval: Seconds between reads.
            sleep: Sleep function (tests pass a fake).
            clock: Monotonic clock (tests pass a fake).

        Returns:
            True when ready before the deadline.
        """
        deadline = clock() + timeout
        while True:
            state = read_state(self.get())
            observed = generation is None or (state.observed_generation or 0) >= generation
            if (
                observed
                and state.latest_created_revision
                and state.latest_created_revision == state.latest_ready_revision
            ):
                return True
            if clock() >= deadline:
                return False
            sleep(interval)


# ----------------------------------------------------------------------------------------------------- actions


def decision_annotations(decision: RolloutDecision, record_key: str | None) -> dict[str, str]:
    """The annotations summarising a decision on the InferenceService.

    Args:
        decision: The decision.
        record_key: Store key of the full record.

    Returns:
        ``rollout-decision`` (promote, rollback, inconclusive), ``rollout-reasons`` (a JSON list of strings),
        ``rollout-time`` (ISO 8601) and ``rollout-record`` (the store key).
    """
    out = {
        ANNOTATION_DECISION: decision.decision.value,
        ANNOTATION_REASONS: json.dumps(list(decision.reasons)),
        ANNOTATION_TIME: decision.decided_at,
    }
    if record_key:
        out[ANNOTATION_RECORD] = record_key
    return out


def record_key(model_name: str, when: datetime | None = None) -> str:
    """Store key of a rollout record.

    Args:
        model_name: Served model name.
        when: Time of the record (now by default).

    Returns:
        ``rollouts/<model_name>/<YYYYmmddTHHMMSSffffffZ>.json`` (sortable).
    """
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    return f"{ROLLOUTS_PREFIX}{model_name}/{moment.strftime('%Y%m%dT%H%M%S%fZ')}.json"


def write_record(store: ArtifactStore, key: str, record: Mapping[str, Any]) -> None:
    """Write a rollout record (one atomic object write).

    Args:
        store: The store.
        key: Its key (see :func:`record_key`).
        record: The record.
    """

    def default(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    text = json.dumps(_finite(record), indent=2, sort_keys=True, default=default)
    store.write_bytes(key, text.encode())
    LOG.info("rollout record written to %s", store.uri(key))


def _finite(value: Any) -> Any:
    """NaN and infinities become None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def latest_records(store: ArtifactStore, model_name: str, limit: int = 1) -> list[dict[str, Any]]:
    """The most recent rollout records of a model, newest first.

    Args:
        store: The store.
        model_name: Served model name.
        limit: How many.

    Returns:
        The records.
    """
    keys = [k for k in store.list(f"{ROLLOUTS_PREFIX}{model_name}/") if k.endswith(".json")]
    return [json.loads(store.read_bytes(k)) for k in sorted(keys, reverse=True)[:limit]]


@dataclass(frozen=True)
class StartResult:
    """What :func:`start_canary` did.

    Attributes:
        stable_version: Version that keeps (100 - percent) %.
        canary_version: New version.
        percent: Canary share.
        patch: The JSON patch (applied unless a dry run).
        applied: Whether it was applied.
    """

    stable_version: str
    canary_version: str
    percent: int
    patch: JsonPatch
    applied: bool


def start_canary(
    isvc: InferenceServiceClient,
    version: str,
    *,
    percent: int = DEFAULT_CANARY_PERCENT,
    registry: ModelRegistry | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> StartResult:
    """Start a canary of ``version`` on the InferenceService.

    Args:
        isvc: The InferenceService.
        version: The new version (must be complete in the registry when one is given).
        percent: Canary traffic share, 1-99.
        registry: The model registry: checks the version and moves the ``canary`` alias.
        force: Replace a canary already running.
        dry_run: Build the patch, change nothing.

    Returns:
        What was (or would be) done.

    Raises:
        RolloutError: A canary runs already (without ``force``), or the version is unknown.
    """
    if registry is not None and version not in registry.versions():
        raise RolloutError(
            f"version {version!r} of {registry.model_name} is not complete in {registry.store.uri()}; "
            "publish it first (fraud models list shows what is there)"
        )
    current = isvc.get()
    state = read_state(current)
    if state.canary_running and not force:
        raise RolloutError(
            f"a canary of {state.canary_version or state.model_version} runs already at {state.canary_percent} % "
            "on {ns}/{name}; analyse, promote or roll it back first (or pass --force)".format(
                ns=isvc.namespace, name=isvc.name
            )
        )
    # Replacing a running canary: the stable version stays the one rolled out before it.
    stable = state.stable_version if (state.canary_running and state.stable_version) else state.model_version
    patch = canary_patch(current, version, percent, stable_version=stable)
    if dry_run:
        return StartResult(str(stable), version, percent, patch, False)
    isvc.patch(patch)
    if registry is not None:
        registry.set_alias("canary", version)
    LOG.info("canary %s at %d %% beside %s on %s/%s", version, percent, stable, isvc.namespace, isvc.name)
    return StartResult(str(stable), version, percent, patch, True)


def resolve_versions(
    state: ServiceState | None,
    registry: ModelRegistry | None,
    *,
    stable_version: str | None = None,
    canary_version: str | None = None,
) -> tuple[str, str]:
    """Work out the stable and canary versions.

    Explicit versions win; then the InferenceService (the annotations written at the start, and the spec's
    version while a canary runs); then the store aliases: ``canary``, and ``production`` (or, when it already
    names the canary, the version it pointed at before).

    Args:
        state: The InferenceService's state, if a cluster is used.
        registry: The registry, if a store is used.
        stable_version: Explicit stable version.
        canary_version: Explicit canary version.

    Returns:
        ``(stable, canary)``.

    Raises:
        RolloutError: Either cannot be determined, or both are the same.
    """
    stable, canary = stable_version, canary_version
    if state is not None:
        stable = stable or state.stable_version
        if state.canary_running:
            canary = canary or state.canary_version or state.model_version
    if registry is not None:
        canary = canary or (registry.get_alias("canary") or {}).get("version")
        production = registry.get_alias("production") or {}
        if not stable and production:
            # The training pipeline may have moved `production` to the new version before deploying it as a
            # canary: the stable version is then the one the alias pointed at before.
            stable = production.get("previous") if production.get("version") == canary else production.get("version")
    if not stable or not canary:
        raise RolloutError(
            f"cannot tell the versions apart (stable {stable!r}, canary {canary!r}): no canary is running; "
            "pass --stable-version and --canary-version"
        )
    if stable == canary:
        raise RolloutError(f"stable and canary are both {stable!r}: no canary to judge")
    return str(stable), str(canary)


def apply_decision(
    decision: RolloutDecision,
    *,
    isvc: InferenceServiceClient | None,
    registry: ModelRegistry | None,
    store: ArtifactStore,
    wait_seconds: float = 300.0,
    poll_interval: float = 5.0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Carry a decision out and record it.

    Promote: canary to 100 % and the store alias ``production`` to it. Rollback: the stable version back at
    100 % (pinned at once, then the restored revision once ready) and ``production`` back to it if it had
    moved. Inconclusive: only the annotations. The ``canary`` alias is removed after promote and rollback.
    The record (decision, checks, actions, errors) is written to the store even when an action fails.

    Args:
        decision: The decision.
        isvc: The InferenceService, or None to change only the store.
        registry: The registry (aliases), or None.
        store: Where the record goes.
        wait_seconds: How long a rollback waits for the restored revision before leaving the traffic pinned.
        poll_interval: Seconds between readiness reads.
        extra: More fields for the record (e.g. the Prometheus URL).

    Returns:
        The record as written.
    """
    key = record_key(decision.model_name)
    annotations = decision_annotations(decision, key)
    record: dict[str, Any] = {
        **(extra or {}),
        **decision.to_dict(),
        "record_key": key,
        "inference_service": f"{isvc.namespace}/{isvc.name}" if isvc else None,
        "actions": [],
        "completed": False,
        "error": None,
    }
    actions: list[dict[str, Any]] = record["actions"]
    try:
        if isvc is not None:
            current = isvc.get()
            state = read_state(current)
            record["service_before"] = state.to_dict()
            if decision.decision is Decision.PROMOTE:
                if not state.canary_running:
                    raise RolloutError(f"no canary runs on {isvc.namespace}/{isvc.name}: nothing to promote")
                if (
                    state.latest_created_revision
                    and state.latest_ready_revision
                    and state.latest_created_revision != state.latest_ready_revision
                ):
                    raise RolloutError(
                        f"the canary's revision {state.latest_created_revision} is not ready "
                        f"(latest ready: {state.latest_ready_revision}); not promoting"
                    )
                patch = promote_patch(current, decision.canary_version, annotations)
                isvc.patch(patch)
                actions.append({"action": "promote", "patch": patch})
            elif decision.decision is Decision.ROLLBACK:
                patch = rollback_patch(current, decision.stable_version, annotations)
                patched = isvc.patch(patch)
                actions.append({"action": "pin-stable", "patch": patch})
                generation = (patched.get("metadata") or {}).get("generation")
                if isvc.wait_latest_ready(generation, wait_seconds, interval=poll_interval):
                    finish = finish_rollback_patch(isvc.get())
                    if finish:
                        isvc.patch(finish)
                    actions.append({"action": "release-pin", "patch": finish})
                else:
                    raise RolloutError(
                        f"the restored revision of {decision.stable_version} was not ready within "
                        f"{wait_seconds:.0f} s; "
                        "all traffic stays pinned on the previous revision (canaryTrafficPercent 0). "
                        "Run `fraud rollout rollback` again once it is ready"
                    )
            else:
                patch = annotation_ops(current, annotations)
                isvc.patch(patch)
                actions.append({"action": "annotate", "patch": patch})
        if registry is not None and decision.decision is not Decision.INCONCLUSIVE:
            target = decision.canary_version if decision.decision is Decision.PROMOTE else decision.stable_version
            production = (registry.get_alias("production") or {}).get("version")
            if production != target:
                registry.set_alias("production", target)
                actions.append({"action": "alias", "alias": "production", "version": target})
            if registry.get_alias("canary") is not None:
                registry.store.delete(f"{registry.base}aliases/canary.json")
                actions.append({"action": "alias-removed", "alias": "canary"})
        record["completed"] = True
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        write_record(store, key, record)
    LOG.info("%s of %s carried out; record %s", decision.decision.value, decision.canary_version, key)
    return record


def manual_decision(
    decision: Decision,
    *,
    model_name: str,
    stable_version: str,
    canary_version: str,
    reason: str,
) -> RolloutDecision:
    """A decision taken by a person (``fraud rollout promote``/``rollback``), with their reason.

    Args:
        decision: promote or rollback.
        model_name: Served model name.
        stable_version: Stable version.
        canary_version: Canary version.
        reason: Why.

    Returns:
        The decision, without checks.
    """
    if decision is Decision.INCONCLUSIVE:
        raise ValueError("a manual decision is promote or rollback")
    return RolloutDecision(
        decision=decision,
        model_name=model_name,
        stable_version=stable_version,
        canary_version=canary_version,
        reasons=(f"manual {decision.value}: {reason}",),
        source="manual",
    )
