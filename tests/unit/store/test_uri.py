"""open_store: which backend a store URI opens, and the errors of URIs it cannot open.

Opening sends no request, so no server is needed here; reads and writes against real S3 and Azure Blob servers
are in tests/integration/test_s3_store.py and tests/integration/test_azure_store.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fraud_detection.store.azure import AzureBlobStore
from fraud_detection.store.base import StoreError
from fraud_detection.store.local import LocalStore
from fraud_detection.store.s3 import S3Store
from fraud_detection.store.uri import open_store

# A syntactically valid connection string with a made-up key (never used to send a request).
FAKE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devacct;AccountKey=ZmFrZS1rZXk=;"
    "BlobEndpoint=http://127.0.0.1:10000/devacct;"
)


@pytest.fixture(autouse=True)
def no_azure_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)


def test_a_directory_path_opens_a_local_store_without_creating_it(tmp_path: Path):
    store = open_store(str(tmp_path / "store"))
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "store").resolve()
    assert not (tmp_path / "store").exists()


def test_a_relative_path_is_resolved_against_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("artifacts")
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "artifacts").resolve()


def test_a_file_uri_opens_a_local_store_at_its_path(tmp_path: Path):
    store = open_store(f"file://{tmp_path}/store")
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "store").resolve()


def test_s3_without_an_endpoint_says_which_setting_is_missing():
    with pytest.raises(StoreError, match=r"s3://bucket/prefix: set FRAUD_S3_ENDPOINT \(or --s3-endpoint\)"):
        open_store("s3://bucket/prefix")


def test_s3_with_an_endpoint_opens_the_bucket_and_prefix_without_a_request():
    store = open_store(
        "s3://models/team/a",
        s3_endpoint="http://127.0.0.1:9",  # the discard port: any request would fail
        access_key="ak",
        secret_key="sk",
    )
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint) == ("models", "team/a/", "http://127.0.0.1:9")
    assert store.uri("x.json") == "s3://models/team/a/x.json"


def test_s3_without_a_bucket_is_refused():
    with pytest.raises(StoreError, match="no bucket in the URI"):
        open_store("s3:///prefix", s3_endpoint="http://127.0.0.1:9")


@pytest.mark.parametrize("bucket", ["ab", "a..b", "192.168.1.1", "-bucket", "bucket-"])
def test_s3_with_an_invalid_bucket_name_is_refused(bucket: str):
    with pytest.raises(StoreError, match=f"S3 bucket '{bucket}'"):
        open_store(f"s3://{bucket}/p", s3_endpoint="http://127.0.0.1:9")


@pytest.mark.parametrize(
    "uri", ["gs://bucket/prefix", "http://example.com/store", "https://example.com/store", "ftp://host/x"]
)
def test_unknown_schemes_are_refused_naming_the_scheme(uri: str):
    scheme = uri.split(":", 1)[0]
    with pytest.raises(StoreError, match=f"unsupported scheme '{scheme}'") as info:
        open_store(uri, s3_endpoint="http://127.0.0.1:9")
    assert uri in str(info.value)


def test_az_uri_with_an_account_url_opens_the_container_and_prefix_without_a_request():
    store = open_store("az://models/team/a/", azure_account_url="https://acct.blob.core.windows.net/")
    assert isinstance(store, AzureBlobStore)
    assert (store.container, store.prefix) == ("models", "team/a/")
    assert store.account_url == "https://acct.blob.core.windows.net"
    assert store.auth == "DefaultAzureCredential"


def test_blob_url_names_its_own_account():
    store = open_store("https://acct.blob.core.windows.net/models/p")
    assert isinstance(store, AzureBlobStore)
    assert (store.account_name, store.container, store.prefix) == ("acct", "models", "p/")


def test_az_uri_takes_the_account_from_the_connection_string(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", FAKE_CONNECTION_STRING)
    store = open_store("az://models/p")
    assert isinstance(store, AzureBlobStore)
    assert (store.auth, store.account_name, store.container) == ("connection string", "devacct", "models")
    assert "ZmFrZS1rZXk" not in repr(vars(store))


def test_az_uri_without_any_account_says_what_to_set():
    with pytest.raises(StoreError, match="no account; set FRAUD_AZURE_STORAGE_ACCOUNT_URL"):
        open_store("az://models/p")


def test_az_uri_without_a_container_is_refused():
    with pytest.raises(StoreError, match="no container in the URI"):
        open_store("az:///prefix", azure_account_url="https://acct.blob.core.windows.net")


@pytest.mark.parametrize("container", ["Models", "a", "bad_name", "double--hyphen", "-lead"])
def test_az_uri_with_an_invalid_container_name_is_refused(container: str):
    with pytest.raises(StoreError, match=f"invalid Azure Blob container name '{container}'"):
        open_store(f"az://{container}/p", azure_account_url="https://acct.blob.core.windows.net")


def test_az_uri_with_a_query_string_is_refused_without_echoing_the_secret():
    with pytest.raises(StoreError, match="no query string allowed") as info:
        open_store("az://models/p?sv=2024&sig=TOPSECRET", azure_account_url="https://acct.blob.core.windows.net")
    assert "TOPSECRET" not in str(info.value)
    assert "sig=REDACTED" in str(info.value)


def test_connection_string_for_another_account_than_the_uri_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", FAKE_CONNECTION_STRING)
    with pytest.raises(StoreError, match="credentials are for account 'devacct' but the store names account 'other'"):
        open_store("https://other.blob.core.windows.net/models/p")
