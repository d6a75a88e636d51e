"""Model store hardening on real servers: signed bundles for every loader, CAS promotes on S3, store timeouts.

* a malicious pickle, with the manifest resealed and the alias digest rewritten to match, never runs in the model
  server (by --model_dir and by --model_ref), ``fraud evaluate``, ``fraud drift`` or the promotion gate;
* two concurrent promotes on SeaweedFS: exactly one wins (S3 conditional writes, If-Match / If-None-Match);
* a frozen S3 server (SIGSTOP): ``fraud models list`` and ``fraud drift`` fail in bounded time with one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import pytest

from fraud_detection.model.bundle import (
    BUNDLE_FILES,
    MANIFEST_FILE,
    MODEL_FILE,
    BundleIntegrityError,
    generate_key_pair,
    sha256_file,
)
from fraud_detection.model.promotion import compare_with_production
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.store.base import BundleTrustConfig, StoreError
from fraud_detection.store.local import LocalStore
from fraud_detection.store.uri import open_store
from tests.helpers.net import free_port
from tests.helpers.seaweed import S3Server, seaweedfs
from tests.unit.model.test_registry_aliases import check_one_winner, concurrent_promotes

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
MODEL = "fraud-detector"


class _TouchOnLoad:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return (Path.touch, (self.marker,))


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_") and k != "KUBERNETES_SERVICE_HOST"}
    env.update(extra)
    return env


def _tamper(vdir: Path, marker: Path) -> str:
    """Replace the model with a pickle that creates ``marker`` and reseal the manifest; returns its new digest."""
    joblib.dump(_TouchOnLoad(marker), vdir / MODEL_FILE)
    manifest = json.loads((vdir / MANIFEST_FILE).read_text())
    manifest["files"] = {name: sha256_file(vdir / name) for name in BUNDLE_FILES}
    (vdir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return sha256_file(vdir / MANIFEST_FILE)


@pytest.fixture
def poisoned(tiny_bundle: Path, tmp_path: Path) -> dict[str, Any]:
    """A local store whose signed production version was replaced by a malicious pickle, digests rewritten."""
    private, public = generate_key_pair()
    store = LocalStore(tmp_path / "store")
    registry = ModelRegistry(store, MODEL, signing_key=private)
    version = registry.publish(tiny_bundle)
    registry.set_alias("production", version)
    marker = tmp_path / "pwned.marker"
    vdir = store.root / registry.version_prefix(version)
    digest = _tamper(vdir, marker)
    alias = store.root / f"models/{MODEL}/aliases/production.json"
    alias.write_text(json.dumps({**json.loads(alias.read_text()), "manifest_sha256": digest}))
    env = {
        "FRAUD_STORE_URI": str(store.root),
        "FRAUD_VERIFY_KEY": public,
        "FRAUD_CACHE_DIR": str(tmp_path / "cache"),
        "FRAUD_PUSHGATEWAY_URL": "",
    }
    return {"store": store, "version": version, "vdir": vdir, "marker": marker, "env": env, "public": public}


def _serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--http_port", str(free_port())]
    cmd += ["--grpc_port", str(free_port()), *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(env), capture_output=True, timeout=180, check=False)


def test_the_server_by_model_ref_refuses_the_poisoned_alias(poisoned: dict[str, Any]):
    proc = _serve(["--model_ref", "production"], poisoned["env"])
    assert proc.returncode != 0
    assert b"does not verify" in proc.stderr
    assert not poisoned["marker"].exists()


def test_the_server_by_model_dir_refuses_the_poisoned_bundle(poisoned: dict[str, Any]):
    proc = _serve(["--model_dir", str(poisoned["vdir"])], poisoned["env"])
    assert proc.returncode != 0
    assert b"does not verify" in proc.stderr
    assert not poisoned["marker"].exists()


def _fraud(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "cli", *args]
    env = {**env, "COLUMNS": "1000"}  # rich wraps at the terminal width: keep each message on one line
    return subprocess.run(cmd, cwd=REPO, env=_env(env), capture_output=True, timeout=timeout, check=False)


def test_evaluate_refuses_the_poisoned_alias_and_bundle(poisoned: dict[str, Any], tmp_path: Path, small_features):
    data = tmp_path / "features.parquet"
    small_features.to_parquet(data)
    for args in (["--model", "production"], ["--bundle", str(poisoned["vdir"])]):
        proc = _fraud(["evaluate", "--data", str(data), *args], poisoned["env"])
        assert proc.returncode != 0, proc.stderr
        assert b"does not verify" in proc.stderr
    assert not poisoned["marker"].exists()


def test_drift_refuses_the_poisoned_production(poisoned: dict[str, Any]):
    proc = _fraud(["drift"], poisoned["env"])
    assert proc.returncode != 0
    assert not poisoned["marker"].exists()
    assert b"does not verify" in proc.stderr or b"Traceback" not in proc.stderr


def test_the_gate_refuses_the_poisoned_production(
    poisoned: dict[str, Any], tiny_bundle: Path, tmp_path: Path, small_features
):
    store = LocalStore(poisoned["store"].root)
    store.trust = BundleTrustConfig(verify_key=poisoned["public"])
    with pytest.raises(BundleIntegrityError, match="does not verify"):
        compare_with_production(ModelRegistry(store, MODEL), tiny_bundle, small_features, cache_dir=tmp_path / "c")
    assert not poisoned["marker"].exists()


def test_without_a_key_the_same_store_on_s3_is_refused(tiny_bundle: Path, tmp_path: Path, s3_server: S3Server):
    store = open_store(
        "s3://models/hardening-unsigned",
        s3_endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    version = ModelRegistry(store, MODEL).publish(tiny_bundle)
    with pytest.raises(BundleIntegrityError, match="FRAUD_VERIFY_KEY"):
        ModelRegistry(store, MODEL).load(version, tmp_path / "cache")


def test_signed_versions_on_s3_load_and_a_poisoned_one_is_refused(
    tiny_bundle: Path, tmp_path: Path, s3_server: S3Server
):
    private, public = generate_key_pair()
    store = open_store(
        "s3://models/hardening-signed",
        s3_endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    store.trust = BundleTrustConfig(verify_key=public)
    registry = ModelRegistry(store, MODEL, signing_key=private)
    version = registry.publish(tiny_bundle)
    registry.set_alias("production", version)
    assert registry.load("production", tmp_path / "cache").metadata.version == version
    work = tmp_path / "work"
    store.download_dir(registry.version_prefix(version), work)
    marker = tmp_path / "pwned.marker"
    digest = _tamper(work, marker)
    for name in (MODEL_FILE, MANIFEST_FILE):
        store.write_bytes(registry.version_prefix(version) + name, (work / name).read_bytes())
    record = registry.get_alias("production")
    store.write_bytes(
        f"models/{MODEL}/aliases/production.json", json.dumps({**record, "manifest_sha256": digest}).encode()
    )
    with pytest.raises(BundleIntegrityError, match="does not verify"):
        ModelRegistry(store, MODEL).load("production", tmp_path / "cache2")
    assert not marker.exists()


def test_two_concurrent_promotes_on_seaweedfs_exactly_one_wins(tiny_bundle: Path, tmp_path: Path, s3_server: S3Server):
    from tests.unit.model.test_registry_aliases import _two_versions

    local, first, second = _two_versions(tiny_bundle, tmp_path)

    def s3():
        return open_store(
            "s3://models/hardening-cas",
            s3_endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
        )

    registry = ModelRegistry(s3(), MODEL)
    for version in (first, second):
        registry.store.upload_dir(
            local.store.root / local.version_prefix(version), registry.version_prefix(version), last=MANIFEST_FILE
        )
    for round_ in range(10):
        before = (registry.get_alias("production") or {}).get("version")
        order = (first, second) if round_ % 2 else (second, first)
        check_one_winner(registry, concurrent_promotes(lambda: ModelRegistry(s3(), MODEL), order), before)


@pytest.fixture
def frozen_s3(tmp_path: Path) -> Iterator[S3Server]:
    """A SeaweedFS of its own, with a bucket, then frozen by SIGSTOP (resumed at teardown)."""
    with seaweedfs(tmp_path / "frozen") as server:
        store = open_store(
            "s3://models/p", s3_endpoint=server.endpoint, access_key=server.access_key, secret_key=server.secret_key
        )
        store.write_bytes(f"models/{MODEL}/aliases/canary.json", b"{}")
        server.pause()
        try:
            yield server
        finally:
            server.resume()


def test_a_frozen_s3_store_fails_in_bounded_time_with_one_line(frozen_s3: S3Server, tmp_path: Path, small_features):
    data = tmp_path / "features.parquet"
    small_features.to_parquet(data)
    env = {
        **frozen_s3.env(),
        "FRAUD_STORE_URI": "s3://models/p",
        "FRAUD_STORE_TIMEOUT_SECONDS": "2",
        "FRAUD_CACHE_DIR": str(tmp_path / "cache"),
    }
    train = ["train", "--data", str(data), "--test-days", "10", "--max-iter", "5"]
    for args in (["models", "list"], ["drift"], train):
        started = time.monotonic()
        proc = _fraud(args, env, timeout=120)
        elapsed = time.monotonic() - started
        err = proc.stderr.decode()
        assert proc.returncode != 0, (args, err)
        assert elapsed < 60, (args, elapsed)
        assert "Traceback" not in err, err
        lines = [line for line in err.splitlines() if "error" in line.lower()]
        assert len(lines) == 1 and frozen_s3.endpoint in lines[0] + err, err
        assert lines[0].startswith("error:") and "timed out" in lines[0].lower(), err
    assert "training" not in err, "train reaches the store before it trains: a hung store fails before the work"


def test_a_frozen_s3_store_raises_store_error_naming_it(frozen_s3: S3Server):
    store = open_store(
        "s3://models/p",
        s3_endpoint=frozen_s3.endpoint,
        access_key=frozen_s3.access_key,
        secret_key=frozen_s3.secret_key,
        timeout=1.0,
    )
    started = time.monotonic()
    for call in (lambda: store.write_bytes("x", b"1"), lambda: store.read_bytes("x"), lambda: store.list("")):
        with pytest.raises(StoreError, match=frozen_s3.endpoint.replace(".", r"\.")):
            call()
    assert time.monotonic() - started < 30
    assert isinstance(pd.DataFrame(), pd.DataFrame)
