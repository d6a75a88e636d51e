"""LocalStore: a directory as an artifact store (keys are ``/``-separated paths under the root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fraud_detection.store.base import StoreError
from fraud_detection.store.local import LocalStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "root")


def test_write_then_read_returns_the_bytes_and_creates_folders(store: LocalStore):
    store.write_bytes("models/m/versions/v1/model.joblib", b"\x00\x01payload")
    assert store.read_bytes("models/m/versions/v1/model.joblib") == b"\x00\x01payload"
    assert (store.root / "models" / "m" / "versions" / "v1" / "model.joblib").is_file()


def test_write_replaces_the_previous_content_and_leaves_no_temporary_file(store: LocalStore):
    store.write_bytes("a/k.json", b"first, longer content")
    store.write_bytes("a/k.json", b"second")
    assert store.read_bytes("a/k.json") == b"second"
    assert [p.name for p in (store.root / "a").iterdir()] == ["k.json"]


def test_failed_write_keeps_the_old_object(store: LocalStore, monkeypatch: pytest.MonkeyPatch):
    store.write_bytes("k", b"old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.write_bytes("k", b"new")
    monkeypatch.undo()
    assert store.read_bytes("k") == b"old"
    assert store.list("") == ["k"]
    assert [p.name for p in store.root.iterdir()] == ["k"]


def test_reading_a_missing_key_is_a_key_error_naming_the_key_and_the_root(store: LocalStore):
    with pytest.raises(KeyError, match=r"no object 'models/none\.json'") as info:
        store.read_bytes("models/none.json")
    assert str(store.root) in str(info.value)


def test_reading_a_folder_is_a_key_error(store: LocalStore):
    store.write_bytes("dir/file", b"x")
    with pytest.raises(KeyError, match="'dir'"):
        store.read_bytes("dir")


def test_exists_is_true_only_for_written_objects(store: LocalStore):
    assert not store.exists("a/b")
    store.write_bytes("a/b", b"")
    assert store.exists("a/b")
    assert not store.exists("a")  # a folder is not an object
    assert not store.exists("a/c")


def test_list_is_recursive_sorted_and_limited_to_the_prefix(store: LocalStore):
    for key in ("x/z.bin", "x/y.bin", "x/deep/er/w.bin", "xx.bin", "other/o.bin"):
        store.write_bytes(key, key.encode())
    assert store.list("x/") == ["x/deep/er/w.bin", "x/y.bin", "x/z.bin"]
    assert store.list("") == ["other/o.bin", "x/deep/er/w.bin", "x/y.bin", "x/z.bin", "xx.bin"]
    assert store.list("x/deep/") == ["x/deep/er/w.bin"]
    assert store.list("nothing/") == []


def test_list_of_a_missing_root_is_empty(tmp_path: Path):
    store = LocalStore(tmp_path / "never-created")
    assert store.list("") == []
    assert store.list("a/") == []
    assert not (tmp_path / "never-created").exists()


def test_list_of_an_object_key_gives_that_key(store: LocalStore):
    store.write_bytes("a/b.txt", b"1")
    assert store.list("a/b.txt") == ["a/b.txt"]


def test_list_hides_temporary_files_of_writes_in_progress(store: LocalStore):
    store.write_bytes("p/done.parquet", b"1")
    (store.root / "p" / ".done.0123abcd.tmp.parquet").write_bytes(b"half")
    assert store.list("p/") == ["p/done.parquet"]


def test_delete_removes_the_object_and_ignores_a_missing_one(store: LocalStore):
    store.write_bytes("a/b", b"1")
    store.write_bytes("a/c", b"2")
    store.delete("a/b")
    assert not store.exists("a/b")
    assert store.list("a/") == ["a/c"]
    store.delete("a/b")  # already gone: nothing to do
    store.delete("never/there")


def test_uri_is_the_resolved_path_of_the_root_and_of_a_key(tmp_path: Path):
    store = LocalStore(tmp_path / "sub" / ".." / "root")
    root = (tmp_path / "root").resolve()
    assert store.uri() == str(root)
    assert store.uri("a/b.json") == str(root / "a" / "b.json")


def test_root_expands_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    store = LocalStore("~/artifacts")
    assert store.root == (tmp_path / "artifacts").resolve()


def test_a_key_with_dot_dot_that_stays_inside_the_root_is_normalised(store: LocalStore):
    store.write_bytes("a/../b.txt", b"1")
    assert store.read_bytes("b.txt") == b"1"
    assert store.list("") == ["b.txt"]


@pytest.mark.parametrize("key", ["../x", "a/../../x", "../root-sibling/x", "/etc/passwd", "/tmp/x"])
def test_keys_escaping_the_root_are_refused_by_every_operation(store: LocalStore, tmp_path: Path, key: str):
    store.write_bytes("inside", b"1")
    outside = tmp_path / "x"
    outside.write_bytes(b"secret")
    operations = {
        "write": lambda: store.write_bytes(key, b"evil"),
        "read": lambda: store.read_bytes(key),
        "exists": lambda: store.exists(key),
        "delete": lambda: store.delete(key),
        "list": lambda: store.list(key),
    }
    for name, call in operations.items():
        with pytest.raises(StoreError, match="escapes the store root") as info:
            call()
        assert repr(key) in str(info.value), name
    assert outside.read_bytes() == b"secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root", "x"]


def test_a_symlink_leading_out_of_the_root_is_refused(store: LocalStore, tmp_path: Path):
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "key.pem").write_bytes(b"secret")
    store.root.mkdir(parents=True)
    (store.root / "link").symlink_to(secret, target_is_directory=True)
    with pytest.raises(StoreError, match="escapes the store root"):
        store.read_bytes("link/key.pem")
    with pytest.raises(StoreError, match="escapes the store root"):
        store.write_bytes("link/new", b"evil")
    assert sorted(p.name for p in secret.iterdir()) == ["key.pem"]


def test_the_empty_key_is_refused(tmp_path: Path):
    store = LocalStore(tmp_path / "root")
    with pytest.raises(StoreError):
        store.write_bytes("", b"x")
    assert not (tmp_path / "root").exists()


def test_upload_dir_writes_every_file_and_the_named_one_last(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    src = tmp_path / "bundle"
    (src / "sub").mkdir(parents=True)
    for name in ("MANIFEST.json", "model.joblib", "sub/z.txt", "a.txt"):
        (src / name).write_text(name)
    written: list[str] = []
    real = LocalStore.write_bytes

    def recording(self: LocalStore, key: str, data: bytes) -> None:
        written.append(key)
        real(self, key, data)

    monkeypatch.setattr(LocalStore, "write_bytes", recording)
    store.upload_dir(src, "v/1/", last="MANIFEST.json")
    assert written[-1] == "v/1/MANIFEST.json"
    assert sorted(written) == ["v/1/MANIFEST.json", "v/1/a.txt", "v/1/model.joblib", "v/1/sub/z.txt"]
    assert store.read_bytes("v/1/sub/z.txt") == b"sub/z.txt"


def test_download_dir_copies_the_prefix_and_refuses_an_empty_one(store: LocalStore, tmp_path: Path):
    store.write_bytes("v/1/a.txt", b"a")
    store.write_bytes("v/1/sub/b.txt", b"b")
    store.write_bytes("v/2/c.txt", b"c")
    dest = store.download_dir("v/1/", tmp_path / "out")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == ["a.txt", "sub/b.txt"]
    assert (dest / "sub" / "b.txt").read_bytes() == b"b"
    with pytest.raises(KeyError, match="nothing under"):
        store.download_dir("v/3/", tmp_path / "out3")
