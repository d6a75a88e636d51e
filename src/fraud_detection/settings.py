"""Runtime settings from the environment (prefix ``FRAUD_``); only entry points construct them."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fraud_detection.model.registry import ModelRegistry
from fraud_detection.store.base import ArtifactStore
from fraud_detection.store.uri import open_store


class Settings(BaseSettings):
    """Platform settings. Secrets (S3 keys) come only from the environment and are never logged."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_", extra="ignore", protected_namespaces=())

    store_uri: str = Field(default=".fraud/store", description="directory or s3://bucket/prefix")
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
    payload_log_uri: str | None = Field(
        default=None,
        description="store of the payload log, labels and drift reports when apart from the model store "
        "(e.g. az://payload-logs on AKS); default: store_uri",
    )
    model_name: str = "fraud-detector"
    review_cost: float = Field(default=10.0, ge=0)
    label_delay_days: int = Field(default=7, ge=0)
    cache_dir: str = ".fraud/cache"
    pushgateway_url: str | None = Field(default=None, description="Pushgateway for the drift job's gauges")
    drift_window_hours: float = Field(default=24.0, gt=0, description="payload-log window of one drift run")
    drift_min_rows: int = Field(default=200, ge=1, description="smallest window judged for drift")
    drift_share: float = Field(default=0.3, gt=0, le=1, description="share of drifted features = dataset drift")
    drift_ap_floor: float = Field(default=0.3, ge=0, le=1, description="realised AP below this triggers retraining")
    drift_retrain: bool = Field(default=True, description="start the training pipeline on drift or low AP")
    kfp_endpoint: str | None = None
    kfp_namespace: str | None = None
    kfp_token: SecretStr | None = None

    def open_registry(self, store_uri: str | None = None, model_name: str | None = None) -> ModelRegistry:
        """Open the model registry.

        Args:
            store_uri: Overrides ``store_uri`` (empty or None for the setting).
            model_name: Overrides ``model_name`` (empty or None for the setting).

        Returns:
            The registry of that model in that store.
        """
        return ModelRegistry(self.open_store(store_uri or None), model_name or self.model_name)

    def open_log_store(self) -> ArtifactStore:
        """Open the store of the payload log, labels and drift reports.

        Returns:
            The store (the model store unless ``payload_log_uri`` is set).
        """
        return self.open_store(self.payload_log_uri or self.store_uri)

    def open_store(self, uri: str | None = None) -> ArtifactStore:
        """Open the configured store (or another URI with the same credentials).

        Args:
            uri: Overrides ``store_uri``.

        Returns:
            The store.
        """
        return open_store(
            uri or self.store_uri,
            s3_endpoint=self.s3_endpoint,
            access_key=self.aws_access_key_id.get_secret_value() if self.aws_access_key_id else None,
            secret_key=self.aws_secret_access_key.get_secret_value() if self.aws_secret_access_key else None,
            region=self.s3_region,
            azure_account_url=self.azure_storage_account_url,
        )
