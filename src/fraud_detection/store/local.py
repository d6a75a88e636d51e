"""A directory as an artifact store."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from fraud_detection.store.base import ArtifactStore, PreconditionFailedError, StoreError
from fraud_detection.store.files import atomic_file


class LocalStore(ArtifactStore):
    """A directory on the local file system.

    Args:
        root: Root directory (created on first write).
    """

    remote = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        if not key.strip("/"):
            raise StoreError(f"empty key: name an object under the store root {self.root}")
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

    def write_if(self, key: str, data: bytes, token: str | None) -> None:
        """Compare-and-swap under an exclusive ``fcntl`` lock on a hidden lock file beside the object.

        Every conditional writer of the key takes the lock, so the check and the write are one step for them.

        Args:
            key: Object key.
            data: New content.
            token: sha256 of the content read (:meth:`read_versioned`); None: the object must not exist.

        Raises:
            PreconditionFailedError: The object changed since it was read.
        """
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(f".{path.name}.lock")
        with open(lock, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                current = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
                if current != token:
                    raise PreconditionFailedError(f"{self.uri(key)} changed since it was read")
                self.write_bytes(key, data)
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

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
