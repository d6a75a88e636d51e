"""Runtime settings from the environment (prefix ``FRAUD_``): one class per process, constructed by its entry point.

* :class:`PipelineSettings`: the training pipeline's steps and the ``fraud`` training, model and pipeline commands;
* :class:`ServeSettings`: the model server (``python -m serving``);
* :class:`DriftSettings`: the drift job (``python -m monitoring.drift_job``, ``fraud drift``, ``fraud labels``);
* :class:`RolloutSettings`: ``fraud rollout``.

All share the store fields of :class:`StoreSettings`. The classes only hold values: the domain opens stores and
registries from them (``fraud_detection.store.uri.open_configured_store``,
``fraud_detection.model.registry.open_registry``). This module imports nothing else from the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar, cast

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class StoreSettings(BaseSettings):
    """The artifact store and the model in it; secrets (S3 keys) come only from the environment, never logged."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_", extra="ignore", protected_namespaces=())

    store_uri: str = Field(default=".fraud/store", description="directory, s3://bucket/prefix or az://container/prefix")
    s3_endpoint: str | None = Field(default=None, description="S3 API endpoint, e.g. http://minio:9000")
    s3_region: str | None = None
    aws_access_key_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID", "FRAUD_S3_ACCESS_KEY")
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY", "FRAUD_S3_SECRET_KEY")
    )
    azure_storage_account_url: str | None = Field(
        default=None,
        description="Blob account endpoint for az:// store URIs, e.g. https://acct.blob.core.windows.net "
        "(credentials: AZURE_STORAGE_CONNECTION_STRING, else workload identity)",
    )
    model_name: str = "fraud-detector"
    cache_dir: str = ".fraud/cache"
    store_timeout_seconds: float = Field(
        default=20.0, gt=0, description="connect/read timeout of one S3 or Azure request (then bounded retries)"
    )
    verify_key: str | None = Field(
        default=None, description="Ed25519 public key (PEM or raw base64) bundle manifests must be signed with"
    )
    trust_unsigned: bool | None = Field(
        default=None,
        description="accept unsigned bundles (true), refuse them (false); unset: only from a local directory store",
    )


class KubeflowSettings(BaseSettings):
    """The Kubeflow Pipelines endpoint, the pipeline's node pool and feature engine (mixed into what starts runs)."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_", extra="ignore", protected_namespaces=())

    kfp_endpoint: str | None = None
    kfp_namespace: str | None = None
    kfp_token: SecretStr | None = None
    training_node_selector: str | None = Field(
        default=None,
        description="node label key=value the compiled pipeline's data, feature, training and evaluation steps select, "
        "e.g. fraud-detection/pool=training (the AKS spot pool); none: any node",
    )
    training_toleration: str | None = Field(
        default=None,
        description="taint those steps tolerate, key[=value][:Effect], e.g. "
        "kubernetes.azure.com/scalesetpriority=spot:NoSchedule; none: no toleration",
    )
    feature_engine: Literal["memory", "spark", "spark-operator"] | None = Field(
        default=None,
        description="executor of the pipeline's feature step (run parameter feature_engine): memory, spark (Spark "
        "local[*] in the step) or spark-operator (a SparkApplication; implies spark_operator); none: the pipeline's "
        "default (memory)",
    )
    spark_operator: bool = Field(
        default=False,
        description="compile the pipeline with the Spark Operator wiring of the feature step (store Secret, Spark "
        "settings ConfigMap); implied by feature_engine=spark-operator",
    )


class PipelineSettings(KubeflowSettings, StoreSettings):
    """The training pipeline's steps and the ``fraud`` training, model and pipeline commands."""

    review_cost: float = Field(default=10.0, ge=0)
    label_delay_days: int = Field(default=7, ge=0)
    serving_namespace: str = Field(default="fraud-detection", description="namespace of the InferenceService")
    inference_service: str | None = Field(
        default=None, description="InferenceService the deploy step updates; default: the model name"
    )
    training_data: str | None = Field(
        default=None,
        description="what the pipeline trains on when no --data is given: payload-log (scored transactions plus "
        "labels), a path or s3:// URI; none: nothing unless simulation is asked for",
    )
    online_store: str | None = Field(
        default=None, description="online feature store the deploy step backfills when asked (materialize_online)"
    )
    online_store_password: SecretStr | None = Field(default=None, description="Redis password (from a Secret)")
    payload_log_uri: str | None = Field(
        default=None, description="store of the payload log and labels (training data payload-log); default store_uri"
    )
    identifier_key: SecretStr | None = Field(
        default=None, description="HMAC key of the identifier hashes in the payload log and labels (from a Secret)"
    )
    signing_key: SecretStr | None = Field(
        default=None, description="Ed25519 private key (PEM or raw base64) that signs published bundles (a Secret)"
    )


