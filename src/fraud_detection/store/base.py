"""The artifact store interface: keys and bytes, the same over a directory, S3 and Azure Blob."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

#: Seconds a store request may wait for a connection or an answer, unless configured (``FRAUD_STORE_TIMEOUT_SECONDS``).
DEFAULT_TIMEOUT_S = 20.0
#: Retries of a failed request (connection refused, timeout, 5xx): bounded, so a dead store fails in bounded time.
DEFAULT_RETRIES = 1


class StoreError(RuntimeError):
    """A store operation failed; the message names the key and the backend."""


class PreconditionFailedError(StoreError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


@dataclass(frozen=True)
class BundleTrustConfig:
    """How readers of model bundles in a store check signatures (set from the settings by ``open_configured_store``).

    The store only carries it; the model registry applies it (``fraud_detection.model.bundle.BundleTrust``).

    Attributes:
        verify_key: Ed25519 public key (PEM or raw base64) that bundle manifests must be signed with.
        trust_unsigned: True: accept unsigned bundles; False: refuse them; None: accept them only from a local
            directory store.
    """

    verify_key: str | None = None
    trust_unsigned: bool | None = None


class ArtifactStore(ABC):
    """Key/value object store with ``/``-separated keys."""

    #: Signature policy of the bundles read from this store (see :class:`BundleTrustConfig`).
    trust: BundleTrustConfig = BundleTrustConfig()
    #: Whether the store is remote (S3, Azure): unsigned bundles are refused there unless trusted explicitly.
    remote: bool = True

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

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """Read an object with a version token for :meth:`write_if`.

        Args:
            key: Object key.

        Returns:
            (content, token) or None when the object does not exist.
        """
        try:
            data = self.read_bytes(key)
        except KeyError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def write_if(self, key: str, data: bytes, token: str | None) -> None:
        """Write an object only if it is unchanged since it was read (compare-and-swap).

        This default compares and writes in two steps (not atomic); the backends override it with an atomic
        conditional write (S3 ``If-Match``/``If-None-Match``, Azure ETags, a lock file on a local directory).

        Args:
            key: Object key.
            data: New content.
            token: The token of :meth:`read_versioned`; None: the object must not exist.

        Raises:
            PreconditionFailedError: The object changed, appeared or disappeared since.
        """
        current = self.read_versioned(key)
        if (current[1] if current else None) != token:
            raise PreconditionFailedError(f"{self.uri(key)} changed since it was read")
        self.write_bytes(key, data)

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
