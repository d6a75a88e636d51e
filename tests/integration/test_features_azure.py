"""``fraud features`` staging on Azure Blob (``az://``) with a real Azurite server on loopback (issue 12, "Azure:
the same on AKS"): the input is staged down byte for byte through ``fraud_detection.store.staging``, day partitions
go back under the output prefix with ``_SUCCESS`` written last, and a foreign prefix (objects, no ``_SUCCESS``) is
refused before anything is written. The fast (no-Spark) half of ``tests/integration/test_features_s3.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fraud_detection.store.azure import CONNECTION_STRING_ENV, AzureBlobStore
from fraud_detection.store.staging import check_publishable, publish_dir, split_location, stage_in
from tests.helpers.azurite import AzuriteServer, azurite
from tests.helpers.store_staging import (
    check_bad_location_is_one_line_error,
    check_in_memory_features_from_and_to_the_store,
    check_object_and_prefix_staged_byte_for_byte,
    check_publishing_replaces_an_earlier_output_marker_last,
    small_history,
    staged_files,
    upload_days,
)

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
    return small_history()


def _container(server: AzuriteServer, name: str) -> AzureBlobStore:
    return AzureBlobStore(name, connection_string=server.connection_string)


def test_split_location_of_a_container() -> None:
    assert split_location("az://exports/2026/11/tx.parquet") == ("az://exports", "2026/11/tx.parquet")
    assert split_location("az://exports") == ("az://exports", "")
    with pytest.raises(ValueError, match="no bucket"):
        split_location("az:///key")


def test_an_object_and_a_prefix_are_staged_byte_for_byte(server, raw: pd.DataFrame, tmp_path: Path) -> None:
    store = _container(server, "stage-in")
    check_object_and_prefix_staged_byte_for_byte(store, raw, tmp_path, r"nothing under .*/stage-in/exports/missing/")
    with pytest.raises(KeyError, match="no container 'never-made'"):
        stage_in(_container(server, "never-made"), "exports/tx/", tmp_path)


def test_publishing_replaces_an_earlier_output_marker_last(server, tmp_path: Path) -> None:
    store = _container(server, "publish")
    check_publishable(store, "features/")  # nothing there yet (the container does not even exist)
    check_publishing_replaces_an_earlier_output_marker_last(store, tmp_path)


def test_directories_of_a_hierarchical_namespace_are_prefixes(server, raw: pd.DataFrame, tmp_path: Path) -> None:
    """ADLS Gen2 accounts (what ``abfss://`` and Spark on AKS use) keep directories as empty blobs marked
    ``hdi_isfolder``: such a blob is a prefix to stage and to publish under, not an object."""
    store = _container(server, "hns")
    files = upload_days(store, "exports/tx/", raw)
    for folder in ("exports", "exports/tx", "features"):  # as the dfs endpoint creates them
        store._container.upload_blob(folder, b"", metadata={"hdi_isfolder": "true"}, overwrite=True)
    assert store._container.get_blob_client("exports/tx").exists()  # the marker blob is there...
    assert not store.exists("exports/tx")  # ...but it is no object

    copy = stage_in(store, "exports/tx", tmp_path)
    assert copy == tmp_path / "tx" and copy.is_dir()
    assert staged_files(copy) == files
    check_publishable(store, "features/")  # an (empty) directory, not an object in the way
    out = tmp_path / "out" / "day=2026-01-01"
    out.mkdir(parents=True)
    (out / "part-0.parquet").write_bytes(b"x")
    assert publish_dir(store, out.parent, "features/") == 2
    assert store.list("features/") == ["features/_SUCCESS", "features/day=2026-01-01/part-0.parquet"]


def test_features_in_memory_from_and_to_azure(server, raw: pd.DataFrame, tmp_path: Path) -> None:
    store = _container(server, "features-memory")
    check_in_memory_features_from_and_to_the_store(store, "az://features-memory", raw, tmp_path)


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
    check_bad_location_is_one_line_error(_container(server, "features-bad"), raw, args, message)
