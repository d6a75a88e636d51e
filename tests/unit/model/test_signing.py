"""Signed bundles: the manifest's Ed25519 signature is checked before anything is unpickled; metadata is validated."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import joblib
import pytest
from cryptography.hazmat.primitives import serialization

from fraud_detection.model.bundle import (
    BUNDLE_FILES,
    MANIFEST_FILE,
    METADATA_FILE,
    MODEL_FILE,
    SIGNATURE_FILE,
    BundleIntegrityError,
    BundleTrust,
    generate_key_pair,
    load_bundle,
    load_signing_key,
    load_verify_key,
    sha256_file,
    sign_bundle,
)
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.store.base import BundleTrustConfig
from fraud_detection.store.local import LocalStore

MODEL = "fraud-detector"


class _TouchOnLoad:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return (Path.touch, (self.marker,))


def _reseal(bundle: Path) -> str:
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["files"] = {name: sha256_file(bundle / name) for name in BUNDLE_FILES}
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return sha256_file(bundle / MANIFEST_FILE)


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return generate_key_pair()


@pytest.fixture
def signed(tiny_bundle: Path, tmp_path: Path, keys: tuple[str, str]) -> Path:
    copy = tmp_path / "signed"
    shutil.copytree(tiny_bundle, copy)
    sign_bundle(copy, load_signing_key(keys[0]))
    return copy


def _trust(public: str, trust_unsigned: bool | None = None, remote: bool = True) -> BundleTrust:
    return BundleTrust.from_config(public, trust_unsigned, remote=remote)


def test_a_signed_bundle_loads_with_its_public_key(signed: Path, keys: tuple[str, str]):
    bundle = load_bundle(signed, trust=_trust(keys[1]))
    assert bundle.metadata.model_name == MODEL


def test_keys_are_accepted_as_pem_or_raw_base64(signed: Path, keys: tuple[str, str]):
    public = load_verify_key(keys[1])
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert load_bundle(signed, trust=_trust(base64.b64encode(raw).decode())).metadata
    private = load_signing_key(keys[0])
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert load_signing_key(base64.b64encode(raw_private).decode()).public_key() == public


@pytest.mark.parametrize("text", ["not a key", base64.b64encode(b"short").decode()])
def test_a_malformed_key_is_a_clear_error_that_does_not_show_it(text: str):
    with pytest.raises(BundleIntegrityError, match="verify key") as info:
        load_verify_key(text)
    assert text not in str(info.value)


def test_an_unsigned_bundle_is_refused_when_a_key_is_configured(tiny_bundle: Path, keys: tuple[str, str]):
    with pytest.raises(BundleIntegrityError, match="unsigned"):
        load_bundle(tiny_bundle, trust=_trust(keys[1]))


def test_an_unsigned_bundle_loads_when_trusted_explicitly(tiny_bundle: Path, keys: tuple[str, str]):
    assert load_bundle(tiny_bundle, trust=_trust(keys[1], trust_unsigned=True)).metadata


def test_without_a_key_unsigned_loads_only_from_a_local_source(tiny_bundle: Path):
    assert load_bundle(tiny_bundle).metadata  # local default: development keeps working without keys
    with pytest.raises(BundleIntegrityError, match="FRAUD_VERIFY_KEY"):
        load_bundle(tiny_bundle, trust=BundleTrust.from_config(None, None, remote=True))
    with pytest.raises(BundleIntegrityError, match="FRAUD_VERIFY_KEY"):
        load_bundle(tiny_bundle, trust=BundleTrust.from_config(None, False, remote=False))
    assert load_bundle(tiny_bundle, trust=BundleTrust.from_config(None, True, remote=True)).metadata


def test_a_bundle_signed_by_another_key_is_refused_even_when_unsigned_ones_are_trusted(signed: Path):
    _, other_public = generate_key_pair()
    with pytest.raises(BundleIntegrityError, match="does not verify"):
        load_bundle(signed, trust=_trust(other_public, trust_unsigned=True))


def test_a_malicious_pickle_with_a_resealed_manifest_never_runs(signed: Path, tmp_path: Path, keys: tuple[str, str]):
    marker = tmp_path / "pwned"
    joblib.dump(_TouchOnLoad(marker), signed / MODEL_FILE)
    digest = _reseal(signed)
    with pytest.raises(BundleIntegrityError, match="does not verify"):
        load_bundle(signed, digest, trust=_trust(keys[1]))
    (signed / SIGNATURE_FILE).unlink()  # dropping the signature does not help either
    with pytest.raises(BundleIntegrityError, match="unsigned"):
        load_bundle(signed, digest, trust=_trust(keys[1]))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("threshold", 2.0, "threshold"),
        ("threshold", -1.0, "threshold"),
        ("threshold", 0.0, "threshold"),
        ("calibration", {"a": float("nan"), "b": 0.0}, "calibration"),
        ("calibration", {"a": 1.0, "b": float("inf")}, "calibration"),
        ("features", ["amount"], "feature schema"),
    ],
)
def test_out_of_range_metadata_with_a_matching_manifest_is_refused_before_unpickling(
    tiny_bundle: Path, tmp_path: Path, field: str, value: Any, message: str
):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    marker = tmp_path / "pwned"
    joblib.dump(_TouchOnLoad(marker), copy / MODEL_FILE)
    meta = json.loads((copy / METADATA_FILE).read_text())
    meta[field] = value
    (copy / METADATA_FILE).write_text(json.dumps(meta).replace("NaN", "NaN"))
    _reseal(copy)
    with pytest.raises(BundleIntegrityError, match=message):
        load_bundle(copy)
    assert not marker.exists()


def _published(tmp_path: Path, tiny_bundle: Path, keys: tuple[str, str]) -> tuple[LocalStore, str]:
    store = LocalStore(tmp_path / "store")
    version = ModelRegistry(store, MODEL, signing_key=keys[0]).publish(tiny_bundle)
    return store, version


def test_publish_signs_the_manifest_and_uploads_the_signature_before_it(
    tiny_bundle: Path, tmp_path: Path, keys: tuple[str, str], monkeypatch: pytest.MonkeyPatch
):
    store = LocalStore(tmp_path / "store")
    written: list[str] = []
    original = store.write_bytes
    monkeypatch.setattr(
        store, "write_bytes", lambda key, data: (written.append(key.rsplit("/", 1)[-1]), original(key, data))
    )
    version = ModelRegistry(store, MODEL, signing_key=keys[0]).publish(tiny_bundle)
    assert written[-2:] == [SIGNATURE_FILE, MANIFEST_FILE]
    store.trust = BundleTrustConfig(verify_key=keys[1])
    registry = ModelRegistry(store, MODEL)
    registry.set_alias("production", version)
    assert registry.load("production", tmp_path / "cache").metadata.version == version


def test_the_registry_refuses_a_tampered_version_with_manifest_and_alias_digest_rewritten(
    tiny_bundle: Path, tmp_path: Path, keys: tuple[str, str]
):
    store, version = _published(tmp_path, tiny_bundle, keys)
    registry = ModelRegistry(store, MODEL)
    registry.set_alias("production", version)
    vdir = store.root / registry.version_prefix(version)
    marker = tmp_path / "pwned"
    joblib.dump(_TouchOnLoad(marker), vdir / MODEL_FILE)
    digest = _reseal(vdir)
    alias_path = store.root / f"models/{MODEL}/aliases/production.json"
    record = json.loads(alias_path.read_text())
    alias_path.write_text(json.dumps({**record, "manifest_sha256": digest}))
    store.trust = BundleTrustConfig(verify_key=keys[1])
    with pytest.raises(BundleIntegrityError, match="does not verify"):
        ModelRegistry(store, MODEL).load("production", tmp_path / "cache")
    assert not marker.exists()


def test_an_unsigned_version_on_a_remote_store_is_refused_without_configuration(tiny_bundle: Path, tmp_path: Path):
    class RemoteLike(LocalStore):
        remote = True

    store = RemoteLike(tmp_path / "store")
    version = ModelRegistry(store, MODEL).publish(tiny_bundle)
    with pytest.raises(BundleIntegrityError, match="FRAUD_VERIFY_KEY"):
        ModelRegistry(store, MODEL).load(version, tmp_path / "cache")
    store.trust = BundleTrustConfig(trust_unsigned=True)
    assert ModelRegistry(store, MODEL).load(version, tmp_path / "cache").metadata.version == version


def test_fraud_keys_generate_writes_a_usable_pair_and_refuses_to_overwrite(tmp_path: Path, tiny_bundle: Path):
    from typer.testing import CliRunner

    from cli.app import app

    out = tmp_path / "keys"
    result = CliRunner().invoke(app, ["keys", "generate", "--output", str(out)])
    assert result.exit_code == 0, result.output
    private, public = (out / "signing-key.pem").read_text(), (out / "verify-key.pem").read_text()
    assert (out / "signing-key.pem").stat().st_mode & 0o777 == 0o600
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    sign_bundle(copy, load_signing_key(private))
    assert load_bundle(copy, trust=_trust(public)).metadata
    again = CliRunner().invoke(app, ["keys", "generate", "--output", str(out)])
    assert again.exit_code != 0 and "exists" in again.output
