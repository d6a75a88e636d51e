import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from fraud_detection.data import schema
from fraud_detection.model import bundle as bundle_module
from fraud_detection.model.bundle import (
    BUNDLE_FILES,
    MANIFEST_FILE,
    METADATA_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    BundleIntegrityError,
    BundleMetadata,
    load_bundle,
    sha256_file,
    verify_bundle,
    write_bundle,
)


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


def test_the_model_file_loads_with_only_numpy_pandas_and_scikit_learn(tiny_bundle: Path, small_features):
    """Another runtime (MLServer's stock sklearn server, a notebook) loads model.joblib without pyarrow or the
    platform's data stack: the pickle's classes import only numpy, pandas and scikit-learn."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('pyarrow', 'pyspark', 'redis', 'kserve', 'evidently'):\n"
        "    sys.modules[name] = None  # importing it now fails\n"
        "import joblib, numpy as np\n"
        f"model = joblib.load({str(tiny_bundle / MODEL_FILE)!r})\n"
        f"print(model.predict_proba(np.zeros((1, {len(schema.FEATURES)})))[0, 1])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 0.0 <= float(done.stdout) <= 1.0


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


# ---------------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------------


def _rewrite(source: Path, out: Path, **overrides: Any) -> BundleMetadata:
    """Write a new bundle from a loaded one (its model, lineage and reference), with some arguments changed."""
    loaded = load_bundle(source)
    meta = loaded.metadata
    arguments: dict[str, Any] = {
        "model": loaded.model,
        "model_name": meta.model_name,
        "model_type": meta.model_type,
        "threshold": meta.threshold,
        "review_cost": meta.review_cost,
        "calibration": meta.calibration,
        "training": meta.training,
        "reference": loaded.reference,
        "metrics": meta.metrics,
        "validation_metrics": meta.validation_metrics,
        "params": meta.params,
    }
    return write_bundle(out, **{**arguments, **overrides})


def test_write_then_load_gives_back_the_metadata_threshold_reference_and_model(
    tiny_bundle: Path, tmp_path: Path, small_features
):
    source = load_bundle(tiny_bundle)
    written = _rewrite(tiny_bundle, tmp_path / "copy", threshold=0.123, params={"max_iter": 40, "note": "x"})
    loaded = load_bundle(tmp_path / "copy")
    assert loaded.metadata == written
    assert loaded.metadata.threshold == 0.123
    assert loaded.metadata.params == {"max_iter": 40, "note": "x"}
    assert loaded.metadata.training == source.metadata.training
    assert loaded.metadata.calibration == source.metadata.calibration
    pd.testing.assert_frame_equal(loaded.reference, source.reference)
    rows = small_features[list(schema.FEATURES)].to_numpy()[:50]
    np.testing.assert_array_equal(loaded.model.predict_proba(rows), source.model.predict_proba(rows))
    assert loaded.path == tmp_path / "copy"
    assert loaded.manifest_sha256 == sha256_file(tmp_path / "copy" / MANIFEST_FILE)


def test_written_manifest_holds_the_sha256_of_each_file_and_the_version_names_the_model_digest(
    tiny_bundle: Path, tmp_path: Path
):
    meta = _rewrite(tiny_bundle, tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 1
    assert manifest["files"] == {name: sha256_file(tmp_path / "b" / name) for name in BUNDLE_FILES}
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{8}", meta.version)
    assert meta.version.endswith(manifest["files"][MODEL_FILE][:8])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted([*BUNDLE_FILES, MANIFEST_FILE])


def test_non_finite_metrics_are_dropped_on_write(tiny_bundle: Path, tmp_path: Path):
    _rewrite(tiny_bundle, tmp_path / "b", metrics={"roc_auc": 0.9, "average_precision": float("nan")})
    assert load_bundle(tmp_path / "b").metadata.metrics == {"roc_auc": 0.9}


def test_write_refuses_a_non_empty_directory_and_accepts_an_empty_one(tiny_bundle: Path, tmp_path: Path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        _rewrite(tiny_bundle, tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    _rewrite(tiny_bundle, tmp_path / "empty")
    verify_bundle(tmp_path / "empty")


def test_a_failed_write_leaves_neither_the_bundle_nor_a_temporary_directory(tiny_bundle: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Exception, match=r"(?i)pickl"):
        _rewrite(tiny_bundle, out / "b", model=lambda x: x)  # a lambda cannot be pickled
    assert list(out.iterdir()) == []


def test_verify_returns_the_manifest_digest_and_accepts_the_expected_one(tiny_bundle: Path):
    digest = verify_bundle(tiny_bundle)
    assert digest == sha256_file(tiny_bundle / MANIFEST_FILE)
    assert verify_bundle(tiny_bundle, expected_manifest_sha256=digest) == digest
    assert load_bundle(tiny_bundle, expected_manifest_sha256=digest).manifest_sha256 == digest


# ---------------------------------------------------------------------------------------------------------------
# Tampering is refused before anything is unpickled
# ---------------------------------------------------------------------------------------------------------------


class _TouchOnLoad:
    """Pickles to a call of ``Path.touch(marker)``: unpickling it leaves the marker file behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return (Path.touch, (self.marker,))


