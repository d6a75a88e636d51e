"""Promotes on Azure Blob are compare-and-swap, against a real Azurite server on loopback (issue 13, point 4).

The alias blob is written with ``If-Match: <ETag>`` (or ``If-None-Match: *`` when it is unset), so of two promotes
that both read the alias before either writes, exactly one wins and the other fails naming the winner; an alias
that is not a plain name is refused before any request; a signed bundle published to Azure round-trips, and a
wrongly signed or unsigned one is refused.

Azurite (``tests/helpers/azurite.py``) listens on 127.0.0.1 and a free port, with its data in a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.model.bundle import MANIFEST_FILE, SIGNATURE_FILE, BundleIntegrityError, generate_key_pair
from fraud_detection.model.registry import ModelRegistry, RegistryError
from fraud_detection.store.azure import CONNECTION_STRING_ENV, AzureBlobStore
from fraud_detection.store.base import BundleTrustConfig, PreconditionFailedError
from tests.helpers.azurite import AzuriteServer, azurite
from tests.unit.model.test_registry_aliases import _two_versions, check_one_winner, concurrent_promotes

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
MODEL = "fraud-detector"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    with azurite(tmp_path_factory.mktemp("azurite-promote")) as running:
        yield running


@pytest.fixture(autouse=True)
def _only_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ambient Azure or FRAUD_ settings: every store here is the emulator, chosen explicitly."""
    for name in [k for k in os.environ if k.startswith(("FRAUD_", "AZURE_"))]:
        monkeypatch.delenv(name)


def _store(server: AzuriteServer, container: str, prefix: str = "fraud", verify_key: str | None = None) -> Any:
    store = AzureBlobStore(container, prefix, connection_string=server.connection_string)
    store.trust = BundleTrustConfig(verify_key=verify_key, trust_unsigned=verify_key is None)
    return store


@pytest.fixture
def published(server: AzuriteServer, tiny_bundle: Path, tmp_path: Path, request: pytest.FixtureRequest):
    """Two signed versions in a container of this test's own; returns (registry factory, first, second, public)."""
    container = "p" + str(abs(hash(request.node.name)))[:12]
    private, public = generate_key_pair()
    local, first, second = _two_versions(tiny_bundle, tmp_path)
    registry = ModelRegistry(_store(server, container, verify_key=public), MODEL, signing_key=private)
    for version in (first, second):
        registry.publish(local.store.root / local.version_prefix(version))  # type: ignore[attr-defined]

    def make() -> ModelRegistry:  # another pod: its own client and connections
        return ModelRegistry(_store(server, container, verify_key=public), MODEL)

    return make, first, second, public, container


def test_two_concurrent_promotes_exactly_one_wins_every_round(published, tmp_path: Path):
    make, first, second, _, _ = published
    registry = make()
    for round_ in range(10):  # round 0: the alias is unset (If-None-Match: *); then If-Match on its ETag
        before = (registry.get_alias("production") or {}).get("version")
        order = (first, second) if round_ % 2 else (second, first)
        check_one_winner(registry, concurrent_promotes(make, order), before)
    # The last winner is a signed version that loads (its ETag-guarded record points at a complete version).
    winner = registry.get_alias("production")
    assert winner is not None
    assert make().load("production", tmp_path / "cache").metadata.version == winner["version"]


def test_a_promote_racing_a_delete_fails_clearly(published):
    make, first, second, _, _ = published
    registry = make()
    registry.set_alias("production", first)
    store = registry.store
    read = store.read_versioned

    def read_then_delete(key: str):
        found = read(key)
        store.delete(key)  # an operator removed the alias between our read and our write
        return found

    store.read_versioned = read_then_delete  # type: ignore[method-assign]
    with pytest.raises(RegistryError, match=r"'production' .* moved concurrently to nothing \(deleted\)"):
        registry.set_alias("production", second)
    assert make().get_alias("production") is None, "the conditional write did not recreate the deleted alias"


def test_write_if_is_conditional_at_the_server(server: AzuriteServer):
    store = _store(server, "conditional")
    store.write_if("k", b"first", None)
    with pytest.raises(PreconditionFailedError, match=r"conditional/fraud/k changed since it was read"):
        store.write_if("k", b"again", None)  # If-None-Match: * on an existing blob
    found = store.read_versioned("k")
    assert found is not None and found[0] == b"first"
    store.write_if("k", b"second", found[1])
    with pytest.raises(PreconditionFailedError):
        store.write_if("k", b"stale", found[1])  # the ETag changed with the last write
    assert store.read_bytes("k") == b"second"
    assert store.read_versioned("missing") is None
    assert _store(server, "never-made").read_versioned("k") is None


def test_expected_previous_guards_a_promote(published):
    make, first, second, _, _ = published
    registry = make()
    registry.set_alias("production", first)
    with pytest.raises(RegistryError, match=r"points at .* not moved"):
        registry.set_alias("production", second, expected_previous="")
    assert registry.set_alias("production", second, expected_previous=first)["previous"] == first


def test_a_lost_answer_whose_write_landed_is_a_success(published):
    """The SDK retries a timed-out PUT; the retry gets 412 because the first attempt landed: that is a win."""
    from azure.core.exceptions import ResourceModifiedError

    make, first, _, _, _ = published
    registry = make()
    container = registry.store._container
    upload = container.upload_blob

    def upload_then_lose_the_answer(name: str, data: bytes, **kwargs: Any):
        upload(name, data, **kwargs)
        raise ResourceModifiedError("The condition specified using HTTP conditional header(s) is not met.")

    container.upload_blob = upload_then_lose_the_answer
    record = registry.set_alias("production", first)
    assert make().get_alias("production") == record


