"""``fraud features`` on s3:// data with a real S3 server (SeaweedFS on loopback): the input is staged to a local
temporary directory through the store layer (``fraud_detection.store.staging``, which the Spark Operator step uses
too), and day partitions go back under the output prefix with ``_SUCCESS`` written last.

The staging and the in-memory engine run by default; the Spark engine end to end starts a JVM (marked ``spark``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate
from fraud_detection.features.engine import spark_missing
from fraud_detection.features.offline import build_features
from fraud_detection.store.base import ArtifactStore
from fraud_detection.store.staging import MARKER, check_publishable, publish_dir, split_location, stage_in
from fraud_detection.store.uri import open_store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return schema.validate_transactions(simulate(SimulationConfig(n_customers=40, n_terminals=80, n_days=12, seed=5)))


@pytest.fixture
def env(s3_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)


def _bucket(s3_server, name: str) -> ArtifactStore:
    return open_store(
        f"s3://{name}",
        s3_endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def _day_files(raw: pd.DataFrame) -> dict[str, bytes]:
    days = raw["event_time"].dt.strftime("%Y-%m-%d")
    return {f"day={d}/part-0.parquet": _parquet(raw[days == d]) for d in sorted(days.unique())}


def test_split_location() -> None:
    assert split_location("s3://raw/2026/11/tx.parquet") == ("s3://raw", "2026/11/tx.parquet")
    assert split_location("az://exports/tx/") == ("az://exports", "tx/")
    for bad in ("/tmp/x", "s3:///key", "gs://b/k"):
        with pytest.raises(ValueError, match="expected s3://bucket"):
            split_location(bad)


def test_an_object_and_a_prefix_are_staged_byte_for_byte(s3_server, raw: pd.DataFrame, tmp_path: Path) -> None:
    store = _bucket(s3_server, "stage-in")
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
    with pytest.raises(KeyError, match="nothing under s3://stage-in/exports/missing/"):
        stage_in(store, "exports/missing", tmp_path)


def test_publishing_replaces_an_earlier_output_marker_last(s3_server, tmp_path: Path) -> None:
    store = _bucket(s3_server, "publish")
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

    store.delete("features/_SUCCESS")  # an interrupted publication, or someone else's data
    with pytest.raises(ValueError, match="no _SUCCESS"):
        check_publishable(store, "features/")
    store.write_bytes("an-object", b"x")
    with pytest.raises(ValueError, match="is an object"):
        check_publishable(store, "an-object/")


def test_features_in_memory_from_and_to_s3(s3_server, env, raw: pd.DataFrame, tmp_path: Path) -> None:
    store = _bucket(s3_server, "features-memory")
    for name, data in _day_files(raw).items():
        store.write_bytes(f"raw/{name}", data)
    result = CliRunner().invoke(
        app, ["features", "--data", "s3://features-memory/raw/", "--output", "s3://features-memory/out/f.parquet"]
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
        (["--data", "s3://features-bad/missing/"], "--data s3://features-bad/missing/: nothing under"),
        (["--data", "s3://features-bad/raw/", "--output", "s3://features-bad"], "not the bucket itself"),
        (["--data", "s3://features-bad/raw/", "--output", "s3://features-bad/f.csv"], "unknown suffix"),
        (
            ["--data", "s3://features-bad/raw/", "--output", "s3://features-bad/taken/", "--engine", "spark"],
            "s3://features-bad/taken/: holds 1 objects but no _SUCCESS",
        ),
    ],
    ids=["missing-input", "bucket-output", "bad-suffix", "foreign-prefix"],
)
def test_bad_locations_are_one_line_errors(s3_server, env, raw, args: list[str], message: str) -> None:
    store = _bucket(s3_server, "features-bad")
    store.write_bytes("raw/tx.parquet", _parquet(raw))
    store.write_bytes("taken/notes.txt", b"someone else's")
    result = CliRunner().invoke(app, ["features", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert store.list("taken/") == ["taken/notes.txt"]  # refused before anything was written


@pytest.mark.spark
@pytest.mark.skipif(bool(spark_missing()), reason=spark_missing() or "")
def test_features_on_spark_from_and_to_s3(s3_server, env, raw: pd.DataFrame, tmp_path: Path) -> None:
    store = _bucket(s3_server, "features-spark")
    for name, data in _day_files(raw).items():
        store.write_bytes(f"raw/{name}", data)
    argv = ["features", "--engine", "spark", "--spark-master", "local[1]", "--data", "s3://features-spark/raw"]
    result = CliRunner().invoke(app, [*argv, "--output", "s3://features-spark/features"])
    assert result.exit_code == 0, result.output
    keys = store.list("features/")
    assert "features/_SUCCESS" in keys and all(k.startswith(("features/day=", "features/_SUCCESS")) for k in keys)
    assert not any(Path(k).name.startswith(".") for k in keys)
    back = pd.read_parquet(store.download_dir("features/", tmp_path / "back"))
    want = build_features(raw)
    got = back.set_index("transaction_id").loc[want["transaction_id"].astype(str).tolist()]
    for name in schema.FEATURES:
        assert np.allclose(got[name].to_numpy(), want[name].to_numpy(), rtol=0, atol=1e-9), name
