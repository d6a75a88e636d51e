"""``fraud_detection.data.ingest.ingest`` (the ``ingest_data`` step) against a real S3 API (SeaweedFS on loopback)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from minio import Minio

from fraud_detection.data.ingest import ingest
from fraud_detection.data.simulate import SimulationConfig
from fraud_detection.store.base import ArtifactStore
from fraud_detection.store.uri import open_store
from tests.helpers.seaweed import S3Server

pytestmark = pytest.mark.integration

NO_SIMULATION = SimulationConfig(n_customers=10, n_terminals=10, n_days=2)


def _opener(s3: S3Server):
    def open_(uri: str) -> ArtifactStore:
        return open_store(uri, s3_endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key)

    return open_


def _client(s3: S3Server) -> Minio:
    return Minio(s3.endpoint.removeprefix("http://"), s3.access_key, s3.secret_key, secure=False)


def test_ingest_copies_an_s3_object_and_an_s3_prefix_unchanged(s3_server: S3Server, tmp_path: Path):
    store = _opener(s3_server)("s3://ingest-src")
    frame = pd.DataFrame({"transaction_id": ["a", "b"], "amount": [1.5, 2.5]})
    frame.to_parquet(tmp_path / "one.parquet")
    data = (tmp_path / "one.parquet").read_bytes()
    store.write_bytes("single/tx.parquet", data)
    store.write_bytes("daily/2018-04-01.parquet", data)
    store.write_bytes("daily/2018-04-02.parquet", data)

    source = ingest("s3://ingest-src/single/tx.parquet", tmp_path / "one", NO_SIMULATION, _opener(s3_server))
    assert source == "s3://ingest-src/single/tx.parquet"
    assert (tmp_path / "one" / "tx.parquet").read_bytes() == data
    assert not list((tmp_path / "one").glob(".*"))  # no temporary file left behind

    ingest("s3://ingest-src/daily", tmp_path / "many", NO_SIMULATION, _opener(s3_server))
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["2018-04-01.parquet", "2018-04-02.parquet"]


def test_ingest_from_a_missing_bucket_names_it_and_creates_nothing(s3_server: S3Server, tmp_path: Path):
    with pytest.raises(KeyError, match="no-such-bucket"):
        ingest("s3://no-such-bucket/tx.parquet", tmp_path / "raw", NO_SIMULATION, _opener(s3_server))
    assert not _client(s3_server).bucket_exists("no-such-bucket")
    assert not any((tmp_path / "raw").iterdir())


def test_ingest_from_a_missing_key_names_it(s3_server: S3Server, tmp_path: Path):
    _opener(s3_server)("s3://ingest-keys").write_bytes("present.parquet", b"x")
    with pytest.raises(KeyError, match="ingest-keys/absent"):
        ingest("s3://ingest-keys/absent", tmp_path / "raw", NO_SIMULATION, _opener(s3_server))
