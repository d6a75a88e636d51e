"""The model bundle: one self-contained, digest-verified directory.

Layout (also what KServe's storage initializer puts in ``/mnt/models``)::

    model.joblib       the fitted, calibrated scikit-learn model
    metadata.json      feature schema, threshold, metrics, lineage (BundleMetadata)
    reference.parquet  a sample of training features and scores, the drift baseline
    MANIFEST.json      sha256 of each file above; written last
    MANIFEST.sig       Ed25519 signature of MANIFEST.json's bytes (when signed; see below)

Loading verifies every digest before unpickling and refuses a bundle that does not match.

Signatures. The model file is a joblib pickle, and unpickling runs code: whoever can write a bundle (or the store it
is published to) could run code in every process that loads it, and the digests alone do not stop them (they can be
rewritten to match). So the publisher signs the manifest with an Ed25519 private key (``FRAUD_SIGNING_KEY``, only
where models are published), and every loader checks that signature with the public key (``FRAUD_VERIFY_KEY``)
before it reads anything else of the bundle; the manifest's digests then vouch for every file. The policy is a
:class:`BundleTrust`: with a verify key a bundle must carry a valid signature (an unsigned one is accepted only when
``trust_unsigned`` is set explicitly; an invalid one never); without a key, unsigned bundles are accepted only from
local directories (development), or when ``trust_unsigned`` is set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fraud_detection import __version__
from fraud_detection.data import schema

LOG = logging.getLogger(__name__)
MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
REFERENCE_FILE = "reference.parquet"
MANIFEST_FILE = "MANIFEST.json"
SIGNATURE_FILE = "MANIFEST.sig"
SIGNATURE_ALGORITHM = "ed25519"
BUNDLE_FILES: tuple[str, ...] = (MODEL_FILE, METADATA_FILE, REFERENCE_FILE)
SCORE_COLUMN = "fraud_score"


class BundleIntegrityError(RuntimeError):
    """A bundle is incomplete, unsigned or wrongly signed, invalid, or a file's digest does not match its manifest."""