def _reseal(bundle: Path) -> str:
    """Rewrite MANIFEST.json to match the files as they are now (what someone who can write the bundle can do)."""
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["files"] = {name: sha256_file(bundle / name) for name in BUNDLE_FILES}
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return sha256_file(bundle / MANIFEST_FILE)


@dataclass
class Booby:
    """A copy of the tiny bundle whose model.joblib creates ``marker`` when unpickled."""

    path: Path
    marker: Path
    original_manifest_sha256: str


@pytest.fixture
def booby(tiny_bundle: Path, tmp_path: Path) -> Booby:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    original = sha256_file(copy / MANIFEST_FILE)
    marker = tmp_path / "unpickled.marker"
    joblib.dump(_TouchOnLoad(marker), copy / MODEL_FILE)
    return Booby(copy, marker, original)


def test_the_booby_trapped_model_does_run_code_when_loaded_unchecked(booby: Booby):
    """Control: the payload works, so a missing marker in the other tests means nothing was unpickled."""
    _reseal(booby.path)
    bundle = load_bundle(booby.path)  # the manifest was resealed and no expected digest is given
    assert booby.marker.exists()
    assert bundle.model is None


def test_a_replaced_model_is_refused_before_unpickling(booby: Booby):
    with pytest.raises(BundleIntegrityError, match=r"model\.joblib digest .* does not match manifest"):
        load_bundle(booby.path)
    assert not booby.marker.exists()


