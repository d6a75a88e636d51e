"""The model bundle: one self-contained, digest-verified directory.

Layout (also what KServe's storage initializer puts in ``/mnt/models``)::

    model.joblib       the fitted, calibrated scikit-learn model
    metadata.json      feature schema, threshold, metrics, lineage (BundleMetadata)
    reference.parquet  a sample of training features and scores, the drift baseline
    MANIFEST.json      sha256 of each file above; written last

Loading verifies every digest before unpickling and refuses a bundle that does not match.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
BUNDLE_FILES: tuple[str, ...] = (MODEL_FILE, METADATA_FILE, REFERENCE_FILE)
SCORE_COLUMN = "fraud_score"


class BundleIntegrityError(RuntimeError):
    """A bundle is incomplete or a file's digest does not match its manifest."""


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


def load_bundle(path: str | Path, expected_manifest_sha256: str | None = None) -> Bundle:
    """Verify and load a bundle directory.

    Args:
        path: Bundle directory.
        expected_manifest_sha256: Optional digest MANIFEST.json must have (e.g. from the registry's alias).

    Returns:
        The loaded bundle.

    Raises:
        BundleIntegrityError: Verification failed; nothing is unpickled.
    """
    path = Path(path)
    digest = verify_bundle(path, expected_manifest_sha256)
    metadata = BundleMetadata.model_validate_json((path / METADATA_FILE).read_text())
    if list(metadata.features) != list(schema.FEATURES):
        raise BundleIntegrityError(
            f"bundle {path}: feature schema differs from this package's ({len(metadata.features)} vs "
            f"{len(schema.FEATURES)} features); retrain or use a matching package version"
        )
    model = joblib.load(path / MODEL_FILE)
    reference = pd.read_parquet(path / REFERENCE_FILE)
    return Bundle(model=model, metadata=metadata, reference=reference, path=path, manifest_sha256=digest)
