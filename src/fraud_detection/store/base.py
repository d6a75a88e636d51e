"""The artifact store interface: keys and bytes, the same over a directory, S3 and Azure Blob."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


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
