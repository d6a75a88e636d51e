"""Canary analysis: thresholds, per-version metrics, checks and the decision."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

LOG = logging.getLogger(__name__)
_DURATION_RE = re.compile(r"(\d+)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


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
