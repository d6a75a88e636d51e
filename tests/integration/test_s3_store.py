"""The S3 store and the registry against a real SeaweedFS server on loopback."""

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from minio import Minio

from fraud_detection.model.bundle import generate_key_pair
from fraud_detection.model.registry import ModelRegistry, open_registry
from fraud_detection.settings import DriftSettings, PipelineSettings, RolloutSettings, ServeSettings
from fraud_detection.store.base import BundleTrustConfig, StoreError
from fraud_detection.store.s3 import S3Store
from fraud_detection.store.uri import open_configured_store, open_store

pytestmark = pytest.mark.integration


def _store(s3_server, prefix: str = "fraud", bucket: str | None = None) -> S3Store:
    store = open_store(
        f"s3://{bucket or f'models-{prefix}'}/{prefix}",
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
    private, public = generate_key_pair()
    store = _store(s3_server, "reg")
    store.trust = BundleTrustConfig(verify_key=public)  # s3:// loads only signed bundles without trust_unsigned
    reg = ModelRegistry(store, "fraud-detector", signing_key=private)
    version = reg.publish(tiny_bundle)
    reg.set_alias("canary", version)
    assert reg.versions() == [version]
    bundle = reg.load("canary", tmp_path / "cache")
    assert bundle.metadata.version == version
    assert reg.store.uri().startswith("s3://models-reg/reg/")


def test_tampered_object_on_s3_is_refused(s3_server, tiny_bundle: Path, tmp_path: Path):
    from fraud_detection.model.bundle import BundleIntegrityError

    private, public = generate_key_pair()
    store = _store(s3_server, "tamper")
    store.trust = BundleTrustConfig(verify_key=public, trust_unsigned=True)  # signature valid: digests are checked
    reg = ModelRegistry(store, "fraud-detector", signing_key=private)
    version = reg.publish(tiny_bundle)
    reg.store.write_bytes(reg.version_prefix(version) + "metadata.json", b"{}")
    with pytest.raises(BundleIntegrityError, match=r"metadata\.json digest"):
        reg.load(version, tmp_path / "cache")


def _bucket_exists(s3_server, bucket: str) -> bool:
    client = Minio(s3_server.endpoint.removeprefix("http://"), s3_server.access_key, s3_server.secret_key, secure=False)
    return client.bucket_exists(bucket)


def test_missing_bucket_reads_as_missing_and_is_not_created(s3_server, tmp_path: Path):
    store = _store(s3_server, "p", bucket="typo-bucket")  # opening sends no request
    with pytest.raises(
        KeyError, match=rf"no bucket 'typo-bucket' at {s3_server.endpoint}: cannot read s3://typo-bucket/p/k"
    ):
        store.read_bytes("k")
    assert store.list("") == []
    assert not store.exists("k")
    store.delete("k")  # nothing to delete
    with pytest.raises(KeyError, match=r"no bucket 'typo-bucket' at .*: nothing under s3://typo-bucket/p/d/"):
        store.download_dir("d/", tmp_path / "out")
    assert not _bucket_exists(s3_server, "typo-bucket")


def test_first_write_creates_the_missing_bucket(s3_server, caplog):
    caplog.set_level(logging.INFO, logger="fraud_detection.store")
    store = _store(s3_server, "p", bucket="created-on-write")
    assert not _bucket_exists(s3_server, "created-on-write")
    store.write_bytes("a/k", b"v")
    assert _bucket_exists(s3_server, "created-on-write")
    assert store.read_bytes("a/k") == b"v"
    assert store.list("") == ["a/k"]
    assert "created S3 bucket 'created-on-write'" in caplog.text


def test_concurrent_first_writes_all_succeed(s3_server):
    stores = [_store(s3_server, f"w{i}", bucket="raced") for i in range(8)]  # several pods, one missing bucket
    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(lambda s: s.write_bytes("k", s.prefix.encode()), stores))
    assert _store(s3_server, "", bucket="raced").list("") == [f"w{i}/k" for i in range(8)]


def test_create_bucket_creates_it_when_opened(s3_server):
    for _ in range(2):  # the second time it exists already
        S3Store("eager", "p", s3_server.endpoint, s3_server.access_key, s3_server.secret_key, create_bucket=True)
    assert _bucket_exists(s3_server, "eager")


def test_wrong_credentials_fail_with_a_clear_error(s3_server):
    store = open_store("s3://wrong-creds/p", s3_endpoint=s3_server.endpoint, access_key="wrong", secret_key="wrong")
    with pytest.raises(StoreError, match=r"cannot read s3://wrong-creds/p/k.*InvalidAccessKeyId"):
        store.read_bytes("k")
    with pytest.raises(StoreError, match=r"cannot write s3://wrong-creds/p/k.*InvalidAccessKeyId"):
        store.write_bytes("k", b"v")
    with pytest.raises(StoreError, match=r"cannot list s3://wrong-creds/p/.*InvalidAccessKeyId"):
        store.list("")
    with pytest.raises(StoreError, match=r"S3 bucket 'wrong-creds'"):
        S3Store("wrong-creds", "p", s3_server.endpoint, "wrong", "wrong", create_bucket=True)


def test_invalid_bucket_name_is_refused_before_any_request():
    for name in ("b", "-lead", "a..b", "x" * 64):
        with pytest.raises(StoreError, match=rf"S3 bucket '{name}': .*invalid"):
            open_store(f"s3://{name}/p", s3_endpoint="http://127.0.0.1:9")


@pytest.mark.parametrize("settings_class", [PipelineSettings, ServeSettings, DriftSettings, RolloutSettings])
def test_settings_read_credentials_from_the_environment(s3_server, monkeypatch, settings_class):
    monkeypatch.setenv("FRAUD_STORE_URI", "s3://envbucket/p")
    monkeypatch.setenv("FRAUD_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    settings = settings_class()
    assert s3_server.secret_key not in repr(settings)
    store = open_configured_store(settings)
    store.write_bytes("k", b"v")
    assert store.read_bytes("k") == b"v"
    registry = open_registry(settings, model_name="other")
    assert (registry.model_name, registry.store.uri()) == ("other", store.uri())