@pytest.mark.parametrize("alias", ["../x", "../versions/V/metadata", "../../../payload-logs/x", "a/b", "..", "a.b"])
def test_an_alias_that_is_not_a_plain_name_is_refused_before_any_write(published, alias: str):
    make, first, _, _, _ = published
    registry = make()
    before = registry.store.list("")
    with pytest.raises(RegistryError, match="invalid alias"):
        registry.set_alias(alias, first)
    assert registry.store.list("") == before


def test_cli_promote_on_azure(published, server: AzuriteServer, monkeypatch: pytest.MonkeyPatch):
    """``fraud models promote`` with an az:// store: a path as alias, a lost race and a win, one line each."""
    make, first, second, _, container = published
    monkeypatch.setenv(CONNECTION_STRING_ENV, server.connection_string)
    monkeypatch.setenv("COLUMNS", "1000")
    uri = f"az://{container}/fraud"
    before = make().store.list("")
    result = CliRunner().invoke(app, ["models", "promote", first, "--alias", "../x", "--store", uri])
    assert result.exit_code == 2, result.output
    assert "invalid alias '../x'" in result.output
    assert make().store.list("") == before

    result = CliRunner().invoke(app, ["models", "promote", first, "--store", uri])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["version"] == first

    # A promote that loses the race: another pod moves the alias between this one's read and its write.
    original = AzureBlobStore.read_versioned

    def read_then_race(self: AzureBlobStore, key: str):
        found = original(self, key)
        if key.endswith("aliases/production.json"):
            AzureBlobStore.read_versioned = original  # type: ignore[method-assign]
            make().set_alias("production", second)
        return found

    monkeypatch.setattr(AzureBlobStore, "read_versioned", read_then_race)
    result = CliRunner().invoke(app, ["models", "promote", first, "--store", uri])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error" in line.lower()]  # (the other pod logs INFO)
    assert len(errors) == 1 and errors[0].startswith("error:"), result.output
    assert f"moved concurrently to {second}" in errors[0] and "not promoted" in errors[0]
    assert make().get_alias("production")["version"] == second  # type: ignore[index]


def test_two_cli_promotes_in_parallel_lose_no_update(published, server: AzuriteServer):
    """Two ``fraud models promote`` processes at once: both win in turn (previous chained) or exactly one fails."""
    make, first, second, _, container = published
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUD_", "AZURE_"))}
    env.update({CONNECTION_STRING_ENV: server.connection_string, "COLUMNS": "1000"})
    uri = f"az://{container}/fraud"
    for round_ in range(2):
        before = (make().get_alias("production") or {}).get("version")
        procs = {
            version: subprocess.Popen(
                [sys.executable, "-m", "cli", "models", "promote", version, "--store", uri],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for version in ((first, second) if round_ else (second, first))
        }
        results = {v: (p.wait(timeout=120), *(s.decode() for s in p.communicate())) for v, p in procs.items()}
        won = {v: json.loads(out) for v, (code, out, _) in results.items() if code == 0}
        lost = {v: err for v, (code, _, err) in results.items() if code != 0}
        assert won, results
        for err in lost.values():
            assert "moved concurrently" in err and "Traceback" not in err, err
        final = make().get_alias("production")
        assert final is not None
        if len(won) == 2:  # they ran one after the other: the later one saw the earlier one's version
            earlier, later = sorted(won.values(), key=lambda r: r["updated_at"])
            assert later["previous"] == earlier["version"] and final == later
            assert earlier["previous"] == before
        else:
            assert final == next(iter(won.values())) and final["previous"] == before


def test_a_signed_bundle_round_trips_and_a_forged_one_is_refused(published, server: AzuriteServer, tmp_path: Path):
    from fraud_detection.model.bundle import load_signing_key, signature_for

    make, first, second, _, container = published
    registry = make()
    registry.set_alias("production", first)
    assert registry.load("production", tmp_path / "ok").metadata.version == first
    prefix = registry.version_prefix(second)
    manifest = registry.store.read_bytes(prefix + MANIFEST_FILE)
    assert registry.store.exists(prefix + SIGNATURE_FILE)

    # Signed with another key: refused before anything is unpickled.
    other_private, _ = generate_key_pair()
    registry.store.write_bytes(prefix + SIGNATURE_FILE, signature_for(manifest, load_signing_key(other_private)))
    with pytest.raises(BundleIntegrityError, match="does not verify"):
        make().load(second, tmp_path / "forged")
    # Unsigned: refused with a verify key, and on a remote store without one unless trusted explicitly.
    registry.store.delete(prefix + SIGNATURE_FILE)
    with pytest.raises(BundleIntegrityError, match=r"unsigned \(MANIFEST\.sig missing\)"):
        make().load(second, tmp_path / "unsigned")
    untrusting = AzureBlobStore(container, "fraud", connection_string=server.connection_string)  # default trust
    with pytest.raises(BundleIntegrityError, match="FRAUD_VERIFY_KEY"):
        ModelRegistry(untrusting, MODEL).load(second, tmp_path / "no-key")
