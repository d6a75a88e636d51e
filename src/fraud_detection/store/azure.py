"""Azure Blob Storage backend of the artifact store (``az://container/prefix`` or the blob URL form).

The same key/value interface as :mod:`fraud_detection.store`, on one Blob container and an optional name prefix,
through ``azure-storage-blob`` 12.x (the ``azure`` extra; imported lazily, so the core does not need it). Each
write is one ``upload_blob(overwrite=True)``: a single Put Blob (or a block list committed in one call for large
objects), so readers see the old or the new content, never a part.

Opening a store sends no request and reads never create anything: reading from a missing container raises
``KeyError`` naming the container and the account, listing it gives no keys, deleting from it does nothing. The
first write to a missing container creates it and is retried once.

Authentication, first match wins:

1. an explicit ``credential`` (any ``azure.core`` ``TokenCredential``, or what ``BlobServiceClient`` accepts);
2. a connection string: the ``connection_string`` argument, else the ``AZURE_STORAGE_CONNECTION_STRING``
   environment variable (Azurite in development, or an account key / SAS elsewhere);
3. ``azure.identity.DefaultAzureCredential`` with the account URL: on AKS this is workload identity, from the
   ``AZURE_CLIENT_ID`` / ``AZURE_TENANT_ID`` / ``AZURE_FEDERATED_TOKEN_FILE`` variables that the webhook injects.

The account URL comes from the URI (``https://<account>.blob.core.windows.net/<container>/<prefix>``) or, for
``az://<container>/<prefix>``, from ``FRAUD_AZURE_STORAGE_ACCOUNT_URL`` (passed in by the caller's settings).
Connection strings, keys, SAS tokens and access tokens are never kept on the store, shown by ``repr`` or written
to a log or an error message.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse, urlunparse

from fraud_detection.store.base import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    ArtifactStore,
    PreconditionFailedError,
    StoreError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from azure.storage.blob import BlobServiceClient, ContainerClient

LOG = logging.getLogger(__name__)
# The Azure SDK logs every request's URL and headers at INFO; route that to a logger of ours
# (``fraud_detection.store.azure.http``) that the entry points set to WARNING unless an operator asks for more.
# The SDK redacts secrets from those lines.
HTTP_LOG = logging.getLogger(f"{__name__}.http")

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
ACCOUNT_URL_ENV = "FRAUD_AZURE_STORAGE_ACCOUNT_URL"
BLOB_HOST_SUFFIX = ".blob.core.windows.net"
_URL_FORM = f"https://<account>{BLOB_HOST_SUFFIX}/<container>/<prefix>"
_CONTAINER_RE = re.compile(r"^(?:\$root|\$web|(?=[a-z0-9-]{3,63}$)[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9])$")
_SECRET_RE = re.compile(r"(?i)\b(sig|AccountKey|SharedAccessSignature)=[^&;\s'\"]+")


def is_azure_blob_uri(uri: str) -> bool:
    """Whether a store URI names Azure Blob storage (``az://`` or ``https://<account>.blob.core.windows.net/``).

    Args:
        uri: Store location.

    Returns:
        True for an Azure Blob URI.
    """
    parsed = urlparse(uri)
    host = (parsed.hostname or "").lower()
    return parsed.scheme == "az" or (parsed.scheme == "https" and host.endswith(BLOB_HOST_SUFFIX))


def parse_azure_blob_uri(uri: str, account_url: str | None = None) -> tuple[str | None, str, str]:
    """Split an Azure Blob store URI into account URL, container and prefix.

    Args:
        uri: ``az://<container>/<prefix>`` or ``https://<account>.blob.core.windows.net/<container>/<prefix>``.
        account_url: Account endpoint used for ``az://`` URIs (``FRAUD_AZURE_STORAGE_ACCOUNT_URL``).

    Returns:
        (account URL or None, container, prefix without surrounding ``/``).

    Raises:
        StoreError: Not an Azure Blob URI, or no container in it.
    """
    parsed = urlparse(uri)
    if parsed.query or parsed.fragment:
        # A SAS token in the URI would end up in logs and error messages: credentials go in the environment.
        raise StoreError(f"store {_redact(uri)}: no query string allowed (put credentials in the environment)")
    if parsed.scheme == "az":
        container, prefix = parsed.netloc, parsed.path
        url = account_url.rstrip("/") if account_url else None
    elif is_azure_blob_uri(uri):
        container, _, prefix = parsed.path.lstrip("/").partition("/")
        url = f"https://{parsed.netloc}"
    else:
        raise StoreError(f"store {uri}: not an Azure Blob URI (expected az://container/prefix or {_URL_FORM})")
    if not container:
        raise StoreError(f"store {uri}: no container in the URI (expected az://container/prefix or {_URL_FORM})")
    return url, container, prefix.strip("/")


def _redact(text: str) -> str:
    return _SECRET_RE.sub(lambda m: f"{m.group(1)}=REDACTED", text)


def _reason(exc: Exception) -> str:
    """A one-line, secret-free description of an Azure SDK error."""
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # StorageErrorCode is a str enum: show "AuthenticationFailed"
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", None) or exc).strip().splitlines()
    head = message[0] if message else type(exc).__name__
    tags = ", ".join(str(t) for t in (status, code) if t)
    return _redact(f"{head} ({tags})" if tags else head)


def _is_directory_marker(metadata: Mapping[str, str] | None) -> bool:
    """Whether a blob's metadata marks it as a directory of a hierarchical-namespace account (``hdi_isfolder``)."""
    return str((metadata or {}).get("hdi_isfolder", "")).lower() == "true"


def _container_not_found(exc: Exception) -> bool:
    """Whether a ``ResourceNotFoundError`` is about the container rather than the blob."""
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code)) == "ContainerNotFound"