class ServeSettings(StoreSettings):
    """The model server: every default of ``python -m serving``'s flags.

    Empty variables count as unset (the chart renders optional values as ``""``).
    """

    model_config = SettingsConfigDict(
        env_prefix="FRAUD_", extra="ignore", protected_namespaces=(), env_ignore_empty=True
    )

    model_dir: str | None = Field(default=None, description="bundle directory (/mnt/models)")
    model_ref: str | None = Field(default=None, description="version or alias to load from the store")
    model_version: str | None = Field(default=None, description="expected version: warn when the bundle differs")
    serving_host: str | None = Field(default=None, description="bind address; default by where the server runs")
    max_batch_size: int = Field(default=1000, ge=1, description="rows per request")
    scorer: Literal["compiled", "sklearn"] = "compiled"
    payload_log_enabled: bool | None = Field(default=None, description="None: on when a store is configured")
    payload_log_uri: str | None = Field(default=None, description="store of the payload log; default: store_uri")
    payload_log_flush_rows: int = Field(default=5000, ge=1)
    payload_log_flush_seconds: float = Field(default=60.0, gt=0)
    payload_log_max_rows: int = Field(default=100_000, ge=1)
    payload_log_identifiers: bool = False
    payload_log_spool_dir: str | None = Field(
        default=None,
        description="local spool of the payload log (an emptyDir or PVC in a pod); default "
        ".fraud/spool/<model>/<store hash>; off: none (a SIGKILL loses the buffered rows)",
    )
    payload_log_spool_max_bytes: int = Field(default=256 * 2**20, ge=1, description="size cap of the spool")
    identifier_key: SecretStr | None = Field(
        default=None, description="HMAC key of the identifier hashes in the payload log and labels (from a Secret)"
    )
    log_level: str = "INFO"
    online_store: str | None = Field(
        default=None,
        description="online feature store for raw transactions: redis://host:port/db, rediss://..., or a directory",
    )
    online_store_password: SecretStr | None = Field(default=None, description="Redis password (from a Secret)")
    online_store_unavailable: Literal["reject", "degraded"] = Field(
        default="reject",
        description="when the online store is down: reject raw transactions with 503, or score them without history "
        "(marked degraded in the response)",
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1, description="largest request body; above: 413")
    max_amount: float = Field(default=1e9, gt=0, description="largest amount (raw transactions and feature vectors)")
    enable_model_repository: bool = Field(
        default=False, description="serve KServe's model repository extension (unauthenticated load/unload)"
    )
    expose_threshold: bool = Field(
        default=True, description="report the decision threshold in responses and fraud_serving_model_info"
    )

    @field_validator("payload_log_enabled", mode="before")
    @classmethod
    def _auto_is_unset(cls, value: Any) -> Any:
        """``auto`` (like an empty value) leaves the payload log to the store configuration."""
        return None if isinstance(value, str) and value.strip().lower() in ("", "auto") else value


class DriftSettings(KubeflowSettings, StoreSettings):
    """The drift job: payload log, Pushgateway, thresholds and the retrain trigger."""

    payload_log_uri: str | None = Field(
        default=None,
        description="store of the payload log, labels and drift reports when apart from the model store "
        "(e.g. az://payload-logs on AKS); default: store_uri",
    )
    label_delay_days: int = Field(default=7, ge=0)
    pushgateway_url: str | None = Field(default=None, description="Pushgateway for the drift job's gauges")
    drift_window_hours: float = Field(default=24.0, gt=0, description="payload-log window of one drift run")
    drift_min_rows: int = Field(default=200, ge=1, description="smallest window judged for drift")
    drift_share: float = Field(default=0.3, gt=0, le=1, description="share of drifted features = dataset drift")
    drift_ap_floor: float = Field(default=0.3, ge=0, le=1, description="realised AP below this triggers retraining")
    drift_retrain: bool = Field(default=True, description="start the training pipeline on drift or low AP")
    training_data: str | None = Field(
        default=None,
        description="what retraining trains on: payload-log (scored transactions plus labels), a path or s3:// URI; "
        "none: the drift job never starts a run",
    )
    identifier_key: SecretStr | None = Field(
        default=None, description="HMAC key of the identifier hashes in the payload log and labels (from a Secret)"
    )


class OnlineSettings(BaseSettings):
    """``fraud online``: the online feature store of raw-transaction scoring (backfill, labels)."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_", extra="ignore", env_ignore_empty=True)

    online_store: str | None = Field(default=None, description="redis://host:port/db, rediss://..., or a directory")
    online_store_password: SecretStr | None = Field(default=None, description="Redis password (from a Secret)")
    label_delay_days: int = Field(default=7, ge=0)


class RolloutSettings(StoreSettings):
    """``fraud rollout``: Prometheus and the InferenceService.

    The chart's pipeline ConfigMap sets ``FRAUD_PROMETHEUS_URL``, ``FRAUD_SERVING_NAMESPACE`` and
    ``FRAUD_INFERENCE_SERVICE``.
    """

    prometheus_url: str | None = Field(default=None, description="Prometheus base URL, e.g. http://prometheus:9090")
    prometheus_bearer_token: SecretStr | None = Field(
        default=None, description="bearer token for Prometheus (e.g. Azure Monitor's query endpoint)"
    )
    serving_namespace: str = "fraud-detection"
    inference_service: str = "fraud-detector"


class _MappingSource(EnvSettingsSource):
    """Environment variables from a mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = dict(environ)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def settings_from(cls: type[SettingsT], environ: Mapping[str, str], **overrides: Any) -> SettingsT:
    """Read a settings class from a given environment mapping (``os.environ`` is not read).

    Args:
        cls: The settings class.
        environ: Variables by name, e.g. ``{"FRAUD_STORE_URI": "s3://bucket/p"}``.
        **overrides: Field values taking precedence over the mapping.

    Returns:
        The settings, validated like ``cls()`` would from the same environment.

    Raises:
        pydantic.ValidationError: A value is invalid.
    """

    class _FromMapping(cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, _MappingSource(settings_cls, environ)

    read = _FromMapping(**overrides)
    # Back to the class itself: same values and set fields, without validating (or reading os.environ) again.
    return cast(SettingsT, cls.model_construct(_fields_set=set(read.model_fields_set), **dict(read)))
