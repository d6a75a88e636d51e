"""The Azure Blob store and the registry against a real Azurite server on loopback.

Two Azurite servers run for the session: plain HTTP with the development account key (connection string, the
development path) and HTTPS with ``--oauth basic`` (bearer tokens, the path workload identity takes on AKS).
No test reaches Azure itself: ``DefaultAzureCredential`` is only constructed, and any token request fails the test.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fraud_detection.model.registry import ModelRegistry
from fraud_detection.store.azure import CONNECTION_STRING_ENV, AzureBlobStore, is_azure_blob_uri, parse_azure_blob_uri
from fraud_detection.store.base import BundleTrustConfig, StoreError
from fraud_detection.store.uri import open_store
from tests.helpers.azurite import AzuriteServer, azurite

pytestmark = pytest.mark.integration

TENANT = "00000000-0000-0000-0000-00000000a2e5"
# What the AKS workload identity webhook injects into a pod labelled azure.workload.identity/use=true.
WORKLOAD_IDENTITY_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST")


@pytest.fixture(scope="module")
def azurite_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    with azurite(tmp_path_factory.mktemp("azurite-http")) as server:
        yield server


@pytest.fixture(scope="module")
def azurite_https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    with azurite(tmp_path_factory.mktemp("azurite-https"), https=True) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_ambient_azure_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their credentials; a token request of DefaultAzureCredential would leave the machine."""
    for name in (CONNECTION_STRING_ENV, *WORKLOAD_IDENTITY_ENV):
        monkeypatch.delenv(name, raising=False)
    from azure.identity import DefaultAzureCredential

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a test asked DefaultAzureCredential for a token (that would reach Entra ID / IMDS)")

    monkeypatch.setattr(DefaultAzureCredential, "get_token", refuse)
    monkeypatch.setattr(DefaultAzureCredential, "get_token_info", refuse, raising=False)  # azure-identity >= 1.19


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


class FakeEntraCredential:
    """A TokenCredential issuing unsigned JWTs shaped like Entra ID's (Azurite's basic OAuth checks the claims)."""

    def __init__(self, audience: str = "https://storage.azure.com", lifetime: int = 3600) -> None:
        self.audience, self.lifetime = audience, lifetime
        self.scopes: list[tuple[str, ...]] = []
        self.tokens: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        now = int(time.time())
        claims = {
            "aud": self.audience,
            "iss": f"https://sts.windows.net/{TENANT}/",
            "tid": TENANT,
            "iat": now - 120,
            "nbf": now - 120,
            "exp": now + self.lifetime,
            "oid": "11111111-2222-3333-4444-555555555555",
        }
        token = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"
        self.scopes.append(scopes)
        self.tokens.append(token)
        return AccessToken(token, now + max(self.lifetime, 1))


def _trusting(store: AzureBlobStore) -> AzureBlobStore:
    """Unsigned test bundles are accepted (the signing itself: test_registry_publishes_and_loads_a_verified_bundle)."""
    store.trust = BundleTrustConfig(verify_key=None, trust_unsigned=True)
    return store


def _store(server: AzuriteServer, container: str, prefix: str = "fraud", **kwargs: Any) -> AzureBlobStore:
    return _trusting(AzureBlobStore(container, prefix, connection_string=server.connection_string, **kwargs))


def _oauth_store(server: AzuriteServer, container: str, credential: FakeEntraCredential) -> AzureBlobStore:
    return _trusting(
        AzureBlobStore(
            container,
            "fraud",
            account_url=server.account_url,
            credential=credential,
            connection_verify=str(server.ca_file),
        )
    )


# --- round trip, listing, deleting -------------------------------------------------------------------------------


