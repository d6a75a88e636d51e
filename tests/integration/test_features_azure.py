"""``fraud features`` staging on Azure Blob (``az://``) with a real Azurite server on loopback (issue 12, "Azure:
the same on AKS"): the input is staged down byte for byte through ``fraud_detection.store.staging``, day partitions
go back under the output prefix with ``_SUCCESS`` written last, and a foreign prefix (objects, no ``_SUCCESS``) is
refused before anything is written. The fast (no-Spark) half of ``tests/integration/test_features_s3.py``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate
from fraud_detection.features.offline import build_features
from fraud_detection.store.azure import CONNECTION_STRING_ENV, AzureBlobStore
from fraud_detection.store.staging import MARKER, check_publishable, publish_dir, split_location, stage_in
from tests.helpers.azurite import AzuriteServer, azurite

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    with azurite(tmp_path_factory.mktemp("azurite-features")) as running:
        yield running


@pytest.fixture(autouse=True)
def _only_the_emulator(server: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ambient Azure or FRAUD_ settings; ``az://`` URIs reach the emulator through its connection string."""
    for name in [k for k in os.environ if k.startswith(("FRAUD_", "AZURE_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(CONNECTION_STRING_ENV, server.connection_string)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return schema.validate_transactions(simulate(SimulationConfig(n_customers=40, n_terminals=80, n_days=12, seed=5)))


def _container(server: AzuriteServer, name: str) -> AzureBlobStore:
    return AzureBlobStore(name, connection_string=server.connection_string)


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def _day_files(raw: pd.DataFrame) -> dict[str, bytes]:
    days = raw["event_time"].dt.strftime("%Y-%m-%d")
    return {f"day={d}/part-0.parquet": _parquet(raw[days == d]) for d in sorted(days.unique())}


def test_split_location_of_a_container() -> None:
    assert split_location("az://exports/2026/11/tx.parquet") == ("az://exports", "2026/11/tx.parquet")
    assert split_location("az://exports") == ("az://exports", "")
    with pytest.raises(ValueError, match="no bucket"):
        split_location("az:///key")


def test_an_object_and_a_prefix_are_staged_byte_for_byte(server, raw: pd.DataFrame, tmp_path: Path) -> None:
    store = _container(server, "stage-in")
    files = _day_files(raw)
    for name, data in files.items():
        store.write_bytes(f"exports/tx/{name}", data)
    store.write_bytes("exports/one/tx.parquet", _parquet(raw))

    one = stage_in(store, "exports/one/tx.parquet", tmp_path)
    assert one == tmp_path / "tx.parquet" and one.read_bytes() == _parquet(raw)  # the suffix is kept
    for key in ("exports/tx", "exports/tx/"):
        local = tmp_path / key.replace("/", "_")
        local.mkdir()
        copy = stage_in(store, key, local)
        assert copy == local / "tx" and copy.is_dir()
        assert {p.relative_to(copy).as_posix(): p.read_bytes() for p in copy.rglob("*") if p.is_file()} == files
    with pytest.raises(KeyError, match=r"nothing under .*/stage-in/exports/missing/"):
        stage_in(store, "exports/missing", tmp_path)
    with pytest.raises(KeyError, match="no container 'never-made'"):
        stage_in(_container(server, "never-made"), "exports/tx/", tmp_path)


def test_publishing_replaces_an_earlier_output_marker_last(server, tmp_path: Path) -> None:
    store = _container(server, "publish")
    check_publishable(store, "features/")  # nothing there yet (the container does not even exist)
    earlier = tmp_path / "earlier"
    (earlier / "day=2026-01-01").mkdir(parents=True)
    (earlier / "day=2026-01-01" / "part-0.parquet").write_bytes(b"old")
    (earlier / MARKER).write_bytes(b"")
    assert publish_dir(store, earlier, "features/") == 2

    new = tmp_path / "new"
    (new / "day=2026-01-02").mkdir(parents=True)
    (new / "day=2026-01-02" / "part-0.parquet").write_bytes(b"new")
    (new / "day=2026-01-02" / ".part-0.parquet.crc").write_bytes(b"crc")  # Spark's checksums stay local
    check_publishable(store, "features/")  # an earlier complete output may be replaced
    assert publish_dir(store, new, "features/") == 2
    assert store.list("features/") == ["features/_SUCCESS", "features/day=2026-01-02/part-0.parquet"]
    assert store.read_bytes("features/day=2026-01-02/part-0.parquet") == b"new"

    store.delete("features/_SUCCESS")  # an interrupted publication, or someone else's data
    with pytest.raises(ValueError, match="holds 1 objects but no _SUCCESS"):
        check_publishable(store, "features/")
    store.write_bytes("an-object", b"x")
    with pytest.raises(ValueError, match="is an object"):
        check_publishable(store, "an-object/")


def test_directories_of_a_hierarchical_namespace_are_prefixes(server, raw: pd.DataFrame, tmp_path: Path) -> None:
    """ADLS Gen2 accounts (what ``abfss://`` and Spark on AKS use) keep directories as empty blobs marked
    ``hdi_isfolder``: such a blob is a prefix to stage and to publish under, not an object."""
    store = _container(server, "hns")
    files = _day_files(raw)
    for name, data in files.items():
        store.write_bytes(f"exports/tx/{name}", data)
    for folder in ("exports", "exports/tx", "features"):  # as the dfs endpoint creates them
        store._container.upload_blob(folder, b"", metadata={"hdi_isfolder": "true"}, overwrite=True)
    assert store._container.get_blob_client("exports/tx").exists()  # the marker blob is there...
    assert not store.exists("exports/tx")  # ...but it is no object

    copy = stage_in(store, "exports/tx", tmp_path)
    assert copy == tmp_path / "tx" and copy.is_dir()
    assert {p.relative_to(copy).as_posix(): p.read_bytes() for p in copy.rglob("*") if p.is_file()} == files
    check_publishable(store, "features/")  # an (empty) directory, not an object in the way
    out = tmp_path / "out" / "day=2026-01-01"
    out.mkdir(parents=True)
    (out / "part-0.parquet").write_bytes(b"x")
    assert publish_dir(store, out.parent, "features/") == 2
    assert store.list("features/") == ["features/_SUCCESS", "features/day=2026-01-01/part-0.parquet"]


def test_features_in_memory_from_and_to_azure(server, raw: pd.DataFrame, tmp_path: Path) -> None:
    store = _container(server, "features-memory")
    for name, data in _day_files(raw).items():
        store.write_bytes(f"raw/{name}", data)
    result = CliRunner().invoke(
        app, ["features", "--data", "az://features-memory/raw/", "--output", "az://features-memory/out/f.parquet"]
    )
    assert result.exit_code == 0, result.output
    got = pd.read_parquet(io.BytesIO(store.read_bytes("out/f.parquet")))
    want = build_features(schema.read_transactions(stage_in(store, "raw/", tmp_path)))
    assert len(got) == len(raw) == len(want)
    got = got.set_index("transaction_id").loc[want["transaction_id"]]
    for name in schema.FEATURES:
        assert np.array_equal(got[name].to_numpy(), want[name].to_numpy()), name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "az://features-bad/missing/"], "--data az://features-bad/missing/: nothing under"),
        (["--data", "az://features-bad/raw/", "--output", "az://features-bad"], "not the bucket itself"),
        (["--data", "az://features-bad/raw/", "--output", "az://features-bad/f.csv"], "unknown suffix"),
        (
            ["--data", "az://features-bad/raw/", "--output", "az://features-bad/taken/", "--engine", "spark"],
            "features-bad/taken/: holds 1 objects but no _SUCCESS",
        ),
    ],
    ids=["missing-input", "container-output", "bad-suffix", "foreign-prefix"],
)
def test_bad_locations_are_one_line_errors(server, raw, args: list[str], message: str) -> None:
    store = _container(server, "features-bad")
    store.write_bytes("raw/tx.parquet", _parquet(raw))
    store.write_bytes("taken/notes.txt", b"someone else's")
    result = CliRunner().invoke(app, ["features", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert store.list("taken/") == ["taken/notes.txt"]  # refused before anything was written
