from pathlib import Path

import pytest

from fraud_detection.model.registry import ModelRegistry, RegistryError
from fraud_detection.store.base import ArtifactStore, StoreError
from fraud_detection.store.local import LocalStore
from fraud_detection.store.uri import open_store


def test_publish_lists_version_and_alias_resolves(tiny_bundle: Path, tmp_path: Path):
    reg = ModelRegistry(LocalStore(tmp_path / "store"), "fraud-detector")
    version = reg.publish(tiny_bundle)
    assert reg.versions() == [version]
    record = reg.set_alias("production", version)
    assert reg.resolve("production") == (version, record["manifest_sha256"])
    loaded = reg.load("production", tmp_path / "cache")
    assert loaded.metadata.version == version
    with pytest.raises(RegistryError, match="exists already"):
        reg.publish(tiny_bundle)


def test_alias_cannot_point_at_a_missing_version(tmp_path: Path):
    reg = ModelRegistry(LocalStore(tmp_path), "m")
    with pytest.raises(RegistryError, match="no complete version"):
        reg.set_alias("production", "nope")
    with pytest.raises(RegistryError, match=r"neither a version nor an alias.*holds no versions of this model"):
        reg.resolve("production")


def test_an_unknown_ref_next_to_real_versions_gets_no_empty_store_hint(tiny_bundle: Path, tmp_path: Path):
    reg = ModelRegistry(LocalStore(tmp_path), "m")
    reg.publish(tiny_bundle)
    with pytest.raises(RegistryError, match="neither a version nor an alias") as failure:
        reg.resolve("nope")
    assert "holds no versions" not in str(failure.value)


class CrashingStore(LocalStore):
    """Dies after N object writes, like a pod killed mid-upload."""

    def __init__(self, root: Path, fail_after: int) -> None:
        super().__init__(root)
        self.left = fail_after

    def write_bytes(self, key: str, data: bytes) -> None:
        if self.left == 0:
            raise StoreError("simulated crash")
        self.left -= 1
        super().write_bytes(key, data)


def test_crash_mid_publish_leaves_store_readable_and_alias_unchanged(tiny_bundle: Path, tmp_path: Path):
    root = tmp_path / "store"
    good = ModelRegistry(LocalStore(root), "fraud-detector")
    first = good.publish(tiny_bundle)
    good.set_alias("production", first)
    # Re-publish under a new version id: copy the bundle and change nothing but the version in a new bundle.
    from fraud_detection.model.bundle import load_bundle, write_bundle

    src = load_bundle(tiny_bundle)
    second_dir = tmp_path / "second"
    write_bundle(
        second_dir,
        model=src.model,
        model_name="fraud-detector",
        model_type="hgb",
        threshold=0.5,
        review_cost=1.0,
        calibration={"a": 1.0, "b": 0.0},
        training=src.metadata.training,
        reference=src.reference,
    )
    crashing = ModelRegistry(CrashingStore(root, fail_after=2), "fraud-detector")
    with pytest.raises(StoreError, match="simulated crash"):
        crashing.publish(second_dir)
    # Half the files landed, but the version is not listed, not resolvable, and production is untouched.
    assert good.versions() == [first]
    assert good.resolve("production")[0] == first
    assert good.load("production", tmp_path / "cache").metadata.version == first


def test_local_store_rejects_keys_escaping_the_root(tmp_path: Path):
    store = LocalStore(tmp_path / "s")
    with pytest.raises(StoreError, match="escapes"):
        store.write_bytes("../evil", b"x")


def test_local_store_round_trip_and_listing(tmp_path: Path):
    store: ArtifactStore = open_store(str(tmp_path / "s"))
    store.write_bytes("a/b/c.txt", b"hello")
    store.write_bytes("a/d.txt", b"x")
    assert store.read_bytes("a/b/c.txt") == b"hello"
    assert store.list("a/") == ["a/b/c.txt", "a/d.txt"]
    with pytest.raises(KeyError):
        store.read_bytes("missing")


def test_s3_uri_without_endpoint_or_bucket_is_a_clear_error():
    with pytest.raises(StoreError, match="FRAUD_S3_ENDPOINT"):
        open_store("s3://bucket/prefix")
    with pytest.raises(StoreError, match="unsupported scheme"):
        open_store("gs://bucket")


def test_a_tampered_download_names_the_store_and_leaves_nothing_in_the_cache(tiny_bundle: Path, tmp_path: Path):
    from fraud_detection.model.bundle import BundleIntegrityError

    store = LocalStore(tmp_path / "store")
    reg = ModelRegistry(store, "fraud-detector")
    version = reg.publish(tiny_bundle)
    store.write_bytes(reg.version_prefix(version) + "model.joblib", b"not the published model")
    cache = tmp_path / "cache"
    where = store.uri(reg.version_prefix(version)).rstrip("/")
    with pytest.raises(BundleIntegrityError, match=r"model\.joblib digest") as failure:
        reg.load(version, cache)
    assert f"bundle {where}:" in str(failure.value), "the message names the version in the store, not a temp dir"
    assert list(cache.iterdir()) == [], "the refused download was removed"


def test_concurrent_fetches_of_one_version_into_one_cache_all_succeed(tiny_bundle: Path, tmp_path: Path):
    """Two processes (a server and the drift job) sharing a cache: the slower rename finds the version there."""
    import threading

    reg = ModelRegistry(LocalStore(tmp_path / "store"), "fraud-detector")
    version = reg.publish(tiny_bundle)
    cache = tmp_path / "cache"
    barrier = threading.Barrier(4, timeout=30)
    original = reg.store.download_dir
    results: list[object] = []

    def download_then_wait(prefix: str, local: Path) -> Path:
        out = original(prefix, local)
        barrier.wait()  # every fetch has downloaded before any renames
        return out

    reg.store.download_dir = download_then_wait  # type: ignore[method-assign]

    def fetch() -> None:
        try:
            results.append(reg.fetch(version, cache))
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [cache / version] * 4, results
    assert sorted(p.name for p in cache.iterdir()) == [version], "no temporary download left behind"