def test_round_trip_list_delete(azurite_http: AzuriteServer):
    store = _store(azurite_http, "roundtrip")
    store.write_bytes("x/y.bin", b"\x00\x01")
    store.write_bytes("x/z.bin", b"2")
    store.write_bytes("x/deep/er/w.bin", b"3")
    store.write_bytes("xx.bin", b"4")
    assert store.read_bytes("x/y.bin") == b"\x00\x01"
    assert store.list("x/") == ["x/deep/er/w.bin", "x/y.bin", "x/z.bin"]
    assert store.list("") == ["x/deep/er/w.bin", "x/y.bin", "x/z.bin", "xx.bin"]
    assert store.list("nothing/") == []
    store.write_bytes("x/z.bin", b"replaced")
    assert store.read_bytes("x/z.bin") == b"replaced"
    store.delete("x/y.bin")
    store.delete("x/y.bin")  # deleting a missing object is fine
    assert not store.exists("x/y.bin")
    assert store.exists("x/z.bin")
    assert store.list("x/") == ["x/deep/er/w.bin", "x/z.bin"]


def test_prefix_isolates_stores_in_one_container(azurite_http: AzuriteServer):
    a, b = _store(azurite_http, "shared", "team-a"), _store(azurite_http, "shared", "team-b/nested")
    a.write_bytes("k", b"a")
    b.write_bytes("k", b"b")
    assert (a.read_bytes("k"), b.read_bytes("k")) == (b"a", b"b")
    assert a.list("") == ["k"]
    whole = _store(azurite_http, "shared", "")
    assert whole.list("") == ["team-a/k", "team-b/nested/k"]


def test_missing_key_raises_key_error_naming_the_blob(azurite_http: AzuriteServer):
    store = _store(azurite_http, "missing")
    with pytest.raises(KeyError, match=r"missing/fraud/nope\.bin"):
        store.read_bytes("nope.bin")
    assert not store.exists("nope.bin")


def _container_exists(server: AzuriteServer, container: str) -> bool:
    from azure.storage.blob import ContainerClient

    with ContainerClient.from_connection_string(server.connection_string, container) as client:
        return bool(client.exists())


def test_missing_container_reads_as_missing_and_is_not_created(azurite_http: AzuriteServer, tmp_path: Path):
    store = _store(azurite_http, "never-created")  # opening sends no request
    with pytest.raises(KeyError, match=rf"no container 'never-created' at {azurite_http.account_url}: cannot read"):
        store.read_bytes("k")
    assert store.list("") == []
    assert not store.exists("k")
    store.delete("k")  # nothing to delete
    with pytest.raises(KeyError, match=r"no container 'never-created' at .*: nothing under .*/never-created/fraud/d/"):
        store.download_dir("d/", tmp_path / "out")
    assert not _container_exists(azurite_http, "never-created")


def test_first_write_creates_the_missing_container(azurite_http: AzuriteServer, caplog):
    caplog.set_level(logging.INFO, logger="fraud_detection.store.azure")
    store = _store(azurite_http, "created-on-write")
    assert not _container_exists(azurite_http, "created-on-write")
    store.write_bytes("a/k", b"v")
    assert _container_exists(azurite_http, "created-on-write")
    assert store.read_bytes("a/k") == b"v"
    assert store.list("") == ["a/k"]
    assert "created Azure Blob container 'created-on-write'" in caplog.text


def test_concurrent_first_writes_all_succeed(azurite_http: AzuriteServer):
    stores = [_store(azurite_http, "raced", f"w{i}") for i in range(8)]  # several pods, one missing container
    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(lambda s: s.write_bytes("k", s.prefix.encode()), stores))
    assert _store(azurite_http, "raced", "").list("") == [f"w{i}/k" for i in range(8)]


def test_create_container_creates_it_when_opened(azurite_http: AzuriteServer):
    _store(azurite_http, "eager", create_container=True)
    assert _container_exists(azurite_http, "eager")
    _store(azurite_http, "eager", create_container=True)  # already there: fine


