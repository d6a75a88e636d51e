"""The Spark Operator job's cluster settings: what the chart's ``spark:`` values render into a mounted ConfigMap.

The chart (``templates/configmap-spark.yaml``) writes them as one JSON file; the feature step reads it through
:func:`load_settings`. Nothing here is secret: the store keys reach the Spark pods by ``secretKeyRef`` only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

#: Where the feature step finds the settings file (the Spark ConfigMap mounted by ``build_pipeline``).
SETTINGS_DIR = "/etc/fraud-detection/spark"
SETTINGS_FILE = "settings.json"
#: Keys of the store Secret the Spark pods read as environment variables (the pipeline Secret's keys).
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class SparkSettingsError(ValueError):
    """The Spark Operator settings are missing or malformed; the message names the field."""


@dataclass(frozen=True)
class SparkSettings:
    """Cluster settings of the feature SparkApplication.

    Attributes:
        image: Spark image with Python, the ``fraud_detection`` wheel, pyspark and Hadoop's S3A jars.
        namespace: Namespace of the SparkApplication (one the Spark Operator watches; the store Secret is there).
        service_account: ServiceAccount of the driver (the chart's Spark ServiceAccount and Role).
        main_application_file: The driver's entry point (:mod:`components.spark_operator.driver`) in the image.
        spark_version: Spark version of the image.
        image_pull_policy: ``Always``, ``IfNotPresent`` or ``Never``.
        driver_cores: Driver CPU cores.
        driver_memory: Driver JVM heap (Spark notation, e.g. ``2g``).
        executor_cores: CPU cores per executor.
        executor_memory: JVM heap per executor.
        executor_instances: Number of executors.
        node_selector: Node labels driver and executors select (the training pool), ``{}`` for none.
        tolerations: Tolerations of driver and executors (Kubernetes Toleration objects).
        secret_name: Secret with :data:`SECRET_KEYS` for S3; empty for none (workload identity).
        s3_endpoint: S3 endpoint URL (``http://minio:9000``) for S3A; empty for AWS S3.
        time_to_live_seconds: The operator deletes a finished application after this long.
        timeout_seconds: How long the feature step waits for the application to finish.
        poll_seconds: Seconds between two reads of the application's status.
    """

    image: str
    namespace: str
    service_account: str
    main_application_file: str = "local:///opt/fraud-detection/spark_features.py"
    spark_version: str = "4.3.0"
    image_pull_policy: str = "IfNotPresent"
    driver_cores: int = 1
    driver_memory: str = "2g"
    executor_cores: int = 1
    executor_memory: str = "4g"
    executor_instances: int = 2
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    secret_name: str = ""
    s3_endpoint: str = ""
    time_to_live_seconds: int = 3600
    timeout_seconds: int = 7200
    poll_seconds: float = 10.0


_CAMEL = {
    "image": "image",
    "namespace": "namespace",
    "serviceAccount": "service_account",
    "mainApplicationFile": "main_application_file",
    "sparkVersion": "spark_version",
    "imagePullPolicy": "image_pull_policy",
    "driverCores": "driver_cores",
    "driverMemory": "driver_memory",
    "executorCores": "executor_cores",
    "executorMemory": "executor_memory",
    "executorInstances": "executor_instances",
    "secretName": "secret_name",
    "s3Endpoint": "s3_endpoint",
    "timeToLiveSeconds": "time_to_live_seconds",
    "timeoutSeconds": "timeout_seconds",
    "pollSeconds": "poll_seconds",
}
_REQUIRED = ("image", "namespace", "serviceAccount")


def parse_toleration(text: str) -> dict[str, Any]:
    """A toleration from the pipeline's node-pool syntax ``key[=value][:Effect]`` (chart ``pipeline.nodePool``).

    Args:
        text: E.g. ``kubernetes.azure.com/scalesetpriority=spot:NoSchedule``.

    Returns:
        The Kubernetes Toleration (operator ``Equal`` with a value, else ``Exists``).

    Raises:
        SparkSettingsError: Malformed.
    """
    taint, _, effect = text.partition(":")
    key, _, value = taint.partition("=")
    if not key or effect not in ("", *_EFFECTS):
        raise SparkSettingsError(f"toleration {text!r}: expected key[=value][:Effect], Effect one of {_EFFECTS}")
    toleration: dict[str, Any] = {"key": key, "operator": "Equal" if value else "Exists"}
    if value:
        toleration["value"] = value
    if effect:
        toleration["effect"] = effect
    return toleration


def settings_from_mapping(raw: Mapping[str, Any]) -> SparkSettings:
    """Settings from the chart's JSON (camelCase keys; ``nodeSelector`` and ``toleration`` in the node-pool syntax).

    Args:
        raw: The parsed JSON.

    Returns:
        The settings.

    Raises:
        SparkSettingsError: A required field is missing or empty, a field is unknown or has the wrong type.
    """
    known = {*_CAMEL, "nodeSelector", "toleration"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SparkSettingsError(f"Spark settings: unknown field(s) {', '.join(unknown)}")
    missing = [k for k in _REQUIRED if not raw.get(k)]
    if missing:
        raise SparkSettingsError(f"Spark settings: missing {', '.join(missing)}")
    types = {f.name: f.type for f in fields(SparkSettings)}
    values: dict[str, Any] = {}
    for key, name in _CAMEL.items():
        if key not in raw or raw[key] in (None, ""):
            continue
        value = raw[key]
        wanted = str(types[name])
        if (wanted == "int" and (not isinstance(value, int) or isinstance(value, bool) or value < 1)) or (
            wanted == "float" and (not isinstance(value, int | float) or value <= 0)
        ):
            raise SparkSettingsError(f"Spark settings: {key} must be a positive number, got {value!r}")
        if wanted == "str" and not isinstance(value, str):
            raise SparkSettingsError(f"Spark settings: {key} must be a string, got {value!r}")
        values[name] = value
    selector = raw.get("nodeSelector") or ""
    if selector:
        key, sep, value = str(selector).partition("=")
        if not (key and sep and value):
            raise SparkSettingsError(f"Spark settings: nodeSelector {selector!r}: expected key=value")
        values["node_selector"] = {key: value}
    toleration = raw.get("toleration") or ""
    if toleration:
        if not selector:
            raise SparkSettingsError("Spark settings: a toleration needs a nodeSelector (the pool to run on)")
        values["tolerations"] = (parse_toleration(str(toleration)),)
    return SparkSettings(**values)


def load_settings(directory: str | Path = SETTINGS_DIR) -> SparkSettings:
    """Read the settings file the chart renders (``<directory>/settings.json``).

    Args:
        directory: Where the Spark ConfigMap is mounted.

    Returns:
        The settings.

    Raises:
        SparkSettingsError: No file (the chart's ``spark.enabled`` is off, or the pipeline was compiled without
            ``spark_operator=True``), or a malformed one.
    """
    path = Path(directory) / SETTINGS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SparkSettingsError(
            f"feature_engine=spark-operator: no Spark Operator settings at {path} (enable the chart's spark values "
            "and compile the pipeline with spark_operator=True)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise SparkSettingsError(f"Spark settings {path}: unreadable: {exc}") from exc
    if not isinstance(raw, dict):
        raise SparkSettingsError(f"Spark settings {path}: expected a JSON object")
    return settings_from_mapping(raw)
