"""Alias names are plain names, and moving an alias is a compare-and-swap (local store)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.model.bundle import BUNDLE_FILES, MANIFEST_FILE, METADATA_FILE, sha256_file
from fraud_detection.model.registry import ModelRegistry, RegistryError
from fraud_detection.store.local import LocalStore

MODEL = "fraud-detector"


def _two_versions(tiny_bundle: Path, tmp_path: Path) -> tuple[ModelRegistry, str, str]:
    """The tiny bundle published as two versions (the second a copy with another version id)."""
    store = LocalStore(tmp_path / "store")
    registry = ModelRegistry(store, MODEL)
    first = registry.publish(tiny_bundle)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    meta = json.loads((copy / METADATA_FILE).read_text())
    meta["version"] = first + "-b"
    (copy / METADATA_FILE).write_text(json.dumps(meta))
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["files"] = {name: sha256_file(copy / name) for name in BUNDLE_FILES}
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    second = registry.publish(copy)
    return registry, first, second


@pytest.mark.parametrize(
    "alias",
    ["../versions/V/metadata", "../../../payload-logs/x", "a/b", "..", ".", "", "-x", "a.b", "x" * 64, "a b", "a\\b"],
)
def test_an_alias_that_is_not_a_plain_name_is_refused(tiny_bundle: Path, tmp_path: Path, alias: str):
    registry, version, _ = _two_versions(tiny_bundle, tmp_path)
    with pytest.raises(RegistryError, match="invalid alias"):
        registry.set_alias(alias, version)


def test_promote_with_a_path_as_alias_exits_non_zero_and_overwrites_nothing(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    registry, version, _ = _two_versions(tiny_bundle, tmp_path)
    root = tmp_path / "store"
    metadata = root / registry.version_prefix(version) / METADATA_FILE
    before = metadata.read_bytes()
    for key in [k for k in os.environ if k.startswith("FRAUD_")]:
        monkeypatch.delenv(key)
    for alias in (f"../versions/{version}/metadata", "../../../payload-logs/fraud-detector/x"):
        result = CliRunner().invoke(app, ["models", "promote", version, "--alias", alias, "--store", str(root)])
        assert result.exit_code != 0, result.output
        assert "invalid alias" in result.output
    assert metadata.read_bytes() == before
    assert not (root / "payload-logs").exists()
    assert not (root / f"models/{MODEL}/aliases").exists()


def test_a_ref_with_separators_is_not_resolved(tiny_bundle: Path, tmp_path: Path):
    registry, _, _ = _two_versions(tiny_bundle, tmp_path)
    with pytest.raises(RegistryError):
        registry.resolve("../aliases/production")


def test_a_move_between_read_and_write_fails_naming_the_winner(tiny_bundle: Path, tmp_path: Path):
    registry, first, second = _two_versions(tiny_bundle, tmp_path)
    store = registry.store
    original = store.read_versioned
    raced = []

    def read_then_race(key: str):
        found = original(key)
        if not raced and key.endswith("aliases/production.json"):
            raced.append(True)
            ModelRegistry(LocalStore(store.root), MODEL).set_alias("production", second)  # type: ignore[attr-defined]
        return found

    store.read_versioned = read_then_race  # type: ignore[method-assign]
    with pytest.raises(RegistryError, match=f"moved concurrently to {second}"):
        registry.set_alias("production", first)
    assert registry.get_alias("production")["version"] == second


def test_expected_previous_guards_a_promote(tiny_bundle: Path, tmp_path: Path):
    registry, first, second = _two_versions(tiny_bundle, tmp_path)
    registry.set_alias("production", first)
    with pytest.raises(RegistryError, match="not moved"):
        registry.set_alias("production", second, expected_previous="")
    assert registry.set_alias("production", second, expected_previous=first)["previous"] == first


def concurrent_promotes(make_registry, versions: tuple[str, str], alias: str = "production") -> dict[str, object]:
    """Two promotes that both read the alias before either writes (a barrier between read and write)."""
    barrier = threading.Barrier(2, timeout=30)
    outcomes: dict[str, object] = {}

    def promote(version: str) -> None:
        reg = make_registry()
        read = reg.store.read_versioned

        waited: list[bool] = []

        def read_then_wait(key: str):
            found = read(key)
            if key.endswith(f"aliases/{alias}.json") and not waited:
                waited.append(True)
                barrier.wait()
            return found

        reg.store.read_versioned = read_then_wait
        try:
            outcomes[version] = reg.set_alias(alias, version)
        except RegistryError as exc:
            outcomes[version] = exc

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def check_one_winner(registry: ModelRegistry, outcomes: dict[str, object], before: str | None) -> None:
    wins = [v for v, o in outcomes.items() if isinstance(o, dict)]
    losses = [o for o in outcomes.values() if isinstance(o, RegistryError)]
    assert len(wins) == 1 and len(losses) == 1, outcomes
    now = registry.get_alias("production")
    assert now is not None and now["version"] == wins[0] and now["previous"] == before
    assert f"moved concurrently to {wins[0]}" in str(losses[0]) and "production" in str(losses[0])


def test_two_concurrent_promotes_exactly_one_wins_every_round(tiny_bundle: Path, tmp_path: Path):
    registry, first, second = _two_versions(tiny_bundle, tmp_path)
    root = registry.store.root  # type: ignore[attr-defined]
    for round_ in range(10):
        before = (registry.get_alias("production") or {}).get("version")
        order = (first, second) if round_ % 2 else (second, first)
        outcomes = concurrent_promotes(lambda: ModelRegistry(LocalStore(root), MODEL), order)
        check_one_winner(registry, outcomes, before)