def test_large_object_round_trips_in_one_put(azurite_http: AzuriteServer):
    store = _store(azurite_http, "large")
    data = bytes(range(256)) * 40_000  # ~10 MB: above the SDK's chunked download size
    store.write_bytes("big.bin", data)
    assert store.read_bytes("big.bin") == data


def test_upload_and_download_dir(azurite_http: AzuriteServer, tmp_path: Path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    store = _store(azurite_http, "dirs")
    store.upload_dir(src, "d/", last="a.txt")
    assert store.list("d/") == ["d/a.txt", "d/sub/b.txt"]
    out = store.download_dir("d/", tmp_path / "out")
    assert (out / "sub" / "b.txt").read_text() == "b"


def test_keys_escaping_the_prefix_are_refused(azurite_http: AzuriteServer):
    store = _store(azurite_http, "keys", "inside")
    for key in ("../outside", "a/../../b", "/abs", "a//b", "", "a/."):
        with pytest.raises(StoreError, match="invalid key"):
            store.write_bytes(key, b"x")
    assert _store(azurite_http, "keys", "").list("") == []


# --- the registry ------------------------------------------------------------------------------------------------


def test_registry_publishes_and_loads_a_verified_bundle(azurite_http: AzuriteServer, tiny_bundle: Path, tmp_path: Path):
    from fraud_detection.model.bundle import generate_key_pair
    from fraud_detection.store.base import BundleTrustConfig

    signing, verify = generate_key_pair()
    store = _store(azurite_http, "models", "reg")
    store.trust = BundleTrustConfig(verify_key=verify, trust_unsigned=False)  # as open_configured_store sets it
    reg = ModelRegistry(store, "fraud-detector", signing_key=signing)
    version = reg.publish(tiny_bundle)
    reg.set_alias("canary", version)
    assert reg.versions() == [version]
    assert reg.resolve("latest") == (version, None)
    bundle = reg.load("canary", tmp_path / "cache")
    assert bundle.metadata.version == version
    assert reg.store.uri(reg.version_prefix(version)) == (
        f"{azurite_http.account_url}/models/reg/models/fraud-detector/versions/{version}/"
    )
    # A second registry object (another pod) sees the same version and alias.
    other = ModelRegistry(_store(azurite_http, "models", "reg"), "fraud-detector")
    assert other.get_alias("canary")["version"] == version  # type: ignore[index]


def test_incomplete_version_is_not_listed(azurite_http: AzuriteServer, tiny_bundle: Path):
    from fraud_detection.model.bundle import MANIFEST_FILE

    reg = ModelRegistry(_store(azurite_http, "models", "partial"), "fraud-detector")
    version = reg.publish(tiny_bundle)
    reg.store.delete(reg.version_prefix(version) + MANIFEST_FILE)  # as if the publisher died before the manifest
    assert reg.versions() == []


def test_tampered_blob_is_refused(azurite_http: AzuriteServer, tiny_bundle: Path, tmp_path: Path):
    from fraud_detection.model.bundle import BundleIntegrityError

    reg = ModelRegistry(_store(azurite_http, "models", "tamper"), "fraud-detector")
    version = reg.publish(tiny_bundle)
    reg.store.write_bytes(reg.version_prefix(version) + "metadata.json", b"{}")
    with pytest.raises(BundleIntegrityError, match=r"metadata\.json digest"):
        reg.load(version, tmp_path / "cache")


def test_registry_over_oauth_tokens(azurite_https: AzuriteServer, tiny_bundle: Path, tmp_path: Path):
    credential = FakeEntraCredential()
    reg = ModelRegistry(_oauth_store(azurite_https, "models", credential), "fraud-detector")
    version = reg.publish(tiny_bundle)
    reg.set_alias("production", version)
    assert reg.load("production", tmp_path / "cache").metadata.version == version
    assert credential.scopes and set(credential.scopes) == {("https://storage.azure.com/.default",)}
    assert len(credential.tokens) == 1, "the bearer token is cached across requests"


def test_rejected_token_fails_with_a_clear_error(azurite_https: AzuriteServer):
    store = _oauth_store(azurite_https, "models", FakeEntraCredential(audience="https://vault.azure.net"))
    with pytest.raises(StoreError, match=r"cannot list .*container 'models'.*AuthenticationFailed"):
        store.list("")
    with pytest.raises(StoreError, match=r"cannot write .*container 'models'.*AuthenticationFailed"):
        store.write_bytes("k", b"v")
    with pytest.raises(StoreError, match=r"container 'models'.*AuthenticationFailed"):
        AzureBlobStore(
            "models",
            account_url=azurite_https.account_url,
            credential=FakeEntraCredential(audience="https://vault.azure.net"),
            connection_verify=str(azurite_https.ca_file),
            create_container=True,
        )


def test_expired_token_fails(azurite_https: AzuriteServer):
    with pytest.raises(StoreError, match=r"AuthenticationFailed"):
        _oauth_store(azurite_https, "models", FakeEntraCredential(lifetime=-60)).read_bytes("k")


def test_wrong_account_key_fails_with_a_clear_error(azurite_http: AzuriteServer):
    wrong = azurite_http.connection_string.replace(azurite_http.account_key, base64.b64encode(b"x" * 64).decode())
    store = AzureBlobStore("models", "p", connection_string=wrong)
    with pytest.raises(StoreError, match=r"cannot read .*container 'models'.*403"):
        store.read_bytes("k")
    with pytest.raises(StoreError, match=r"cannot write .*container 'models'.*403"):
        store.write_bytes("k", b"v")


# --- URIs, settings and open_store -------------------------------------------------------------------------------


def test_uri_forms_parse():
    assert parse_azure_blob_uri("az://models/a/b/", "https://acct.blob.core.windows.net/") == (
        "https://acct.blob.core.windows.net",
        "models",
        "a/b",
    )
    assert parse_azure_blob_uri("az://models") == (None, "models", "")
    assert parse_azure_blob_uri("https://acct.blob.core.windows.net/models/fraud/x", "https://ignored") == (
        "https://acct.blob.core.windows.net",
        "models",
        "fraud/x",
    )
    assert is_azure_blob_uri("az://c/p") and is_azure_blob_uri("https://a.blob.core.windows.net/c")
    assert not is_azure_blob_uri("https://example.com/c") and not is_azure_blob_uri("s3://b/p")
    for bad in ("az:///p", "https://acct.blob.core.windows.net/", "s3://b/p"):
        with pytest.raises(StoreError):
            parse_azure_blob_uri(bad, "https://acct.blob.core.windows.net")
    with pytest.raises(StoreError, match="no query string") as err:
        parse_azure_blob_uri("https://acct.blob.core.windows.net/c/p?sv=2024&sig=SECRETSIG")
    assert "SECRETSIG" not in str(err.value)


def test_invalid_container_name_is_refused_before_any_request():
    for name in ("UPPER", "a", "two--hyphens", "-lead", "under_score", "x" * 64):
        with pytest.raises(StoreError, match="invalid Azure Blob container name"):
            AzureBlobStore(name, account_url="https://acct.blob.core.windows.net")


def test_az_uri_without_an_account_names_the_settings():
    with pytest.raises(StoreError, match=r"FRAUD_AZURE_STORAGE_ACCOUNT_URL.*AZURE_STORAGE_CONNECTION_STRING"):
        AzureBlobStore.from_uri("az://models/fraud")


def test_https_uri_names_its_account(azurite_http: AzuriteServer):
    store = AzureBlobStore.from_uri("https://acct.blob.core.windows.net/models/fraud", credential=FakeEntraCredential())
    assert store.uri("k") == "https://acct.blob.core.windows.net/models/fraud/k"
    assert store.account_name == "acct"
    # Emulator credentials with a URI naming another account: refused instead of writing to the wrong place.
    with pytest.raises(StoreError, match=r"account 'devstoreaccount1'.*account 'acct'"):
        AzureBlobStore.from_uri(
            "https://acct.blob.core.windows.net/models/fraud", connection_string=azurite_http.connection_string
        )


def test_workload_identity_uses_default_azure_credential_lazily(monkeypatch, tmp_path: Path):
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("projected-service-account-token")
    monkeypatch.setenv("AZURE_CLIENT_ID", "22222222-0000-0000-0000-000000000000")
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/")
    from azure.identity import DefaultAzureCredential, WorkloadIdentityCredential

    store = AzureBlobStore.from_uri("az://models/fraud", account_url="https://acct.blob.core.windows.net")
    assert store.auth == "DefaultAzureCredential"
    credential = store._service.credential
    assert isinstance(credential, DefaultAzureCredential)
    assert any(isinstance(c, WorkloadIdentityCredential) for c in credential.credentials)
    assert store.uri("k") == "https://acct.blob.core.windows.net/models/fraud/k"


def test_connection_string_from_the_environment(azurite_http: AzuriteServer, monkeypatch):
    monkeypatch.setenv(CONNECTION_STRING_ENV, azurite_http.connection_string)
    store = AzureBlobStore.from_uri("az://envcontainer/p")
    store.write_bytes("k", b"v")
    assert store.read_bytes("k") == b"v"
    assert store.auth == "connection string"


def test_open_store_dispatches_azure_uris(azurite_http: AzuriteServer, monkeypatch):
    """Passes once store.open_store dispatches az:// and blob URLs to AzureBlobStore."""
    monkeypatch.setenv(CONNECTION_STRING_ENV, azurite_http.connection_string)
    store = open_store("az://opened/fraud")
    assert isinstance(store, AzureBlobStore)
    store.write_bytes("k", b"v")
    assert store.read_bytes("k") == b"v"
    assert store.uri("k") == f"{azurite_http.account_url}/opened/fraud/k"


@pytest.mark.parametrize("process", ["pipeline", "serve", "drift", "rollout"])
def test_settings_pass_the_account_url(azurite_http: AzuriteServer, monkeypatch, process: str):
    """Every process's settings carry azure_storage_account_url, and open_configured_store hands it on."""
    from fraud_detection.settings import DriftSettings, PipelineSettings, RolloutSettings, ServeSettings
    from fraud_detection.store.uri import open_configured_store

    settings_class = {
        "pipeline": PipelineSettings,
        "serve": ServeSettings,
        "drift": DriftSettings,
        "rollout": RolloutSettings,
    }[process]
    monkeypatch.setenv("FRAUD_STORE_URI", "az://settings/fraud")
    monkeypatch.setenv(CONNECTION_STRING_ENV, azurite_http.connection_string)
    monkeypatch.setenv("FRAUD_AZURE_STORAGE_ACCOUNT_URL", azurite_http.account_url)
    settings = settings_class()
    assert azurite_http.account_key not in repr(settings)
    store = open_configured_store(settings)
    assert isinstance(store, AzureBlobStore)
    store.write_bytes("k", b"v")
    assert store.read_bytes("k") == b"v"
    monkeypatch.setenv("FRAUD_AZURE_STORAGE_ACCOUNT_URL", "https://prodacct.blob.core.windows.net")
    with pytest.raises(StoreError, match="prodacct"):
        open_configured_store(settings_class())


# --- secrets -----------------------------------------------------------------------------------------------------


def _exercise(store: AzureBlobStore) -> list[str]:
    """Every operation, successful and failing; returns the text of every error raised."""
    errors: list[str] = []
    store.write_bytes("s/k", b"v")
    store.read_bytes("s/k")
    store.list("s/")
    store.exists("s/k")
    store.delete("s/k")
    for call in (lambda: store.read_bytes("s/missing"), lambda: store.write_bytes("../bad", b"")):
        try:
            call()
        except (KeyError, StoreError) as exc:
            errors.append(f"{exc!r} {exc}")
    return errors


def test_account_key_and_token_never_reach_repr_logs_or_errors(
    azurite_http: AzuriteServer, azurite_https: AzuriteServer, caplog
):
    caplog.set_level(logging.DEBUG)  # every logger, the Azure SDK's and urllib3's included
    logging.getLogger("fraud_detection.store.azure.http").setLevel(logging.DEBUG)
    try:
        keyed = _store(azurite_http, "secrets")
        credential = FakeEntraCredential()
        oauth = _oauth_store(azurite_https, "secrets", credential)
        texts = [repr(keyed), str(keyed), repr(oauth), keyed.uri("k"), oauth.uri("k")]
        texts += _exercise(keyed) + _exercise(oauth)
        wrong = azurite_http.connection_string.replace(azurite_http.account_key, base64.b64encode(b"y" * 64).decode())
        with pytest.raises(StoreError) as err:
            AzureBlobStore("secrets", connection_string=wrong).read_bytes("s/k")
        texts.append(str(err.value))
        with pytest.raises(StoreError) as err:
            AzureBlobStore("secrets", connection_string=wrong, create_container=True)
        texts.append(str(err.value))
    finally:
        logging.getLogger("fraud_detection.store.azure.http").setLevel(logging.WARNING)
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert "PUT" in logged or "Request URL" in logged, "the HTTP logs were captured (the check below means something)"
    secrets = [azurite_http.account_key, base64.b64encode(b"y" * 64).decode(), *credential.tokens]
    assert credential.tokens
    for secret in secrets:
        for text in [*texts, logged]:
            assert secret not in text
    assert not any(hasattr(s, "connection_string") for s in (keyed, oauth))


def test_malformed_connection_string_fails_without_echoing_it():
    bad = "AccountName=devstoreaccount1;AccountKey=c2VjcmV0LWtleS12YWx1ZQ==;NoEndpointHere"
    with pytest.raises(StoreError, match=r"container 'models': invalid connection string") as err:
        AzureBlobStore("models", connection_string=bad)
    assert "c2VjcmV0LWtleS12YWx1ZQ" not in str(err.value)


def test_sdk_request_logs_stay_quiet_at_info(azurite_http: AzuriteServer, caplog):
    caplog.set_level(logging.INFO)
    store = _store(azurite_http, "quiet", create_container=True)
    caplog.clear()
    store.write_bytes("k", b"v")
    store.read_bytes("k")
    assert [r.name for r in caplog.records] == []


def test_sas_signature_never_reaches_repr_uri_errors_or_info_logs(azurite_http: AzuriteServer, caplog):
    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    _store(azurite_http, "sas", create_container=True)  # create the container with the key
    sas = generate_account_sas(
        azurite_http.account_name,
        azurite_http.account_key,
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(read=True, list=True),  # read-only
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    signature = next(p.split("=", 1)[1] for p in sas.split("&") if p.startswith("sig="))
    caplog.set_level(logging.INFO)
    logging.getLogger("fraud_detection.store.azure.http").setLevel(logging.INFO)
    try:
        store = AzureBlobStore(
            "sas", "p", connection_string=f"BlobEndpoint={azurite_http.account_url};SharedAccessSignature={sas}"
        )
        assert store.list("") == []
        with pytest.raises(StoreError, match=r"cannot write .*container 'sas'.*403") as err:
            store.write_bytes("k", b"v")  # read-only SAS
    finally:
        logging.getLogger("fraud_detection.store.azure.http").setLevel(logging.WARNING)
    assert "Request URL" in caplog.text, "the SDK's request log was captured"
    for text in (repr(store), store.uri("k"), store.account_url, str(err.value), caplog.text):
        assert signature not in text
        assert "sig=" not in text or "sig=REDACTED" in text


def test_core_import_does_not_need_azure():
    code = (
        "import sys; import fraud_detection.store, fraud_detection.store.azure, fraud_detection.model.registry; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'azure'); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
