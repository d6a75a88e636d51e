"""Where the Application Insights connection string comes from, and that errors never echo it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraud_detection.monitoring.appinsights import (
    CONNECTION_STRING_ENV,
    CONNECTION_STRING_FILE_ENV,
    DEFAULT_INGESTION_HOST,
    AppInsightsConfigError,
    configure_app_insights,
    connection_string_from,
    ingestion_host,
)

GOOD = "InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=https://westeurope-5.in.example/"


def test_nothing_configured_means_off() -> None:
    assert connection_string_from({}) is None
    assert connection_string_from({CONNECTION_STRING_ENV: "  "}) is None
    assert configure_app_insights(None, service_name="x") is None
    assert configure_app_insights("", service_name="x") is None


def test_the_variable_wins_over_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "cs"
    secret.write_text(GOOD.replace("0000-4000", "1111-4000") + "\n")
    assert connection_string_from({CONNECTION_STRING_FILE_ENV: str(secret)}) == GOOD.replace("0000-4000", "1111-4000")
    assert connection_string_from({CONNECTION_STRING_ENV: GOOD, CONNECTION_STRING_FILE_ENV: str(secret)}) == GOOD


def test_an_unreadable_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(AppInsightsConfigError, match="missing"):
        connection_string_from({CONNECTION_STRING_FILE_ENV: str(tmp_path / "missing")})


def test_ingestion_host_is_what_gets_logged() -> None:
    assert ingestion_host(GOOD) == "westeurope-5.in.example"
    assert ingestion_host("InstrumentationKey=abc") == DEFAULT_INGESTION_HOST


def test_a_malformed_string_is_refused_without_being_echoed() -> None:
    secret = "Zm9vYmFyYmF6cXV4-no-key-here"
    with pytest.raises(AppInsightsConfigError) as info:
        configure_app_insights(secret, service_name="x")
    assert secret not in str(info.value)
    with pytest.raises(AppInsightsConfigError, match="sampling"):
        configure_app_insights(GOOD, service_name="x", sampling_ratio=1.5)
