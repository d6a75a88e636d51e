"""S3 (MinIO, SeaweedFS, AWS) as an artifact store, through the minio client."""

from __future__ import annotations

import io
import logging
from urllib.parse import urlparse

from fraud_detection.store.base import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    ArtifactStore,
    PreconditionFailedError,
    StoreError,
)

LOG = logging.getLogger(__name__)


class _NoRetryWarnings(logging.Filter):
    """Drop urllib3's per-retry warnings: a failing store is reported once, as a ``StoreError``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Retrying")


logging.getLogger("urllib3.connectionpool").addFilter(_NoRetryWarnings())


def _reason(exc: BaseException) -> str:
    """One line describing a failure: the S3 error code, or the network error at the root of urllib3's."""
    from urllib3.exceptions import MaxRetryError

    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    code = getattr(exc, "code", None)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{code}: {getattr(exc, 'message', '') or text}" if code else f"{type(exc).__name__}: {text}"


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
        timeout: Seconds to wait for a connection and for each answer (minio's own default is five minutes).
        retries: Retries of a request that failed to connect, timed out or got a 5xx (then ``StoreError``).

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
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        import urllib3
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
            http_client=urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=min(5.0, timeout), read=timeout),
                retries=urllib3.Retry(
                    total=retries,
                    connect=retries,
                    read=retries,
                    status=retries,
                    backoff_factor=0.2,
                    status_forcelist=[500, 502, 503, 504],
                    allowed_methods=None,  # PUTs of whole objects are idempotent too
                    raise_on_status=False,
                ),
                maxsize=10,
            ),
        )
        if create_bucket:
            try:
                exists = self.client.bucket_exists(bucket)
            except Exception as exc:
                raise StoreError(f"S3 bucket {bucket!r} at {endpoint}: {_reason(exc)}") from exc
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
                f"cannot create the missing bucket {self.bucket!r} at {self.endpoint} for {purpose}: {_reason(exc)}"
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
            raise self._error("write", key, exc) from exc

    def _error(self, what: str, key: str, exc: BaseException) -> StoreError:
        return StoreError(f"S3 store at {self.endpoint}: cannot {what} {self.uri(key)}: {_reason(exc)}")

    def read_bytes(self, key: str) -> bytes:  # noqa: D102
        found = self._get(key)
        if found is None:
            raise KeyError(f"no object {self.uri(key)}")
        return found[0]

    def _get(self, key: str) -> tuple[bytes, str] | None:
        from minio.error import S3Error

        try:
            resp = self.client.get_object(self.bucket, self.prefix + key)
            try:
                return bytes(resp.read()), str(resp.headers.get("ETag", ""))
            finally:
                resp.close()
                resp.release_conn()
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                raise KeyError(self._no_bucket(f"cannot read {self.uri(key)}")) from exc
            if exc.code == "NoSuchKey":
                return None
            raise self._error("read", key, exc) from exc
        except Exception as exc:
            raise self._error("read", key, exc) from exc

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """Read an object and its ETag.

        Args:
            key: Object key.

        Returns:
            (content, ETag) or None when the object (or its bucket) does not exist.
        """
        try:
            return self._get(key)
        except KeyError:
            return None

    def write_if(self, key: str, data: bytes, token: str | None) -> None:
        """One conditional PUT: ``If-Match: <ETag>``, or ``If-None-Match: *`` when the object must not exist.

        Args:
            key: Object key.
            data: New content.
            token: ETag from :meth:`read_versioned`; None: the object must not exist.

        Raises:
            PreconditionFailedError: The server answered 412 (the object changed or appeared since).
            StoreError: The write failed otherwise.
        """
        from minio.error import S3Error

        headers: dict[str, str | list[str] | tuple[str]] = {"Content-Type": "application/json"}
        headers.update({"If-Match": token} if token is not None else {"If-None-Match": "*"})
        for attempt in (1, 2):
            try:
                self.client._put_object(self.bucket, self.prefix + key, data, headers)
                return
            except S3Error as exc:
                if exc.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise PreconditionFailedError(f"{self.uri(key)} changed since it was read") from exc
                if exc.code == "NoSuchBucket" and attempt == 1:
                    self._create_bucket(self.uri(key))
                    continue
                raise self._error("write", key, exc) from exc
            except Exception as exc:
                raise self._error("write", key, exc) from exc

    def list(self, prefix: str) -> list[str]:  # noqa: D102
        from minio.error import S3Error

        n = len(self.prefix)
        try:
            objects = self.client.list_objects(self.bucket, prefix=self.prefix + prefix, recursive=True)
            return sorted(str(o.object_name)[n:] for o in objects if o.object_name and not o.is_dir)
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return []
            raise self._error("list", prefix, exc) from exc
        except Exception as exc:
            raise self._error("list", prefix, exc) from exc

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
            raise self._error("delete", key, exc) from exc
        except Exception as exc:
            raise self._error("delete", key, exc) from exc

    def exists(self, key: str) -> bool:  # noqa: D102
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, self.prefix + key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                return False
            raise self._error("stat", key, exc) from exc
        except Exception as exc:
            raise self._error("stat", key, exc) from exc
        return True

    def uri(self, key: str = "") -> str:  # noqa: D102
        return f"s3://{self.bucket}/{self.prefix}{key}"
