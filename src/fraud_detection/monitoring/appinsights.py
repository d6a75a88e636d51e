"""Application Insights through OpenTelemetry (the Azure Monitor distro), off unless a connection string is given.

The entry points (``python -m serving``, the drift CronJob) take the connection string from
``APPLICATIONINSIGHTS_CONNECTION_STRING`` or from the file ``FRAUD_APPINSIGHTS_CONNECTION_STRING_FILE`` names (the
chart's Key Vault mount on AKS; :func:`connection_string_from`) and pass it to :func:`configure_app_insights`.
Without one nothing is imported and no OpenTelemetry provider is installed.
With one, traces go to Application Insights: the server's requests (REST and gRPC) as request telemetry, calls to
Blob storage, S3 and other HTTP services as dependencies, the drift job's run as one span. Logs and metrics are not
exported (Container Insights collects the logs, Prometheus the metrics). The connection string itself is never
logged: only the ingestion host is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOG = logging.getLogger(__name__)

#: The variable Azure's SDKs and the chart use for the connection string.
CONNECTION_STRING_ENV = "APPLICATIONINSIGHTS_CONNECTION_STRING"
#: A file holding it instead (the Secrets Store CSI driver's mount of the Key Vault secret).
CONNECTION_STRING_FILE_ENV = "FRAUD_APPINSIGHTS_CONNECTION_STRING_FILE"
#: Where telemetry goes when the connection string names no ingestion endpoint.
DEFAULT_INGESTION_HOST = "dc.services.visualstudio.com"
#: Libraries the distro instruments here (outgoing HTTP and the Azure SDK); FastAPI and gRPC are instrumented on the
#: server's own app (serving/telemetry.py), Django, Flask and psycopg2 are not used.
INSTRUMENTED = ("azure_sdk", "requests", "urllib", "urllib3", "httpx")
_NOT_INSTRUMENTED = ("django", "fastapi", "flask", "psycopg2", "httpx2")
#: Signals not exported. The distro (1.8) ignores its disable_logging/disable_metrics arguments and reads these
#: variables instead; a value already set (e.g. by the chart) wins.
_OFF_SIGNALS = {"OTEL_LOGS_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}
#: The exporter logs every transmission at INFO (with the response headers): quiet unless debugging.
_EXPORTER_LOGGER = "azure.monitor.opentelemetry.exporter"


class AppInsightsConfigError(ValueError):
    """A connection string that cannot be used (the message never contains it)."""


def connection_string_from(env: Mapping[str, str]) -> str | None:
    """The connection string an environment configures: the variable, else the file it names, else None.

    Args:
        env: The process environment.

    Returns:
        The connection string, or None when telemetry is off.

    Raises:
        AppInsightsConfigError: The file is named but cannot be read.
    """
    value = env.get(CONNECTION_STRING_ENV, "").strip()
    if value:
        return value
    path = env.get(CONNECTION_STRING_FILE_ENV, "").strip()
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise AppInsightsConfigError(f"{CONNECTION_STRING_FILE_ENV}: cannot read {path}: {exc.strerror}") from exc


def parse_connection_string(connection_string: str) -> dict[str, str]:
    """The fields of a connection string (``Key=value;...``), keys lower-cased.

    Args:
        connection_string: The connection string.

    Returns:
        Its fields.

    Raises:
        AppInsightsConfigError: It has no ``InstrumentationKey``.
    """
    fields = {}
    for part in connection_string.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            fields[key.strip().lower()] = value.strip()
    if not fields.get("instrumentationkey"):
        raise AppInsightsConfigError(f"{CONNECTION_STRING_ENV} has no InstrumentationKey field")
    return fields


def ingestion_host(connection_string: str) -> str:
    """The host telemetry is sent to (safe to log, unlike the connection string).

    Args:
        connection_string: The connection string.

    Returns:
        The ingestion endpoint's host (with port, if any).
    """
    endpoint = parse_connection_string(connection_string).get("ingestionendpoint", "")
    return urlsplit(endpoint).netloc or DEFAULT_INGESTION_HOST


@dataclass(frozen=True)
class AppInsights:
    """Telemetry to Application Insights, configured.

    Attributes:
        service_name: ``service.name`` of the process (the cloud role name in Application Insights).
        ingestion_host: Where the telemetry goes.
    """

    service_name: str
    ingestion_host: str

    @contextmanager
    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """A span around a unit of work (an exception is recorded on it and re-raised).

        Args:
            name: Span name.
            attributes: Initial attributes.

        Yields:
            The span (``set_attribute`` adds more).
        """
        from opentelemetry import trace

        tracer = trace.get_tracer("fraud_detection")
        with tracer.start_as_current_span(name, attributes=dict(attributes or {})) as span:
            yield span

    def flush(self, timeout_millis: int = 10_000) -> bool:
        """Export the spans still buffered (a CronJob must before it exits).

        Args:
            timeout_millis: Longest wait.

        Returns:
            Whether everything was exported in time.
        """
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        force_flush = getattr(provider, "force_flush", None)
        return bool(force_flush(timeout_millis)) if force_flush else True


def configure_app_insights(
    connection_string: str | None,
    *,
    service_name: str,
    service_version: str = "",
    sampling_ratio: float | None = None,
) -> AppInsights | None:
    """Send traces to Application Insights when a connection string is given; do nothing otherwise.

    Args:
        connection_string: The Application Insights connection string, or None/empty (telemetry off).
        service_name: ``service.name`` (the cloud role name).
        service_version: ``service.version``.
        sampling_ratio: Share of traces kept, in (0, 1]; None: the distro's default (rate-limited sampling, or
            ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG``).

    Returns:
        The configured telemetry, or None when it is off (no connection string, or the ``appinsights`` extra is
        not installed).

    Raises:
        AppInsightsConfigError: The connection string or the sampling ratio is invalid.
    """
    if not connection_string or not connection_string.strip():
        LOG.debug("Application Insights off (%s not set)", CONNECTION_STRING_ENV)
        return None
    host = ingestion_host(connection_string)
    if sampling_ratio is not None and not 0.0 < sampling_ratio <= 1.0:
        raise AppInsightsConfigError(f"sampling ratio must be in (0, 1], not {sampling_ratio}")
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        LOG.warning(
            "%s is set but azure-monitor-opentelemetry is not installed (extra 'appinsights'): telemetry off",
            CONNECTION_STRING_ENV,
        )
        return None
    attributes = {"service.name": service_name, "service.namespace": "fraud-detection"}
    if service_version:
        attributes["service.version"] = service_version
    for name, value in _OFF_SIGNALS.items():
        os.environ.setdefault(name, value)
    exporter_log = logging.getLogger(_EXPORTER_LOGGER)
    if exporter_log.level == logging.NOTSET:
        exporter_log.setLevel(logging.WARNING)
    options: dict[str, Any] = {
        "connection_string": connection_string.strip(),
        "resource": Resource.create(attributes),
        "disable_logging": True,
        "disable_metrics": True,
        "enable_live_metrics": False,
        "enable_performance_counters": False,
        "instrumentation_options": {
            **{name: {"enabled": True} for name in INSTRUMENTED},
            **{name: {"enabled": False} for name in _NOT_INSTRUMENTED},
        },
    }
    if sampling_ratio is not None:
        options["sampling_ratio"] = sampling_ratio
    configure_azure_monitor(**options)
    LOG.info("Application Insights on: traces of %s to %s", service_name, host)
    return AppInsights(service_name=service_name, ingestion_host=host)
