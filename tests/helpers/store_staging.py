"""The store-staging cases of ``fraud features`` that every object store must pass (S3 on SeaweedFS, Azure Blob on
Azurite): each test module opens its store and calls these with its URI scheme and its own expected messages."""

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
from fraud_detection.features.offline import build_features
from fraud_detection.store.base import ArtifactStore
from fraud_detection.store.staging import MARKER, check_publishable, publish_dir, stage_in


def small_history() -> pd.DataFrame:
    """A validated history of 12 days, small enough to stage in a second."""
    return schema.validate_transactions(simulate(SimulationConfig(n_customers=40, n_terminals=80, n_days=12, seed=5)))


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """A frame as the bytes of one Parquet file."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def day_files(raw: pd.DataFrame) -> dict[str, bytes]:
    """The history as day partitions: relative key to Parquet bytes."""
    days = raw["event_time"].dt.strftime("%Y-%m-%d")
    return {f"day={d}/part-0.parquet": parquet_bytes(raw[days == d]) for d in sorted(days.unique())}


def upload_days(store: ArtifactStore, prefix: str, raw: pd.DataFrame) -> dict[str, bytes]:
    """Write the history's day partitions under ``prefix``; return them (relative key to bytes)."""
    files = day_files(raw)
    for name, data in files.items():
        store.write_bytes(f"{prefix}{name}", data)
    return files


def staged_files(copy: Path) -> dict[str, bytes]:
    """A staged directory's files: relative path to bytes."""
    return {p.relative_to(copy).as_posix(): p.read_bytes() for p in copy.rglob("*") if p.is_file()}


def check_object_and_prefix_staged_byte_for_byte(
    store: ArtifactStore, raw: pd.DataFrame, tmp_path: Path, missing_message: str
) -> None:
    """One object keeps its suffix; a prefix (with or without its slash) comes down whole; a missing one is a
    KeyError matching ``missing_message``."""
    files = upload_days(store, "exports/tx/", raw)
    store.write_bytes("exports/one/tx.parquet", parquet_bytes(raw))

    one = stage_in(store, "exports/one/tx.parquet", tmp_path)
    assert one == tmp_path / "tx.parquet" and one.read_bytes() == parquet_bytes(raw)  # the suffix is kept
    for key in ("exports/tx", "exports/tx/"):
        local = tmp_path / key.replace("/", "_")
        local.mkdir()
        copy = stage_in(store, key, local)
        assert copy == local / "tx" and copy.is_dir()
        assert staged_files(copy) == files
    with pytest.raises(KeyError, match=missing_message):
        stage_in(store, "exports/missing", tmp_path)


def check_publishing_replaces_an_earlier_output_marker_last(store: ArtifactStore, tmp_path: Path) -> None:
    """An earlier complete output is replaced, ``_SUCCESS`` last, Spark's checksums stay local; a prefix without
    ``_SUCCESS`` and an object in the way are refused."""
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


def check_in_memory_features_from_and_to_the_store(
    store: ArtifactStore, container_uri: str, raw: pd.DataFrame, tmp_path: Path
) -> None:
    """``fraud features --data URI/raw/ --output URI/out/f.parquet`` equals build_features on the staged input."""
    upload_days(store, "raw/", raw)
    result = CliRunner().invoke(
        app, ["features", "--data", f"{container_uri}/raw/", "--output", f"{container_uri}/out/f.parquet"]
    )
    assert result.exit_code == 0, result.output
    got = pd.read_parquet(io.BytesIO(store.read_bytes("out/f.parquet")))
    want = build_features(schema.read_transactions(stage_in(store, "raw/", tmp_path)))
    assert len(got) == len(raw) == len(want)
    got = got.set_index("transaction_id").loc[want["transaction_id"]]
    for name in schema.FEATURES:
        assert np.array_equal(got[name].to_numpy(), want[name].to_numpy()), name


def check_bad_location_is_one_line_error(
    store: ArtifactStore, raw: pd.DataFrame, args: list[str], message: str
) -> None:
    """``fraud features ARGS`` exits 2 with ``message``, no traceback, nothing written under ``taken/``."""
    store.write_bytes("raw/tx.parquet", parquet_bytes(raw))
    store.write_bytes("taken/notes.txt", b"someone else's")
    result = CliRunner().invoke(app, ["features", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert store.list("taken/") == ["taken/notes.txt"]  # refused before anything was written