def test_a_changed_byte_in_the_model_is_refused(tiny_bundle: Path, tmp_path: Path):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    data = bytearray((copy / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"model\.joblib digest .* \(tampered\?\)"):
        load_bundle(copy)


def test_a_changed_metadata_is_refused_before_unpickling(booby: Booby):
    _reseal(booby.path)
    metadata = json.loads((booby.path / METADATA_FILE).read_text())
    metadata["threshold"] = 0.999  # would let almost every fraud through
    (booby.path / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    with pytest.raises(BundleIntegrityError, match=r"metadata\.json digest"):
        load_bundle(booby.path)
    assert not booby.marker.exists()


def test_a_changed_reference_is_refused_before_unpickling(booby: Booby):
    _reseal(booby.path)
    data = bytearray((booby.path / REFERENCE_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (booby.path / REFERENCE_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"reference\.parquet digest"):
        load_bundle(booby.path)
    assert not booby.marker.exists()


@pytest.mark.parametrize("victim", [METADATA_FILE, REFERENCE_FILE, MODEL_FILE])
def test_a_deleted_file_is_refused_before_unpickling(booby: Booby, victim: str):
    _reseal(booby.path)
    (booby.path / victim).unlink()
    with pytest.raises(BundleIntegrityError, match=f"{re.escape(victim)} missing"):
        load_bundle(booby.path)
    assert not booby.marker.exists()


@pytest.mark.parametrize("victim", [METADATA_FILE, REFERENCE_FILE, MODEL_FILE])
def test_a_manifest_without_a_files_digest_is_refused_before_unpickling(booby: Booby, victim: str):
    _reseal(booby.path)
    manifest = json.loads((booby.path / MANIFEST_FILE).read_text())
    del manifest["files"][victim]
    (booby.path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match=f"manifest lists no digest for {re.escape(victim)}"):
        load_bundle(booby.path)
    assert not booby.marker.exists()


def test_a_manifest_resealed_over_a_tampered_model_is_refused_when_the_expected_digest_is_given(booby: Booby):
    assert _reseal(booby.path) != booby.original_manifest_sha256
    verify_bundle(booby.path)  # self-consistent: only the expected digest can catch this
    with pytest.raises(BundleIntegrityError, match=f"!= expected {booby.original_manifest_sha256[:12]}"):
        load_bundle(booby.path, expected_manifest_sha256=booby.original_manifest_sha256)
    assert not booby.marker.exists()


@pytest.mark.parametrize("text", ["", "{not json", '{"files": {"model.joblib": ', "\x00\x01binary"])
def test_a_manifest_that_is_not_json_is_refused_before_unpickling(booby: Booby, text: str):
    (booby.path / MANIFEST_FILE).write_text(text)
    with pytest.raises(BundleIntegrityError, match="not a valid manifest"):
        load_bundle(booby.path)
    assert not booby.marker.exists()


def test_a_manifest_without_files_is_refused_before_unpickling(booby: Booby):
    (booby.path / MANIFEST_FILE).write_text('{"format_version": 1}')
    with pytest.raises(BundleIntegrityError, match="not a valid manifest"):
        load_bundle(booby.path)
    assert not booby.marker.exists()


@pytest.mark.parametrize("text", ["[]", '"files"', "null", '{"files": ["model.joblib"]}'])
def test_a_manifest_that_is_json_but_not_a_mapping_is_refused_as_an_integrity_error(booby: Booby, text: str):
    (booby.path / MANIFEST_FILE).write_text(text)
    try:
        with pytest.raises(BundleIntegrityError, match="not a valid manifest"):
            load_bundle(booby.path)
    finally:
        assert not booby.marker.exists()


def test_a_manifest_path_outside_the_bundle_is_never_read(booby: Booby, monkeypatch: pytest.MonkeyPatch):
    manifest = json.loads((booby.path / MANIFEST_FILE).read_text())
    outside = booby.path.parent / "x"
    outside.write_bytes(b"outside")
    manifest["files"]["../x"] = sha256_file(outside)
    (booby.path / MANIFEST_FILE).write_text(json.dumps(manifest))
    hashed: list[Path] = []
    real = bundle_module.sha256_file
    monkeypatch.setattr(bundle_module, "sha256_file", lambda p: hashed.append(Path(p)) or real(p))
    with pytest.raises(BundleIntegrityError, match=r"unexpected file '\.\./x'"):
        load_bundle(booby.path)
    assert not booby.marker.exists()
    assert all(p.resolve().parent == booby.path.resolve() for p in hashed)


def test_a_manifest_naming_a_path_outside_the_bundle_is_refused(tiny_bundle: Path, tmp_path: Path):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["files"]["../x"] = "0" * 64
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError):
        verify_bundle(copy)


def test_an_extra_file_in_the_bundle_is_ignored_and_never_unpickled(tiny_bundle: Path, tmp_path: Path):
    """The manifest covers the three bundle files; extra files (none is checked) are never loaded."""
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    marker = tmp_path / "unpickled.marker"
    joblib.dump(_TouchOnLoad(marker), copy / "extra.joblib")
    assert verify_bundle(copy) == sha256_file(tiny_bundle / MANIFEST_FILE)
    assert load_bundle(copy).model is not None
    assert not marker.exists()


def test_a_resealed_bundle_with_another_feature_schema_is_refused_before_unpickling(booby: Booby):
    metadata = json.loads((booby.path / METADATA_FILE).read_text())
    metadata["features"] = metadata["features"][:-1]
    (booby.path / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    _reseal(booby.path)
    with pytest.raises(BundleIntegrityError, match="feature schema differs"):
        load_bundle(booby.path)
    assert not booby.marker.exists()
