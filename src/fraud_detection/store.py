"""Artifact store: a local directory (default) or S3/MinIO through the minio client.

Both backends expose the same small key/value interface; everything above it (model versions, aliases, payload
logs, reports) is written once against that interface. Each object write is atomic: the local backend writes a
temporary file and renames it, S3 replaces an object in one PUT. Publishing a multi-file version relies on a
completion marker written last (see :mod:`fraud_detection.registry`).

Opening a store and reading from it never create anything: a mistyped bucket reads as missing (``KeyError`` naming
the bucket, an empty listing) instead of appearing as a new, empty bucket. The first write creates a missing bucket
(or Azure container, or local directory).
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

LOG = logging.getLogger(__name__)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that is renamed onto it only when the block succeeds.

    Readers see the old file or the complete new one, never a part; on failure the temporary file is removed. The
    temporary name keeps the suffix, for writers that choose the format by it.

    Args:
        path: Destination file (its directory is created).

    Yields:
        The temporary path to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


class StoreError(RuntimeError):
    """A store operation failed; the message names the key and the backend."""


class ArtifactStore(ABC):
    """Key/value object store with ``/``-separated keys."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write an object atomically (readers see the old or the new content, never a part).

        Args:
            key: Object key.
            data: Content.
        """

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Read an object.

        Args:
            key: Object key.

        Returns:
            The content.

        Raises:
            KeyError: No such object, or no such bucket / container (the message then names it).
        """

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys under a prefix, recursively, sorted.

        Args:
            prefix: Key prefix (a "folder" ends with ``/``).

        Returns:
            Matching keys (none when the bucket or container does not exist).
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete an object if it exists (nothing to do when its bucket or container does not exist either).

        Args:
            key: Object key.
        """

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """A URI for a key (``file`` path or ``s3://``).

        Args:
            key: Object key.

        Returns:
            The URI.
        """

    def exists(self, key: str) -> bool:
        """Whether an object exists.

        Args:
            key: Object key.

        Returns:
            True when it exists.
        """
        try:
            self.read_bytes(key)
        except KeyError:
            return False
        return True

    def upload_dir(self, local: Path, prefix: str, *, last: str | None = None) -> None:
        """Upload every file of a directory under a prefix, optionally writing one named file last.

        Args:
            local: Source directory.
            prefix: Destination key prefix (ending with ``/``).
            last: Relative name of the file to write last (a completion marker), if any.
        """
        files = sorted(p for p in local.rglob("*") if p.is_file())
        ordered = [p for p in files if p.relative_to(local).as_posix() != last]
        ordered += [p for p in files if p.relative_to(local).as_posix() == last]
        for path in ordered:
            self.write_bytes(prefix + path.relative_to(local).as_posix(), path.read_bytes())

    def download_dir(self, prefix: str, local: Path) -> Path:
        """Download every object under a prefix into a directory.

        Args:
            prefix: Source key prefix (ending with ``/``).
            local: Destination directory (created).

        Returns:
            The destination directory.
        """
        keys = self.list(prefix)
        if not keys:
            raise KeyError(self._nothing_under(prefix))
        for key in keys:
            dest = local / key[len(prefix) :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self.read_bytes(key))
        return local

    def _nothing_under(self, prefix: str) -> str:
        """The message of a download that found nothing (backends name a missing bucket or container)."""
        return f"nothing under {self.uri(prefix)}"


class LocalStore(ArtifactStore):
    """A directory on the local file system.

    Args:
        root: Root directory (created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise StoreError(f"key {key!r} escapes the store root {self.root}")
        return path

    def write_bytes(self, key: str, data: bytes) -> None:  # noqa: D102
        with atomic_file(self._path(key)) as tmp, open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def exists(self, key: str) -> bool:  # noqa: D102
        return self._path(key).is_file()

    def read_bytes(self, key: str) -> bytes:  # noqa: D102
        path = self._path(key)
        if not path.is_file():
            raise KeyError(f"no object {key!r} in {self.root}")
        return path.read_bytes()

    def list(self, prefix: str) -> list[str]:  # noqa: D102
        base = self._path(prefix.rstrip("/")) if prefix.rstrip("/") else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith("."))

    def delete(self, key: str) -> None:  # noqa: D102
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str = "") -> str:  # noqa: D102
        return str(self.root / key) if key else str(self.root)


