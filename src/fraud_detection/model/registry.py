"""Model versions and aliases on top of any :class:`~fraud_detection.store.ArtifactStore`.

A version is complete once its ``MANIFEST.json`` exists; it is uploaded last, so a crash mid-publish leaves an
incomplete version that is never listed or resolved. An alias (``production``, ``canary``) is a small JSON object
naming a version and the digest of its manifest; it is written only after the version is complete, and moving it is
one atomic object write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from fraud_detection.model.bundle import (
    MANIFEST_FILE,
    METADATA_FILE,
    Bundle,
    BundleMetadata,
    load_bundle,
    verify_bundle,
)
from fraud_detection.store.base import ArtifactStore
from fraud_detection.store.uri import StoreConfig, open_configured_store

LOG = logging.getLogger(__name__)
ALIASES: tuple[str, ...] = ("production", "canary")


class RegistryError(LookupError):
    """A version or alias cannot be resolved or published."""


class ModelRegistry:
    """Versions and aliases of one model name.

    Args:
        store: Where models live.
        model_name: The served model's name.
    """

    def __init__(self, store: ArtifactStore, model_name: str) -> None:
        self.store = store
        self.model_name = model_name
        self.base = f"models/{model_name}/"

    def version_prefix(self, version: str) -> str:
        """Key prefix of a version's files.

        Args:
            version: Version id.

        Returns:
            The prefix, ending with ``/``.
        """
        return f"{self.base}versions/{version}/"

    def publish(self, bundle_dir: Path) -> str:
        """Upload a verified bundle as a new version (manifest last).

        Args:
            bundle_dir: A bundle directory.

        Returns:
            The published version id.

        Raises:
            RegistryError: The version exists already.
        """
        verify_bundle(bundle_dir)
        metadata = BundleMetadata.model_validate_json((Path(bundle_dir) / METADATA_FILE).read_text())
        version = metadata.version
        prefix = self.version_prefix(version)
        if self.store.exists(prefix + MANIFEST_FILE):
            raise RegistryError(f"version {version} of {self.model_name} exists already in {self.store.uri()}")
        self.store.upload_dir(Path(bundle_dir), prefix, last=MANIFEST_FILE)
        LOG.info("published %s version %s to %s", self.model_name, version, self.store.uri(prefix))
        return version

    def versions(self) -> list[str]:
        """Complete versions, oldest first.

        Returns:
            Version ids.
        """
        keys = self.store.list(f"{self.base}versions/")
        suffix = "/" + MANIFEST_FILE
        return sorted(k[len(self.base) + len("versions/") : -len(suffix)] for k in keys if k.endswith(suffix))

    def get_alias(self, alias: str) -> dict[str, Any] | None:
        """The record an alias points to.

        Args:
            alias: Alias name.

        Returns:
            ``{"version", "manifest_sha256", "updated_at", "previous"}`` or None when unset.
        """
        try:
            return dict(json.loads(self.store.read_bytes(f"{self.base}aliases/{alias}.json")))
        except KeyError:
            return None

    def set_alias(self, alias: str, version: str) -> dict[str, Any]:
        """Point an alias at a complete version.

        Args:
            alias: Alias name.
            version: Version id (must be complete).

        Returns:
            The new alias record.

        Raises:
            RegistryError: The version is not complete.
        """
        prefix = self.version_prefix(version)
        try:
            manifest = self.store.read_bytes(prefix + MANIFEST_FILE)
        except KeyError as exc:
            raise RegistryError(f"cannot point {alias!r} at {version}: no complete version of that id") from exc
        current = self.get_alias(alias)
        record = {
            "version": version,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "updated_at": datetime.now(UTC).isoformat(),
            "previous": current["version"] if current else None,
        }
        self.store.write_bytes(f"{self.base}aliases/{alias}.json", json.dumps(record, indent=2).encode())
        LOG.info("alias %s of %s -> %s (was %s)", alias, self.model_name, version, record["previous"])
        return record

    def resolve(self, ref: str) -> tuple[str, str | None]:
        """Turn a version id, an alias or ``latest`` into a complete version.

        Args:
            ref: Version id, alias name, or ``latest``.

        Returns:
            (version, expected manifest digest or None).

        Raises:
            RegistryError: Nothing matches.
        """
        if ref == "latest":
            versions = self.versions()
            if not versions:
                raise RegistryError(f"no versions of {self.model_name} in {self.store.uri()}")
            return versions[-1], None
        record = self.get_alias(ref)
        if record is not None:
            return str(record["version"]), str(record["manifest_sha256"])
        versions = self.versions()
        if ref in versions:
            return ref, None
        hint = "" if versions else " (the store holds no versions of this model: check the store URI and model name)"
        raise RegistryError(
            f"{ref!r} is neither a version nor an alias of {self.model_name} in {self.store.uri()}{hint}"
        )

    def metadata(self, ref: str) -> BundleMetadata:
        """Metadata of a version or alias, without downloading the model.

        Args:
            ref: Version id or alias.

        Returns:
            The metadata.
        """
        version, _ = self.resolve(ref)
        raw = self.store.read_bytes(self.version_prefix(version) + METADATA_FILE)
        return BundleMetadata.model_validate_json(raw)

    def fetch(self, ref: str, dest: Path) -> Path:
        """Download and verify a version into a directory.

        Args:
            ref: Version id or alias.
            dest: Destination directory (the bundle lands in ``dest/<version>``).

        Returns:
            The bundle directory.
        """
        version, expected = self.resolve(ref)
        return self._fetch(version, expected, Path(dest))

    def _fetch(self, version: str, expected: str | None, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / version
        if not (target / MANIFEST_FILE).exists():
            tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f".{version}."))
            self.store.download_dir(self.version_prefix(version), tmp)
            verify_bundle(tmp, expected)
            tmp.rename(target)
        verify_bundle(target, expected)
        return target

    def load(self, ref: str, cache_dir: Path) -> Bundle:
        """Fetch, verify and load a version or alias (resolved once, so a moving alias cannot mix versions).

        Args:
            ref: Version id or alias.
            cache_dir: Local cache directory.

        Returns:
            The loaded bundle.
        """
        version, expected = self.resolve(ref)
        return load_bundle(self._fetch(version, expected, Path(cache_dir)), expected)


class RegistryConfig(StoreConfig, Protocol):
    """What opening the configured registry needs: the store's configuration and the model name."""

    @property
    def model_name(self) -> str: ...  # noqa: D102


def open_registry(config: RegistryConfig, store_uri: str | None = None, model_name: str | None = None) -> ModelRegistry:
    """Open the model registry of the configured store.

    Args:
        config: Store location, credentials and model name (e.g. a settings object of ``fraud_detection.settings``).
        store_uri: Overrides ``config.store_uri`` (empty or None for the configured one).
        model_name: Overrides ``config.model_name`` (empty or None for the configured one).

    Returns:
        The registry of that model in that store.
    """
    return ModelRegistry(open_configured_store(config, store_uri or None), model_name or config.model_name)
