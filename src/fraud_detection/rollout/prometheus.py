"""Prometheus over its HTTP API: per-version queries and their metrics."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

from fraud_detection.rollout.analysis import VersionMetrics, parse_duration
from fraud_detection.rollout.errors import PrometheusError


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
