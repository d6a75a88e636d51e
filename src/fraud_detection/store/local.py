"""A directory as an artifact store."""

from __future__ import annotations

import os
from pathlib import Path

from fraud_detection.store.base import ArtifactStore, StoreError
from fraud_detection.store.files import atomic_file


class LocalStore(ArtifactStore):
    """A directory on the local file system.

    Args:
        root: Root directory (created on first write).
    """

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
