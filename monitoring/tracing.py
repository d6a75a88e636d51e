"""Application Insights for the drift CronJob: one span per run, flushed before the process exits.

Off unless ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set or ``FRAUD_APPINSIGHTS_CONNECTION_STRING_FILE`` names a
file holding it (the chart mounts it from Key Vault on AKS). With it, the
run is one span (``drift-job``) and the job's calls to Blob storage, S3 and the Pushgateway are its dependencies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version

from fraud_detection.monitoring.appinsights import (
    AppInsightsConfigError,
    configure_app_insights,
    connection_string_from,
)

LOG = logging.getLogger(__name__)

#: ``service.name`` (cloud role name) unless ``OTEL_SERVICE_NAME`` says otherwise.
SERVICE_NAME = "fraud-detection-drift"
#: Name of the span around one run.
SPAN_NAME = "drift-job"


def run_traced(run: Callable[[], int], env: Mapping[str, str]) -> int:
    """Run the job, inside a span sent to Application Insights when a connection string is configured.

    Args:
        run: The job; returns the exit status.
        env: The environment (``os.environ``).

    Returns:
        The job's exit status; 2 when the telemetry configuration is invalid (the job does not run).
    """
    try:
        try:
            package_version = version("fraud-detection")
        except PackageNotFoundError:
            package_version = ""
        telemetry = configure_app_insights(
            connection_string_from(env),
            service_name=env.get("OTEL_SERVICE_NAME") or SERVICE_NAME,
            service_version=package_version,
            # One span an hour: keep every one (the distro's default rate-limited sampler may drop a lone span).
            sampling_ratio=1.0,
        )
    except AppInsightsConfigError as exc:
        LOG.error("%s", exc)
        return 2
    if telemetry is None:
        return run()
    from opentelemetry.trace import Status, StatusCode

    try:
        with telemetry.span(SPAN_NAME) as span:
            status = run()
            span.set_attribute("process.exit_code", status)
            if status != 0:
                span.set_status(Status(StatusCode.ERROR, f"exit status {status}"))
            return status
    finally:
        if not telemetry.flush():
            LOG.warning("Application Insights: spans not all exported before exit")