class S3Store(ArtifactStore):
    """An S3 bucket and prefix (MinIO, SeaweedFS, AWS), through the minio client.

    Opening the store sends no request. Reads never create the bucket: reading from a missing bucket raises
    ``KeyError`` naming the bucket and the endpoint, listing it gives no keys, deleting from it does nothing. The
    first write to a missing bucket creates it (with the store's credentials) and is retried once.

    Args:
        bucket: Bucket name.
        prefix: Key prefix inside the bucket.
        endpoint: ``http(s)://host:port`` of the S3 API.
        access_key: Access key id (from the environment, never from code).
        secret_key: Secret key (from the environment, never from code).
        region: Optional region.
        create_bucket: Create the bucket now when it is missing (one request to check, which also fails early on
            wrong credentials); by default it is created by the first write.

    Raises:
        StoreError: An endpoint without a host, an invalid bucket name, or (with ``create_bucket``) the bucket cannot
            be checked or created.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        region: str | None = None,
        create_bucket: bool = False,
    ) -> None:
        from minio import Minio
        from minio.helpers import check_bucket_name

        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not parsed.netloc:
            raise StoreError(f"S3 endpoint {endpoint!r} has no host")
        try:
            check_bucket_name(bucket)
        except ValueError as exc:
            raise StoreError(f"S3 bucket {bucket!r}: {exc} (3-63 lowercase letters, digits, dots and hyphens)") from exc
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint = endpoint
        self.client = Minio(
            parsed.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parsed.scheme == "https",
            region=region,
        )
        if create_bucket:
            try:
                exists = self.client.bucket_exists(bucket)
            except Exception as exc:
                raise StoreError(f"S3 bucket {bucket!r} at {endpoint}: {exc}") from exc
            if not exists:
                self._create_bucket(f"s3://{bucket}")

    def _no_bucket(self, what: str) -> str:
        return f"no bucket {self.bucket!r} at {self.endpoint}: {what}"

    def _create_bucket(self, purpose: str) -> None:
        """Create the missing bucket; one created concurrently (by another writer) is fine."""
        from minio.error import S3Error

        try:
            self.client.make_bucket(self.bucket)
        except Exception as exc:
            if isinstance(exc, S3Error) and exc.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            raise StoreError(
                f"cannot create the missing bucket {self.bucket!r} at {self.endpoint} for {purpose}: {exc}"
            ) from exc
        LOG.info("created S3 bucket %r at %s for %s", self.bucket, self.endpoint, purpose)

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write an object in one PUT, creating the bucket first when it is missing.

        Args:
            key: Object key.
            data: Content.

        Raises:
            StoreError: The write (or the creation of the missing bucket) failed.
        """
        from minio.error import S3Error

        name = self.prefix + key
        try:
            try:
                self.client.put_object(self.bucket, name, io.BytesIO(data), len(data))
            except S3Error as exc:
                if exc.code != "NoSuchBucket":
                    raise
                self._create_bucket(self.uri(key))
                self.client.put_object(self.bucket, name, io.BytesIO(data), len(data))
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot write {self.uri(key)}: {exc}") from exc

    def read_bytes(self, key: str) -> bytes:  # noqa: D102
        from minio.error import S3Error

        try:
            resp = self.client.get_object(self.bucket, self.prefix + key)
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                raise KeyError(self._no_bucket(f"cannot read {self.uri(key)}")) from exc
            if exc.code == "NoSuchKey":
                raise KeyError(f"no object {self.uri(key)}") from exc
            raise StoreError(f"cannot read {self.uri(key)}: {exc}") from exc
        try:
            return bytes(resp.read())
        finally:
            resp.close()
            resp.release_conn()

    def list(self, prefix: str) -> list[str]:  # noqa: D102
        from minio.error import S3Error

        n = len(self.prefix)
        try:
            objects = self.client.list_objects(self.bucket, prefix=self.prefix + prefix, recursive=True)
            return sorted(str(o.object_name)[n:] for o in objects if o.object_name and not o.is_dir)
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return []
            raise StoreError(f"cannot list {self.uri(prefix)}: {exc}") from exc

    def _nothing_under(self, prefix: str) -> str:
        try:
            missing = not self.client.bucket_exists(self.bucket)
        except Exception:  # already failing: keep the plain message
            missing = False
        return self._no_bucket(f"nothing under {self.uri(prefix)}") if missing else super()._nothing_under(prefix)

    def delete(self, key: str) -> None:  # noqa: D102
        from minio.error import S3Error

        try:
            self.client.remove_object(self.bucket, self.prefix + key)
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return
            raise StoreError(f"cannot delete {self.uri(key)}: {exc}") from exc

    def exists(self, key: str) -> bool:  # noqa: D102
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, self.prefix + key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                return False
            raise StoreError(f"cannot stat {self.uri(key)}: {exc}") from exc
        return True

    def uri(self, key: str = "") -> str:  # noqa: D102
        return f"s3://{self.bucket}/{self.prefix}{key}"


def open_store(
    uri: str,
    *,
    s3_endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str | None = None,
    azure_account_url: str | None = None,
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
        from fraud_detection.store_azure import AzureBlobStore  # optional dependency: the `azure` extra

        return AzureBlobStore.from_uri(uri, account_url=azure_account_url)
    if parsed.scheme == "s3":
        if not s3_endpoint:
            raise StoreError(f"store {uri}: set FRAUD_S3_ENDPOINT (or --s3-endpoint) to reach the S3 API")
        if not parsed.netloc:
            raise StoreError(f"store {uri}: no bucket in the URI (expected s3://bucket/prefix)")
        return S3Store(parsed.netloc, parsed.path, s3_endpoint, access_key, secret_key, region)
    if parsed.scheme in ("", "file"):
        return LocalStore(parsed.path if parsed.scheme == "file" else uri)
    raise StoreError(
        f"store {uri}: unsupported scheme {parsed.scheme!r} (use a path, s3://bucket/prefix or az://container/prefix)"
    )
