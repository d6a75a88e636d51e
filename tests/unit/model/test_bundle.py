import json
import shutil
from pathlib import Path

import pytest

from fraud_detection.data import schema
from fraud_detection.model.bundle import MANIFEST_FILE, BundleIntegrityError, load_bundle, verify_bundle


def test_bundle_is_self_contained_and_loads(tiny_bundle: Path, small_features):
    bundle = load_bundle(tiny_bundle)
    meta = bundle.metadata
    assert meta.features == list(schema.FEATURES)
    assert 0 < meta.threshold <= 1
    assert {"average_precision", "card_precision_at_100", "roc_auc"} <= set(meta.metrics)
    assert meta.training.n_rows > 0 and len(meta.training.data_fingerprint) == 64
    assert set(bundle.reference.columns) >= set(schema.FEATURES) | {"fraud_score"}
    manifest = json.loads((tiny_bundle / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {"model.joblib", "metadata.json", "reference.parquet"}
    proba = bundle.model.predict_proba(small_features[list(schema.FEATURES)].to_numpy()[:5])
    assert proba.shape == (5, 2)


@pytest.mark.parametrize("victim", ["model.joblib", "metadata.json", "reference.parquet"])
def test_tampered_bundle_is_refused_before_unpickling(tiny_bundle: Path, tmp_path: Path, victim: str):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / victim, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleIntegrityError, match=f"{victim} digest"):
        load_bundle(copy)


def test_incomplete_bundle_and_wrong_manifest_digest_are_refused(tiny_bundle: Path, tmp_path: Path):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    with pytest.raises(BundleIntegrityError, match="expected"):
        verify_bundle(copy, expected_manifest_sha256="0" * 64)
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(BundleIntegrityError, match=r"MANIFEST\.json missing"):
        load_bundle(copy)
