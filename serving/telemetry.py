"""Application Insights for the model server: request telemetry of REST and gRPC, off unless configured.

:func:`setup_app_insights` is called by ``python -m serving`` before the servers start. Without a connection string
(``APPLICATIONINSIGHTS_CONNECTION_STRING``, or the file ``FRAUD_APPINSIGHTS_CONNECTION_STRING_FILE`` names) it does
nothing. With it set, the Azure Monitor distro is configured
(:mod:`fraud_detection.monitoring.appinsights`), KServe's FastAPI app gets OpenTelemetry's ASGI middleware (one
server span, i.e. one Application Insights request, per HTTP request; probes and ``/metrics`` excluded) and
``grpc.aio`` servers created afterwards get OpenTelemetry's interceptor (one per RPC).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fraud_detection.monitoring.appinsights import (
    AppInsights,
    AppInsightsConfigError,
    configure_app_insights,
    connection_string_from,
)

LOG = logging.getLogger(__name__)

#: ``service.name`` (cloud role name) unless ``OTEL_SERVICE_NAME`` says otherwise.
SERVICE_NAME = "fraud-detection-serve"
#: Sampling ratio variable of the chart (``appInsights.samplingRatio``).
SAMPLING_RATIO_ENV = "FRAUD_APPINSIGHTS_SAMPLING_RATIO"
#: Routes not traced: probes and the Prometheus scrape (regular expressions searched in the URL).
EXCLUDED_URLS = r"/metrics$,/v2/health/,/v2/models/[^/]+/ready$,/v1/models/[^/:]+$"
#: gRPC methods not traced (the health and readiness RPCs the kubelet and clients poll).
EXCLUDED_RPCS = ("ServerLive", "ServerReady", "ModelReady")


def _package_version() -> str:
    try:
        return version("fraud-detection")
    except PackageNotFoundError:
        return ""


def setup_app_insights(env: Mapping[str, str], app: Any) -> AppInsights | None:
    """Configure Application Insights from the environment and instrument the server (before it starts).

    Args:
        env: The environment (``os.environ``).
        app: KServe's FastAPI app (``kserve.model_server.app``).

    Returns:
        The telemetry, or None when it is off.

    Raises:
        AppInsightsConfigError: The connection string or sampling ratio is invalid.
    """
    ratio = env.get(SAMPLING_RATIO_ENV, "").strip()
    try:
        sampling_ratio = float(ratio) if ratio else None
    except ValueError as exc:
        raise AppInsightsConfigError(f"{SAMPLING_RATIO_ENV} must be a number in (0, 1], not {ratio!r}") from exc
    telemetry = configure_app_insights(
        connection_string_from(env),
        service_name=env.get("OTEL_SERVICE_NAME") or SERVICE_NAME,
        service_version=_package_version(),
        sampling_ratio=sampling_ratio,
    )
    if telemetry is None:
        return None
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # One span per request: the ASGI send/receive sub-spans would triple the telemetry for nothing.
    FastAPIInstrumentor.instrument_app(app, excluded_urls=EXCLUDED_URLS, exclude_spans=["receive", "send"])
    _instrument_grpc()
    return telemetry


def _instrument_grpc() -> None:
    """Trace every RPC of ``grpc.aio`` servers created from now on, except health and readiness."""
    try:
        from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer, filters
    except ImportError:  # the extra without the gRPC instrumentation
        LOG.warning("opentelemetry-instrumentation-grpc is not installed: gRPC calls are not traced")
        return
    probes = filters.any_of(*(filters.method_name(name) for name in EXCLUDED_RPCS))
    GrpcAioInstrumentorServer(filter_=filters.negate(probes)).instrument()
