"""Open a store from its URI: a directory, s3://bucket/prefix, az://container/prefix or a Blob URL."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlparse

from fraud_detection.store.base import DEFAULT_TIMEOUT_S, ArtifactStore, BundleTrustConfig, StoreError
from fraud_detection.store.local import LocalStore
from fraud_detection.store.s3 import S3Store


def open_store(
    uri: str,
    *,
    s3_endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str | None = None,
    azure_account_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> ArtifactStore:
    """Open a store from a URI: a directory path, ``file://`` path, ``s3://bucket/prefix``, or Azure Blob.

    Azure Blob URIs are ``az://container/prefix`` (account from ``azure_account_url`` or
    ``AZURE_STORAGE_CONNECTION_STRING``) and ``https://<account>.blob.core.windows.net/container/prefix``.

    Opening sends no request and creates nothing: reading from a missing bucket or container raises ``KeyError``
    naming it, and the first write creates it.

    Args:
        uri: Store location.
        s3_endpoint: S3 API endpoint (required for ``s3://``).
        access_key: S3 access key id.
        secret_key: S3 secret key.
        region: S3 region.
        azure_account_url: Blob account endpoint for ``az://`` URIs, e.g. ``https://acct.blob.core.windows.net``.
        timeout: Seconds a request to S3 or Azure may wait for a connection or an answer (bounded retries follow).

    Returns:
        The store.

    Raises:
        StoreError: An ``s3://`` URI without an endpoint or with an invalid bucket name, an invalid Azure URI or
            container name, or an unsupported scheme.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "az" or (
        parsed.scheme == "https" and (parsed.hostname or "").lower().endswith(".blob.core.windows.net")
    ):
        from fraud_detection.store.azure import AzureBlobStore

        return AzureBlobStore.from_uri(uri, account_url=azure_account_url, timeout=timeout)
    if parsed.scheme == "s3":
        if not s3_endpoint:
            raise StoreError(f"store {uri}: set FRAUD_S3_ENDPOINT (or --s3-endpoint) to reach the S3 API")
        if not parsed.netloc:
            raise StoreError(f"store {uri}: no bucket in the URI (expected s3://bucket/prefix)")
        return S3Store(parsed.netloc, parsed.path, s3_endpoint, access_key, secret_key, region, timeout=timeout)
    if parsed.scheme in ("", "file"):
        return LocalStore(parsed.path if parsed.scheme == "file" else uri)
    raise StoreError(
        f"store {uri}: unsupported scheme {parsed.scheme!r} (use a path, s3://bucket/prefix or az://container/prefix)"
    )


class Secret(Protocol):
    """A secret value that is not shown in logs (e.g. ``pydantic.SecretStr``)."""

    def get_secret_value(self) -> str: ...  # noqa: D102


class StoreConfig(Protocol):
    """What opening the configured store needs (e.g. any of ``fraud_detection.settings``' classes)."""

    @property
    def store_uri(self) -> str: ...  # noqa: D102

    @property
    def s3_endpoint(self) -> str | None: ...  # noqa: D102

    @property
    def s3_region(self) -> str | None: ...  # noqa: D102

    @property
    def aws_access_key_id(self) -> Secret | None: ...  # noqa: D102

    @property
    def aws_secret_access_key(self) -> Secret | None: ...  # noqa: D102

    @property
    def azure_storage_account_url(self) -> str | None: ...  # noqa: D102


def open_configured_store(config: StoreConfig, uri: str | None = None) -> ArtifactStore:
    """Open the configured store, or another URI with the same credentials.

    The store carries the configuration's bundle signature policy (``verify_key``, ``trust_unsigned``, when the
    configuration has them) for the model registry on top of it, and its request timeout (``store_timeout_seconds``).

    Args:
        config: Store location and credentials.
        uri: Overrides ``config.store_uri`` (empty or None for the configured one).

    Returns:
        The store.

    Raises:
        StoreError: As :func:`open_store`.
    """
    store = open_store(
        uri or config.store_uri,
        s3_endpoint=config.s3_endpoint,
        access_key=config.aws_access_key_id.get_secret_value() if config.aws_access_key_id else None,
        secret_key=config.aws_secret_access_key.get_secret_value() if config.aws_secret_access_key else None,
        region=config.s3_region,
        azure_account_url=config.azure_storage_account_url,
        timeout=float(getattr(config, "store_timeout_seconds", None) or DEFAULT_TIMEOUT_S),
    )
    verify_key = getattr(config, "verify_key", None)
    trust_unsigned = getattr(config, "trust_unsigned", None)
    if verify_key or trust_unsigned is not None:
        store.trust = BundleTrustConfig(verify_key=verify_key or None, trust_unsigned=trust_unsigned)
    return store