def _account_name_of(url: str) -> str | None:
    """Account name implied by an account URL (host label, or first path segment for emulator-style URLs)."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    try:
        ipaddress.ip_address(host)
        emulator = True
    except ValueError:
        emulator = host in ("localhost", "")
    if emulator:
        segment = parsed.path.strip("/").split("/", 1)[0]
        return segment.lower() or None
    return host.split(".", 1)[0].lower() or None


class AzureBlobStore(ArtifactStore):
    """One Azure Blob container and a name prefix.

    Args:
        container: Container name.
        prefix: Blob name prefix inside the container (``/``-separated, may be empty).
        account_url: Account endpoint, e.g. ``https://acct.blob.core.windows.net`` (needed unless a connection
            string is used).
        credential: Explicit credential; overrides the connection string and ``DefaultAzureCredential``.
        connection_string: Connection string; defaults to ``AZURE_STORAGE_CONNECTION_STRING``. Not kept.
        create_container: Create the container now when it does not exist (one request to check, which also fails
            early on wrong credentials); by default no request is sent until the first operation, and the first
            write creates a missing container.
        timeout: Seconds to wait for a connection and for each answer (the SDK's own read timeout is long).
        retries: Retries of a request that failed to connect, timed out or got a 5xx (then ``StoreError``).
        **client_options: Extra keyword arguments of ``BlobServiceClient`` (retries, timeouts, transport).

    Raises:
        StoreError: Invalid container name, no way to reach the account, or (with ``create_container``) the
            container cannot be reached or created.
    """

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        account_url: str | None = None,
        credential: Any = None,
        connection_string: str | None = None,
        create_container: bool = False,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        **client_options: Any,
    ) -> None:
        from azure.storage.blob import BlobServiceClient

        if not _CONTAINER_RE.match(container):
            raise StoreError(
                f"invalid Azure Blob container name {container!r}: 3-63 lowercase letters, digits and single "
                "hyphens, starting and ending with a letter or digit"
            )
        self.container = container
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        client_options.setdefault("logger", HTTP_LOG)
        client_options.setdefault("connection_timeout", min(5.0, timeout))
        client_options.setdefault("read_timeout", timeout)
        client_options.setdefault("retry_total", retries)
        client_options.setdefault("retry_connect", retries)
        client_options.setdefault("retry_read", retries)
        client_options.setdefault("retry_status", retries)
        conn = connection_string or os.environ.get(CONNECTION_STRING_ENV) or None
        service: BlobServiceClient
        try:
            if credential is not None:
                if not account_url:
                    raise StoreError(f"Azure Blob container {container!r}: a credential needs an account URL")
                service = BlobServiceClient(account_url, credential=credential, **client_options)
                self.auth = type(credential).__name__
            elif conn:
                service = BlobServiceClient.from_connection_string(conn, **client_options)
                self.auth = "connection string"
            else:
                if not account_url:
                    raise StoreError(
                        f"Azure Blob container {container!r}: no account; set {ACCOUNT_URL_ENV} "
                        f"(e.g. https://<account>{BLOB_HOST_SUFFIX}), use a {_URL_FORM} URI, "
                        f"or set {CONNECTION_STRING_ENV}"
                    )
                from azure.identity import DefaultAzureCredential

                service = BlobServiceClient(account_url, credential=DefaultAzureCredential(), **client_options)
                self.auth = "DefaultAzureCredential"
        except StoreError:
            raise
        except (ValueError, TypeError) as exc:  # malformed connection string or URL
            source = "connection string" if conn and credential is None else f"account URL {account_url!r}"
            raise StoreError(f"Azure Blob container {container!r}: invalid {source}: {_redact(str(exc))}") from exc
        endpoint = urlparse(service.primary_endpoint)  # may carry a SAS query string: keep only the address
        self.account_url = urlunparse((endpoint.scheme, endpoint.netloc, endpoint.path.rstrip("/"), "", "", ""))
        self.account_name = str(service.account_name or "")
        expected = _account_name_of(account_url) if account_url else None
        if expected and self.account_name and expected != self.account_name.lower():
            raise StoreError(
                f"Azure Blob container {container!r}: the credentials are for account {self.account_name!r} but "
                f"the store names account {expected!r} ({account_url}); unset {CONNECTION_STRING_ENV} or fix the URI"
            )
        self._service = service
        self._container: ContainerClient = service.get_container_client(container)
        if create_container:
            self._ensure_container()

    @classmethod
    def from_uri(cls, uri: str, *, account_url: str | None = None, **kwargs: Any) -> AzureBlobStore:
        """Open a store from ``az://<container>/<prefix>`` or ``https://<account>.blob.core.windows.net/...``.

        Args:
            uri: Store location.
            account_url: Account endpoint for ``az://`` URIs (``FRAUD_AZURE_STORAGE_ACCOUNT_URL``); an ``https``
                URI names its own account.
            **kwargs: Further :class:`AzureBlobStore` arguments.

        Returns:
            The store.
        """
        url, container, prefix = parse_azure_blob_uri(uri, account_url)
        return cls(container, prefix, account_url=url, **kwargs)

    def _ensure_container(self) -> None:
        from azure.core.exceptions import AzureError

        try:
            exists = self._container.exists()
        except AzureError as exc:
            raise StoreError(f"Azure Blob container {self.container!r} at {self.account_url}: {_reason(exc)}") from exc
        if not exists:
            self._create_container(self.uri())

    def _create_container(self, purpose: str) -> None:
        """Create the missing container; one created concurrently (by another writer) is fine."""
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            self._container.create_container()
        except ResourceExistsError:
            return  # created concurrently
        except AzureError as exc:
            raise StoreError(
                f"cannot create the missing container {self.container!r} at {self.account_url} for {purpose}: "
                f"{_reason(exc)}"
            ) from exc
        LOG.info("created Azure Blob container %r at %s for %s", self.container, self.account_url, purpose)

    def _no_container(self, what: str) -> str:
        return f"no container {self.container!r} at {self.account_url}: {what}"

    def _name(self, key: str) -> str:
        if any(part in ("", ".", "..") for part in key.split("/")):
            raise StoreError(f"invalid key {key!r} for {self.uri()}: empty, absolute, or with empty, . or .. parts")
        return self.prefix + key

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a blob in one upload, creating the container first when it is missing.

        Args:
            key: Object key.
            data: Content.

        Raises:
            StoreError: An invalid key, or the write (or the creation of the missing container) failed.
        """
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        name = self._name(key)
        try:
            try:
                self._container.upload_blob(name, data, overwrite=True)
            except ResourceNotFoundError as exc:
                if not _container_not_found(exc):
                    raise
                self._create_container(self.uri(key))
                self._container.upload_blob(name, data, overwrite=True)
        except AzureError as exc:
            raise StoreError(f"cannot write {self.uri(key)} (container {self.container!r}): {_reason(exc)}") from exc

    def read_bytes(self, key: str) -> bytes:  # noqa: D102
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        name = self._name(key)
        try:
            return bytes(self._container.download_blob(name).readall())
        except ResourceNotFoundError as exc:
            if _container_not_found(exc):
                raise KeyError(self._no_container(f"cannot read {self.uri(key)}")) from exc
            raise KeyError(f"no object {self.uri(key)}") from exc
        except AzureError as exc:
            raise StoreError(f"cannot read {self.uri(key)} (container {self.container!r}): {_reason(exc)}") from exc

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """Read a blob and its ETag.

        Args:
            key: Object key.

        Returns:
            (content, ETag) or None when the blob (or its container) does not exist.
        """
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        name = self._name(key)
        try:
            downloader = self._container.download_blob(name)
            return bytes(downloader.readall()), str(downloader.properties.etag)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StoreError(f"cannot read {self.uri(key)} (container {self.container!r}): {_reason(exc)}") from exc

    def write_if(self, key: str, data: bytes, token: str | None) -> None:
        """One conditional upload: ``If-Match: <ETag>``, or ``If-None-Match: *`` when the blob must not exist.

        Args:
            key: Object key.
            data: New content.
            token: ETag from :meth:`read_versioned`; None: the blob must not exist.

        Raises:
            PreconditionFailedError: The blob changed or appeared since it was read.
            StoreError: The write failed otherwise.
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        name = self._name(key)
        options: dict[str, Any] = (
            {"overwrite": True, "etag": token, "match_condition": MatchConditions.IfNotModified}
            if token is not None
            else {"overwrite": False}
        )
        for attempt in (1, 2):
            try:
                self._container.upload_blob(name, data, **options)
                return
            except (ResourceModifiedError, ResourceExistsError) as exc:
                raise PreconditionFailedError(f"{self.uri(key)} changed since it was read") from exc
            except ResourceNotFoundError as exc:
                if _container_not_found(exc) and attempt == 1:
                    self._create_container(self.uri(key))
                    continue
                if token is not None:  # deleted since it was read
                    raise PreconditionFailedError(f"{self.uri(key)} changed since it was read") from exc
                raise StoreError(f"cannot write {self.uri(key)}: {_reason(exc)}") from exc
            except AzureError as exc:
                raise StoreError(
                    f"cannot write {self.uri(key)} (container {self.container!r}): {_reason(exc)}"
                ) from exc

    def exists(self, key: str) -> bool:
        """Whether an object exists (one metadata request, no download).

        A directory of an account with a hierarchical namespace (ADLS Gen2, what Spark on AKS writes through
        ``abfss://``) is an empty blob marked ``hdi_isfolder=true``: a prefix, not an object, as the listings treat
        it.

        Args:
            key: Object key.

        Returns:
            True when an object of that name exists.
        """
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        name = self._name(key)
        try:
            return not _is_directory_marker(self._container.get_blob_client(name).get_blob_properties().metadata)
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise StoreError(f"cannot check {self.uri(key)} (container {self.container!r}): {_reason(exc)}") from exc

    def list(self, prefix: str) -> list[str]:  # noqa: D102
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        start = self.prefix + prefix
        try:
            blobs = list(self._container.list_blobs(name_starts_with=start or None, include=["metadata"]))
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise StoreError(f"cannot list {self.uri(prefix)} (container {self.container!r}): {_reason(exc)}") from exc
        n = len(self.prefix)
        # Accounts with a hierarchical namespace list directories as empty blobs marked hdi_isfolder.
        return sorted(str(b.name)[n:] for b in blobs if not _is_directory_marker(b.metadata))

    def _nothing_under(self, prefix: str) -> str:
        from azure.core.exceptions import AzureError

        try:
            missing = not self._container.exists()
        except AzureError:  # already failing: keep the plain message
            missing = False
        return self._no_container(f"nothing under {self.uri(prefix)}") if missing else super()._nothing_under(prefix)

    def delete(self, key: str) -> None:  # noqa: D102
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        name = self._name(key)
        try:
            self._container.delete_blob(name, delete_snapshots="include")
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise StoreError(f"cannot delete {self.uri(key)} (container {self.container!r}): {_reason(exc)}") from exc

    def uri(self, key: str = "") -> str:
        """The blob URL of a key (the form KServe's storage initializer reads), without any credential.

        Args:
            key: Object key.

        Returns:
            ``<account URL>/<container>/<prefix><key>``.
        """
        return f"{self.account_url}/{self.container}/{self.prefix}{key}"

    def close(self) -> None:
        """Close the HTTP connections of the underlying client."""
        self._service.close()

    def __repr__(self) -> str:
        if not hasattr(self, "account_url"):  # construction failed part-way
            return f"AzureBlobStore(container={getattr(self, 'container', None)!r})"
        return f"AzureBlobStore({self.uri()!r}, auth={self.auth!r})"
