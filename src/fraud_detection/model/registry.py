"""Model versions and aliases on top of any :class:`~fraud_detection.store.ArtifactStore`.

A version is complete once its ``MANIFEST.json`` exists; it is uploaded last, so a crash mid-publish leaves an
incomplete version that is never listed or resolved. An alias (``production``, ``canary``) is a small JSON object
naming a version and the digest of its manifest; it is written only after the version is complete, and moving it is
one atomic, conditional object write (compare-and-swap: a concurrent move fails instead of being lost).

Publishing signs the manifest when the registry has a signing key (``MANIFEST.sig``, uploaded before the manifest);
loading checks that signature with the store's bundle trust (:class:`~fraud_detection.model.bundle.BundleTrust`)
before anything is unpickled. Alias names and version ids are plain names (no separators), so neither can reach
outside ``models/<name>/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from fraud_detection.model.bundle import (
    MANIFEST_FILE,
    METADATA_FILE,
    SIGNATURE_FILE,
    Bundle,
    BundleIntegrityError,
    BundleMetadata,
    BundleTrust,
    load_bundle,
    load_signing_key,
    signature_for,
    verify_bundle,
    verify_signature,
)
from fraud_detection.store.base import ArtifactStore, PreconditionFailedError
from fraud_detection.store.uri import StoreConfig, open_configured_store

LOG = logging.getLogger(__name__)
ALIASES: tuple[str, ...] = ("production", "canary")
ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class RegistryError(LookupError):
    """A version or alias cannot be resolved or published."""


def check_alias(alias: str) -> str:
    """An alias name as given, when it is a plain name: ``[A-Za-z0-9][A-Za-z0-9_-]{0,62}``.

    Args:
        alias: Alias name.

    Returns:
        The alias.

    Raises:
        RegistryError: Separators, dots, spaces or an empty name.
    """
    if not isinstance(alias, str) or not ALIAS_RE.match(alias):
        raise RegistryError(
            f"invalid alias {alias!r}: a plain name of letters, digits, '_' and '-' (1-63, starting with a letter "
            "or digit), no '/' or '.'"
        )
    return alias


def check_version(version: str) -> str:
    """A version id as given, when it is a plain name (no path separators, not ``.`` or ``..``).

    Args:
        version: Version id.

    Returns:
        The version.

    Raises:
        RegistryError: Not a plain name.
    """
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise RegistryError(f"invalid version id {version!r}: letters, digits, '_', '-' and '.', no '/'")
    return version


class ModelRegistry:
    """Versions and aliases of one model name.

    Args:
        store: Where models live.
        model_name: The served model's name.
        signing_key: Ed25519 private key (PEM or raw base64 text, or a key object) that signs what
            :meth:`publish` uploads; None: publish as is (a bundle's own ``MANIFEST.sig`` is kept).
        trust: Which bundles :meth:`load` and :meth:`fetch` accept; default: the store's configuration
            (``store.trust``: ``FRAUD_VERIFY_KEY``, ``FRAUD_TRUST_UNSIGNED``; unsigned only from a local directory).
    """

    def __init__(
        self,
        store: ArtifactStore,
        model_name: str,
        *,
        signing_key: Any = None,
        trust: BundleTrust | None = None,
    ) -> None:
        self.store = store
        self.model_name = model_name
        self.base = f"models/{model_name}/"
        self.signing_key = load_signing_key(signing_key) if isinstance(signing_key, str) else signing_key
        self._trust = trust

    @property
    def trust(self) -> BundleTrust:
        """The signature policy of bundles loaded from this registry."""
        if self._trust is None:
            config = self.store.trust
            self._trust = BundleTrust.from_config(config.verify_key, config.trust_unsigned, remote=self.store.remote)
        return self._trust

    def _alias_key(self, alias: str) -> str:
        return f"{self.base}aliases/{check_alias(alias)}.json"

    def version_prefix(self, version: str) -> str:
        """Key prefix of a version's files.

        Args:
            version: Version id.

        Returns:
            The prefix, ending with ``/``.
        """
        return f"{self.base}versions/{check_version(version)}/"

    def publish(self, bundle_dir: Path) -> str:
        """Upload a verified bundle as a new version: files, then the manifest's signature, then the manifest.

        With a signing key the manifest is signed now (replacing any signature in the directory); without one,
        a signature the bundle carries is uploaded as is, and an unsigned bundle is published unsigned (loaders
        that require signatures will refuse it).

        Args:
            bundle_dir: A bundle directory.

        Returns:
            The published version id.

        Raises:
            RegistryError: The version exists already.
        """
        bundle_dir = Path(bundle_dir)
        verify_bundle(bundle_dir)
        metadata = BundleMetadata.model_validate_json((bundle_dir / METADATA_FILE).read_text())
        version = metadata.version
        prefix = self.version_prefix(version)
        if self.store.exists(prefix + MANIFEST_FILE):
            raise RegistryError(f"version {version} of {self.model_name} exists already in {self.store.uri()}")
        manifest = (bundle_dir / MANIFEST_FILE).read_bytes()
        if self.signing_key is not None:
            signature: bytes | None = signature_for(manifest, self.signing_key)
        elif (bundle_dir / SIGNATURE_FILE).is_file():
            signature = (bundle_dir / SIGNATURE_FILE).read_bytes()
        else:
            signature = None
            LOG.warning("publishing %s version %s unsigned (no FRAUD_SIGNING_KEY)", self.model_name, version)
        files = sorted(p for p in bundle_dir.rglob("*") if p.is_file())
        for path in files:
            name = path.relative_to(bundle_dir).as_posix()
            if name not in (MANIFEST_FILE, SIGNATURE_FILE):
                self.store.write_bytes(prefix + name, path.read_bytes())
        if signature is not None:
            self.store.write_bytes(prefix + SIGNATURE_FILE, signature)
        self.store.write_bytes(prefix + MANIFEST_FILE, manifest)
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
        found = self._read_alias(alias)
        return found[0] if found else None

    def _read_alias(self, alias: str) -> tuple[dict[str, Any], str] | None:
        found = self.store.read_versioned(self._alias_key(alias))
        if found is None:
            return None
        try:
            record = dict(json.loads(found[0]))
            check_version(str(record["version"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"alias {alias!r} of {self.model_name} is not a valid alias record: {exc}") from exc
        return record, found[1]

    def set_alias(self, alias: str, version: str, *, expected_previous: str | None = None) -> dict[str, Any]:
        """Point an alias at a complete version, as one compare-and-swap on the alias object.

        The alias is read, and written only if nobody moved it in between (S3 ``If-Match``, Azure ETag, a lock
        file on a local directory): of two concurrent moves exactly one succeeds and the other raises.

        Args:
            alias: Alias name (a plain name, see :func:`check_alias`).
            version: Version id (must be complete).
            expected_previous: When given, the version the alias must point at now (``""``: the alias must be
                unset); otherwise whatever it points at when read.

        Returns:
            The new alias record.

        Raises:
            RegistryError: An invalid alias or version, the version is not complete, or the alias was moved
                concurrently (the message names the version that won).
        """
        check_alias(alias)
        prefix = self.version_prefix(version)
        try:
            manifest = self.store.read_bytes(prefix + MANIFEST_FILE)
        except KeyError as exc:
            raise RegistryError(f"cannot point {alias!r} at {version}: no complete version of that id") from exc
        found = self._read_alias(alias)
        current, token = found if found else (None, None)
        previous = current["version"] if current else None
        if expected_previous is not None and (previous or "") != expected_previous:
            raise RegistryError(
                f"alias {alias!r} of {self.model_name} points at {previous or 'nothing'}, not "
                f"{expected_previous or 'nothing'}: not moved"
            )
        record = {
            "version": version,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "updated_at": datetime.now(UTC).isoformat(),
            "previous": previous,
        }
        try:
            self.store.write_if(self._alias_key(alias), json.dumps(record, indent=2).encode(), token)
        except PreconditionFailedError as exc:
            now = self.get_alias(alias)
            if now == record:  # our write landed, only its answer was lost (and the retry found it done)
                return record
            winner = now["version"] if now else "nothing (deleted)"
            raise RegistryError(
                f"alias {alias!r} of {self.model_name} was moved concurrently to {winner} (it pointed at "
                f"{previous or 'nothing'} when read); {version} not promoted: check and retry"
            ) from exc
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
        record = self.get_alias(ref) if ALIAS_RE.match(ref) else None
        if record is not None:
            return str(record["version"]), str(record["manifest_sha256"])
        if not VERSION_RE.match(ref):
            raise RegistryError(f"{ref!r} is neither a valid alias nor a valid version id")
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
        """Download a version into ``dest/<version>`` (verified first), or verify the cached copy there.

        A download goes to a temporary directory beside the target and is renamed into place only once verified;
        a download that fails verification is removed and reported with the version's store URI (not the
        temporary path). When another process cached the same version meanwhile, its copy is used (verified).
        """
        check_version(version)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / version
        if not (target / MANIFEST_FILE).exists():
            prefix = self.version_prefix(version)
            tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f".{version}."))
            try:
                self.store.download_dir(prefix, tmp)
                try:
                    verify_signature(tmp, self.trust)
                    verify_bundle(tmp, expected)
                except BundleIntegrityError as exc:
                    where = self.store.uri(prefix).rstrip("/")
                    raise BundleIntegrityError(str(exc).replace(str(tmp), where)) from exc
                try:
                    tmp.rename(target)
                    return target  # verified above, as downloaded
                except OSError:
                    if not (target / MANIFEST_FILE).exists():  # not a concurrent fetch of the same version
                        raise
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        verify_signature(target, self.trust)  # the cache may have been altered since it was written
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
        return load_bundle(self._fetch(version, expected, Path(cache_dir)), expected, trust=self.trust)


class RegistryConfig(StoreConfig, Protocol):
    """What opening the configured registry needs: the store's configuration and the model name."""

    @property
    def model_name(self) -> str: ...  # noqa: D102


def open_registry(config: RegistryConfig, store_uri: str | None = None, model_name: str | None = None) -> ModelRegistry:
    """Open the model registry of the configured store.

    The store carries the configuration's bundle trust (``verify_key``, ``trust_unsigned``); the registry signs
    what it publishes with ``signing_key`` when the configuration has one (``PipelineSettings``).

    Args:
        config: Store location, credentials and model name (e.g. a settings object of ``fraud_detection.settings``).
        store_uri: Overrides ``config.store_uri`` (empty or None for the configured one).
        model_name: Overrides ``config.model_name`` (empty or None for the configured one).

    Returns:
        The registry of that model in that store.
    """
    signing = getattr(config, "signing_key", None)
    key = signing.get_secret_value() if signing is not None else None
    return ModelRegistry(
        open_configured_store(config, store_uri or None), model_name or config.model_name, signing_key=key or None
    )
