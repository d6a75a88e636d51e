"""The S3 store and the registry against a real SeaweedFS server on loopback."""

from pathlib import Path

import pytest

from fraud_detection.registry import ModelRegistry
from fraud_detection.settings import Settings
from fraud_detection.store import S3Store, StoreError, open_store

pytestmark = pytest.mark.integration


def _store(s3_server, prefix: str = "fraud") -> S3Store:
    store = open_store(
        f"s3://models-{prefix}/{prefix}",
        s3_endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    assert isinstance(store, S3Store)
    return store


def test_s3_round_trip_list_delete(s3_server):
    store = _store(s3_server, "rt")
    store.write_bytes("x/y.bin", b"\x00\x01")
    store.write_bytes("x/z.bin", b"2")
    assert store.read_bytes("x/y.bin") == b"\x00\x01"
    assert store.list("x/") == ["x/y.bin", "x/z.bin"]
    store.delete("x/y.bin")
    assert not store.exists("x/y.bin")
    with pytest.raises(KeyError):
        store.read_bytes("nope")


def test_registry_on_s3_publishes_and_loads_a_verified_bundle(s3_server, tiny_bundle: Path, tmp_path: Path):
    reg = ModelRegistry(_store(s3_server, "reg"), "fraud-detector")
    version = reg.publish(tiny_bundle)
    reg.set_alias("canary", version)
    assert reg.versions() == [version]
    bundle = reg.load("canary", tmp_path / "cache")
    assert bundle.metadata.version == version
    assert reg.store.uri().startswith("s3://models-reg/reg/")


def test_tampered_object_on_s3_is_refused(s3_server, tiny_bundle: Path, tmp_path: Path):
    from fraud_detection.bundle import BundleIntegrityError

    reg = ModelRegistry(_store(s3_server, "tamper"), "fraud-detector")
    version = reg.publish(tiny_bundle)
    reg.store.write_bytes(reg.version_prefix(version) + "metadata.json", b"{}")
    with pytest.raises(BundleIntegrityError, match=r"metadata\.json digest"):
        reg.load(version, tmp_path / "cache")


def test_wrong_credentials_fail_with_a_clear_error(s3_server):
    with pytest.raises(StoreError, match="S3 bucket"):
        open_store("s3://b/p", s3_endpoint=s3_server.endpoint, access_key="wrong", secret_key="wrong")


def test_settings_read_credentials_from_the_environment(s3_server, monkeypatch):
    monkeypatch.setenv("FRAUD_STORE_URI", "s3://envbucket/p")
    monkeypatch.setenv("FRAUD_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    settings = Settings()
    assert s3_server.secret_key not in repr(settings)
    store = settings.open_store()
    store.write_bytes("k", b"v")
    assert store.read_bytes("k") == b"v"
