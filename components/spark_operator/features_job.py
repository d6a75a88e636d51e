"""The feature step on the Spark Operator: stage the validated data in the store, run the job, fetch the days.

The Spark pods cannot read the step's local artifact, so the validated Parquet is copied to the store
(``<store>/spark/<application>/input/``); the driver writes the day partitions next to it
(``.../features/``), which are copied into the step's output artifact for the training step, and the staged
input is deleted. Store access goes through ``fraud_detection.store`` (``FRAUD_STORE_URI`` and its keys).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from components.spark_operator.application import application_name, build_application, spark_uri
from components.spark_operator.settings import SETTINGS_DIR, load_settings
from components.spark_operator.submit import connect, run_application
from fraud_detection.store.base import ArtifactStore
from fraud_detection.store.staging import fetch_prefix, stage_file

INPUT_KEY, OUTPUT_KEY = "input/validated.parquet", "features/"


@dataclass(frozen=True)
class Staging:
    """Where one application's input and output live in the store.

    Attributes:
        prefix: ``spark/<application>/`` under the store's root.
        input_uri: The staged input as Spark reads it (``s3a://`` or ``abfss://``).
        output_uri: The output directory as Spark writes it.
    """

    prefix: str
    input_uri: str
    output_uri: str


def staging(store: ArtifactStore, name: str, azure_account_url: str | None = None) -> Staging:
    """The store keys and Spark URIs of application ``name``.

    Args:
        store: The store (s3:// or az://).
        name: Application name.
        azure_account_url: The Blob account URL (az:// stores).

    Returns:
        The staging locations.

    Raises:
        ValueError: The store is a local directory (the Spark pods cannot read it).
    """
    prefix = f"spark/{name}/"
    return Staging(
        prefix,
        spark_uri(store.uri(prefix + INPUT_KEY), azure_account_url),
        spark_uri(store.uri(prefix + OUTPUT_KEY.rstrip("/")), azure_account_url),
    )


def stage_input(store: ArtifactStore, where: Staging, validated: Path) -> None:
    """Copy the validated Parquet to the staged input key (``fraud_detection.store.staging``)."""
    stage_file(store, Path(validated), where.prefix + INPUT_KEY)


def fetch_output(store: ArtifactStore, where: Staging, features: Path) -> Path:
    """Copy the day partitions the driver wrote into the step's output directory.

    Raises:
        KeyError: The driver wrote nothing there.
    """
    return fetch_prefix(store, where.prefix + OUTPUT_KEY, Path(features))


def run_feature_job(
    validated: Path,
    features: Path,
    run_key: str,
    label_delay_days: int = 7,
    settings_dir: str | Path = SETTINGS_DIR,
) -> str:
    """Build the features of ``validated`` with a SparkApplication and write the day partitions to ``features``.

    Args:
        validated: The validated transactions (the step's input artifact, one Parquet file).
        features: Destination directory (the step's output artifact).
        run_key: Identifies the run (the output artifact's URI): the application's name derives from it.
        label_delay_days: The label delay.
        settings_dir: Where the chart's Spark settings are mounted.

    Returns:
        The store URI the driver wrote the day partitions to.

    Raises:
        SparkSettingsError: No or bad Spark settings.
        SparkApplicationError: The application failed, was refused or timed out.
        ValueError: The store is a local directory (the Spark pods cannot read it).
        StoreError: The store refused a copy.
    """
    from fraud_detection.settings import PipelineSettings
    from fraud_detection.store.uri import open_configured_store

    settings = load_settings(settings_dir)
    pipeline = PipelineSettings()
    settings = replace(settings, s3_endpoint=settings.s3_endpoint or pipeline.s3_endpoint or "")
    store = open_configured_store(pipeline)
    name = application_name(run_key)
    where = staging(store, name, pipeline.azure_storage_account_url)  # fails early on a local store
    stage_input(store, where, validated)
    try:
        manifest = build_application(name, settings, where.input_uri, where.output_uri, label_delay_days)
        run_application(connect(), manifest, settings.timeout_seconds, settings.poll_seconds)
    finally:
        store.delete(where.prefix + INPUT_KEY)
    fetch_output(store, where, features)
    return store.uri(where.prefix + OUTPUT_KEY)