def _key_bytes(text: str, what: str) -> tuple[bytes | None, bytes | None]:
    """(PEM bytes, raw 32 bytes): one of them, from PEM text or base64 of the raw key."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        return text.encode(), None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleIntegrityError(f"{what}: neither PEM nor base64 ({type(exc).__name__})") from None
    if len(raw) != 32:
        raise BundleIntegrityError(f"{what}: a raw Ed25519 key is 32 bytes, this one {len(raw)}")
    return None, raw


def load_signing_key(text: str) -> Any:
    """An Ed25519 private key from PEM (PKCS#8, unencrypted) or base64 of its 32 raw bytes.

    Args:
        text: The key (``FRAUD_SIGNING_KEY``).

    Returns:
        The ``Ed25519PrivateKey``.

    Raises:
        BundleIntegrityError: Not an Ed25519 private key (the message never shows the key).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem, raw = _key_bytes(text, "signing key")
    try:
        key = (
            serialization.load_pem_private_key(pem, password=None)
            if pem
            else Ed25519PrivateKey.from_private_bytes(raw or b"")
        )
    except (ValueError, TypeError) as exc:
        raise BundleIntegrityError(f"signing key: not a usable private key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleIntegrityError(f"signing key: expected an Ed25519 key, got {type(key).__name__}")
    return key


def load_verify_key(text: str) -> Any:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or base64 of its 32 raw bytes.

    Args:
        text: The key (``FRAUD_VERIFY_KEY``).

    Returns:
        The ``Ed25519PublicKey``.

    Raises:
        BundleIntegrityError: Not an Ed25519 public key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    pem, raw = _key_bytes(text, "verify key")
    try:
        key = serialization.load_pem_public_key(pem) if pem else Ed25519PublicKey.from_public_bytes(raw or b"")
    except (ValueError, TypeError) as exc:
        raise BundleIntegrityError(f"verify key: not a usable public key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleIntegrityError(f"verify key: expected an Ed25519 key, got {type(key).__name__}")
    return key


def key_id(public_key: Any) -> str:
    """Short identifier of a public key (sha256 prefix of its raw bytes), recorded beside a signature.

    Args:
        public_key: An ``Ed25519PublicKey``.

    Returns:
        16 hex digits.
    """
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key_pair() -> tuple[str, str]:
    """A new Ed25519 key pair as PEM text.

    Returns:
        (private key PEM, public key PEM).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


def signature_for(manifest: bytes, signing_key: Any) -> bytes:
    """The content of ``MANIFEST.sig`` for a manifest's bytes.

    Args:
        manifest: MANIFEST.json's exact bytes.
        signing_key: An ``Ed25519PrivateKey`` (:func:`load_signing_key`).

    Returns:
        JSON ``{"algorithm", "key_id", "signature"}`` (signature in base64).
    """
    record = {
        "algorithm": SIGNATURE_ALGORITHM,
        "key_id": key_id(signing_key.public_key()),
        "signature": base64.b64encode(signing_key.sign(manifest)).decode(),
    }
    return json.dumps(record, indent=2).encode()


def sign_bundle(path: Path, signing_key: Any) -> None:
    """Write ``MANIFEST.sig`` for a bundle directory's manifest.

    Args:
        path: Bundle directory.
        signing_key: An ``Ed25519PrivateKey``.
    """
    path = Path(path)
    (path / SIGNATURE_FILE).write_bytes(signature_for((path / MANIFEST_FILE).read_bytes(), signing_key))


@dataclass(frozen=True)
class BundleTrust:
    """Which bundles a loader accepts.

    Attributes:
        verify_key: The ``Ed25519PublicKey`` manifests must be signed with (None: none configured).
        trust_unsigned: Accept a bundle without a signature (a present but invalid signature is never accepted
            when a key is configured).
    """

    verify_key: Any = None
    trust_unsigned: bool = False

    @classmethod
    def from_config(cls, verify_key: str | None, trust_unsigned: bool | None, *, remote: bool) -> BundleTrust:
        """The policy of a configuration.

        Args:
            verify_key: Public key text (``FRAUD_VERIFY_KEY``) or None.
            trust_unsigned: ``FRAUD_TRUST_UNSIGNED``: True, False or None (unset).
            remote: Whether the bundles come from a remote store (S3, Azure).

        Returns:
            With a key: signatures required unless ``trust_unsigned`` is True. Without one: unsigned bundles
            accepted when ``trust_unsigned`` is True, or when it is unset and the source is local.
        """
        key = load_verify_key(verify_key) if verify_key else None
        if trust_unsigned is None:
            trust_unsigned = key is None and not remote
        return cls(key, bool(trust_unsigned))


def verify_signature(path: Path, trust: BundleTrust) -> bool:
    """Check a bundle's ``MANIFEST.sig`` against the trusted key (reads nothing but the manifest and signature).

    Args:
        path: Bundle directory.
        trust: The policy.

    Returns:
        True when the signature was verified, False when an unsigned bundle was accepted by the policy.

    Raises:
        BundleIntegrityError: Unsigned (and not trusted), wrongly signed, or signed by another key.
    """
    from cryptography.exceptions import InvalidSignature

    path = Path(path)
    sig_path = path / SIGNATURE_FILE
    manifest_path = path / MANIFEST_FILE
    if trust.verify_key is None:
        if trust.trust_unsigned:
            LOG.warning("bundle %s: signature not checked (no verify key; unsigned bundles trusted)", path)
            return False
        raise BundleIntegrityError(
            f"bundle {path}: refusing to load a bundle whose signature cannot be checked: set FRAUD_VERIFY_KEY "
            "(the public key of the model publisher), or FRAUD_TRUST_UNSIGNED=true for development only"
        )
    if not sig_path.is_file():
        if trust.trust_unsigned:
            LOG.warning("bundle %s: unsigned, loaded because unsigned bundles are trusted", path)
            return False
        raise BundleIntegrityError(
            f"bundle {path}: unsigned ({SIGNATURE_FILE} missing); refusing to load it "
            "(publish it with FRAUD_SIGNING_KEY set, or FRAUD_TRUST_UNSIGNED=true for development only)"
        )
    try:
        record = json.loads(sig_path.read_bytes())
        if record.get("algorithm") != SIGNATURE_ALGORITHM:
            raise ValueError(f"algorithm {record.get('algorithm')!r}")
        signature = base64.b64decode(record["signature"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise BundleIntegrityError(f"bundle {path}: {SIGNATURE_FILE} is not a valid signature ({exc})") from None
    expected_id = key_id(trust.verify_key)
    if not manifest_path.is_file():
        raise BundleIntegrityError(f"bundle {path}: {MANIFEST_FILE} missing (incomplete or not a bundle)")
    try:
        trust.verify_key.verify(signature, manifest_path.read_bytes())
    except InvalidSignature:
        signer = record.get("key_id")
        other = f" (signed by key {signer}, trusted key is {expected_id})" if signer != expected_id else ""
        raise BundleIntegrityError(
            f"bundle {path}: the signature of {MANIFEST_FILE} does not verify{other}; refusing to load it (tampered?)"
        ) from None
    return True


class TrainingLineage(BaseModel):
    """Where a model came from."""

    model_config = ConfigDict(frozen=True)

    data_fingerprint: str = Field(description="sha256 over the training feature rows")
    n_rows: int
    n_fraud: int
    start: str = Field(description="first training event time, ISO 8601")
    end: str = Field(description="last training event time, ISO 8601")
    label_delay_days: int
    source: str = Field(default="", description="where the raw data came from")


class BundleMetadata(BaseModel):
    """Everything needed to serve, monitor and audit a model."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    format_version: int = 1
    model_name: str
    version: str
    model_type: str
    created_at: str
    package_version: str
    features: list[str]
    threshold: float
    review_cost: float
    calibration: dict[str, float]
    metrics: dict[str, float] = Field(default_factory=dict, description="held-out test metrics")
    validation_metrics: dict[str, float] = Field(default_factory=dict, description="calibration-window metrics")
    training: TrainingLineage
    params: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle.

    Attributes:
        model: The calibrated model (``predict_proba(X)[:, 1]`` is the fraud score).
        metadata: The bundle's metadata.
        reference: Reference feature sample with its scores (drift baseline).
        path: Directory it was loaded from.
        manifest_sha256: Digest of MANIFEST.json (identifies the exact bundle).
    """

    model: Any
    metadata: BundleMetadata
    reference: pd.DataFrame
    path: Path
    manifest_sha256: str


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file.

    Args:
        path: File to hash.

    Returns:
        The digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 over a frame's feature rows and labels (order-sensitive).

    Args:
        frame: Feature frame.

    Returns:
        Hex digest.
    """
    cols = [c for c in (*schema.FEATURES, schema.LABEL) if c in frame.columns]
    hashed = pd.util.hash_pandas_object(frame[cols], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def make_version(created: datetime, model_digest: str) -> str:
    """A sortable, unique version id: UTC creation time plus the model file's digest prefix.

    Args:
        created: Creation time.
        model_digest: sha256 of the model file.

    Returns:
        For example ``20261124-153000-1a2b3c4d``.
    """
    return f"{created.astimezone(UTC):%Y%m%d-%H%M%S}-{model_digest[:8]}"


def reference_sample(frame: pd.DataFrame, scores: np.ndarray, n: int = 5_000, seed: int = 0) -> pd.DataFrame:
    """A random sample of feature rows with their scores, the drift baseline.

    Args:
        frame: Feature frame the model was trained or validated on.
        scores: Calibrated scores aligned with ``frame``.
        n: Sample size.
        seed: Sampling seed.

    Returns:
        Features in schema order plus ``fraud_score`` (and ``is_fraud`` when present).
    """
    cols = list(schema.FEATURES) + ([schema.LABEL] if schema.LABEL in frame.columns else [])
    ref = frame[cols].copy()
    ref[SCORE_COLUMN] = scores
    if len(ref) > n:
        ref = ref.sample(n=n, random_state=seed)
    return ref.reset_index(drop=True)


def write_bundle(
    out_dir: Path,
    *,
    model: Any,
    model_name: str,
    model_type: str,
    threshold: float,
    review_cost: float,
    calibration: dict[str, float],
    training: TrainingLineage,
    reference: pd.DataFrame,
    metrics: dict[str, float] | None = None,
    validation_metrics: dict[str, float] | None = None,
    params: dict[str, Any] | None = None,
) -> BundleMetadata:
    """Write a bundle directory atomically: build it under a temporary name, then rename into place.

    Args:
        out_dir: Destination directory; must not exist or be empty.
        model: Fitted model.
        model_name: Name the model is served under.
        model_type: ``hgb``, ``logreg`` or ``rf``.
        threshold: Decision threshold.
        review_cost: Review cost the threshold was chosen with.
        calibration: Platt parameters (``a``, ``b``).
        training: Lineage.
        reference: Reference sample (see :func:`reference_sample`).
        metrics: Held-out test metrics.
        validation_metrics: Calibration-window metrics.
        params: Training parameters.

    Returns:
        The metadata written.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"bundle directory {out_dir} exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir()
    try:
        joblib.dump(model, tmp / MODEL_FILE, compress=3)
        created = datetime.now(UTC)
        metadata = BundleMetadata(
            model_name=model_name,
            version=make_version(created, sha256_file(tmp / MODEL_FILE)),
            model_type=model_type,
            created_at=created.isoformat(),
            package_version=__version__,
            features=list(schema.FEATURES),
            threshold=float(threshold),
            review_cost=float(review_cost),
            calibration={k: float(v) for k, v in calibration.items()},
            metrics=_finite(metrics or {}),
            validation_metrics=_finite(validation_metrics or {}),
            training=training,
            params=params or {},
        )
        (tmp / METADATA_FILE).write_text(metadata.model_dump_json(indent=2))
        reference.to_parquet(tmp / REFERENCE_FILE, index=False)
        manifest = {"format_version": 1, "files": {name: sha256_file(tmp / name) for name in BUNDLE_FILES}}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    LOG.info("wrote bundle %s version %s", out_dir, metadata.version)
    return metadata


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}


def verify_bundle(path: Path, expected_manifest_sha256: str | None = None) -> str:
    """Check that a bundle is complete and every file matches its manifest digest.

    Args:
        path: Bundle directory.
        expected_manifest_sha256: When given, MANIFEST.json itself must have this digest.

    Returns:
        The manifest's sha256.

    Raises:
        BundleIntegrityError: A file is missing or its digest differs.
    """
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleIntegrityError(f"bundle {path}: {MANIFEST_FILE} missing (incomplete or not a bundle)")
    manifest_digest = sha256_file(manifest_path)
    if expected_manifest_sha256 and manifest_digest != expected_manifest_sha256:
        raise BundleIntegrityError(
            f"bundle {path}: {MANIFEST_FILE} digest {manifest_digest[:12]} != expected {expected_manifest_sha256[:12]}"
        )
    try:
        files = json.loads(manifest_path.read_text())["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ValueError("'files' must map file names to sha256 digests")
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleIntegrityError(f"bundle {path}: {MANIFEST_FILE} is not a valid manifest: {exc}") from exc
    unexpected = sorted(set(files) - set(BUNDLE_FILES))
    if unexpected:
        raise BundleIntegrityError(f"bundle {path}: {MANIFEST_FILE} names an unexpected file {unexpected[0]!r}")
    for name in BUNDLE_FILES:
        if name not in files:
            raise BundleIntegrityError(f"bundle {path}: manifest lists no digest for {name}")
        file_path = path / name
        if not file_path.is_file():
            raise BundleIntegrityError(f"bundle {path}: {name} missing")
        actual = sha256_file(file_path)
        if actual != files[name]:
            raise BundleIntegrityError(
                f"bundle {path}: {name} digest {actual[:12]} does not match manifest {files[name][:12]} (tampered?)"
            )
    return manifest_digest


def check_metadata(metadata: BundleMetadata, where: str) -> None:
    """Refuse metadata no trained bundle has: a threshold outside (0, 1), non-finite calibration, another schema.

    Args:
        metadata: The bundle's metadata.
        where: The bundle's location, for messages.

    Raises:
        BundleIntegrityError: A value is out of range.
    """
    if list(metadata.features) != list(schema.FEATURES):
        raise BundleIntegrityError(
            f"bundle {where}: feature schema differs from this package's ({len(metadata.features)} vs "
            f"{len(schema.FEATURES)} features); retrain or use a matching package version"
        )
    if not (math.isfinite(metadata.threshold) and 0.0 < metadata.threshold < 1.0):
        raise BundleIntegrityError(f"bundle {where}: threshold {metadata.threshold!r} is not in (0, 1)")
    if not math.isfinite(metadata.review_cost) or metadata.review_cost < 0:
        raise BundleIntegrityError(f"bundle {where}: review cost {metadata.review_cost!r} is not a finite cost >= 0")
    bad = sorted(k for k, v in metadata.calibration.items() if not math.isfinite(v))
    if bad:
        raise BundleIntegrityError(f"bundle {where}: calibration parameter {bad[0]!r} is not finite")


def load_bundle(
    path: str | Path, expected_manifest_sha256: str | None = None, *, trust: BundleTrust | None = None
) -> Bundle:
    """Verify and load a bundle directory: signature, digests, metadata, and only then unpickle the model.

    Args:
        path: Bundle directory.
        expected_manifest_sha256: Optional digest MANIFEST.json must have (e.g. from the registry's alias).
        trust: Signature policy; default: a local directory's (unsigned accepted, with a warning, since no key
            is configured).

    Returns:
        The loaded bundle.

    Raises:
        BundleIntegrityError: Verification failed; nothing is unpickled.
    """
    path = Path(path)
    verify_signature(path, trust if trust is not None else BundleTrust.from_config(None, None, remote=False))
    digest = verify_bundle(path, expected_manifest_sha256)
    try:
        metadata = BundleMetadata.model_validate_json((path / METADATA_FILE).read_text())
    except ValueError as exc:
        raise BundleIntegrityError(f"bundle {path}: {METADATA_FILE} is invalid: {exc}") from None
    check_metadata(metadata, str(path))
    model = joblib.load(path / MODEL_FILE)
    reference = pd.read_parquet(path / REFERENCE_FILE)
    return Bundle(model=model, metadata=metadata, reference=reference, path=path, manifest_sha256=digest)
