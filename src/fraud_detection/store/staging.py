"""Copy data between a store and a local directory for an engine that cannot read the store itself.

Spark here has no S3A connector, and the Spark Operator's pods cannot read a step's local artifact: both stage data
through the store layer (so ``s3://``, ``az://`` and their credentials work the same way everywhere):

* :func:`split_location`: ``s3://bucket/a/b`` into the store's root and the key or prefix under it;
* :func:`stage_file` / :func:`stage_in`: a local file into the store, an object or a prefix out of it;
* :func:`check_publishable` / :func:`publish_dir`: a directory of day partitions into the store, completion marker
  last.

Object stores have no rename, so publishing a directory is **not atomic**: the old completion marker is removed
first, every file is written, stale files of an earlier output are deleted, and the marker (``_SUCCESS``, as Spark
writes it) is written last. A reader that waits for the marker never sees a partial output; one that ignores it can.
Each object is held in memory while it is copied (the store's API is whole objects): partitioned data keeps that small.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from fraud_detection.store.base import ArtifactStore

LOG = logging.getLogger(__name__)
#: Schemes of the stores an engine reads through staging (a local path needs none).
REMOTE_SCHEMES = ("s3", "az")
#: The completion marker Spark writes, and :func:`publish_dir` writes last.
MARKER = "_SUCCESS"


def is_remote(location: str) -> bool:
    """Whether a location is in an object store (``s3://`` or ``az://``) rather than a local path.

    Args:
        location: A path or URI.

    Returns:
        True for ``s3://`` and ``az://`` URIs.
    """
    return urlparse(location).scheme in REMOTE_SCHEMES


def split_location(location: str) -> tuple[str, str]:
    """Split a store URI into its root (``scheme://bucket``) and the key or prefix under it.

    Args:
        location: ``s3://bucket/key-or-prefix`` or ``az://container/key-or-prefix``.

    Returns:
        The root URI (to open the store) and the key (``""`` for the whole bucket).

    Raises:
        ValueError: Not an ``s3://`` or ``az://`` URI, or no bucket in it.
    """
    parsed = urlparse(location)
    if parsed.scheme not in REMOTE_SCHEMES:
        raise ValueError(f"{location}: not a store URI (expected s3://bucket/key or az://container/key)")
    if not parsed.netloc:
        raise ValueError(f"{location}: no bucket in the URI (expected {parsed.scheme}://bucket/key)")
    return f"{parsed.scheme}://{parsed.netloc}", parsed.path.lstrip("/")


def stage_file(store: ArtifactStore, local: Path, key: str) -> None:
    """Copy one local file to a key (written atomically: readers see all of it or nothing).

    Args:
        store: The store.
        local: The file.
        key: Destination key.
    """
    LOG.info("staging %s at %s", local, store.uri(key))
    store.write_bytes(key, Path(local).read_bytes())


def fetch_prefix(store: ArtifactStore, prefix: str, local: Path) -> Path:
    """Copy every object under a prefix into a directory (the layout under the prefix is kept).

    Args:
        store: The store.
        prefix: Source prefix (ends with ``/``, or is empty for the whole store).
        local: Destination directory (created).

    Returns:
        The destination directory.

    Raises:
        KeyError: Nothing under the prefix (the message names it, and a missing bucket).
    """
    LOG.info("copying %s to %s", store.uri(prefix), local)
    return store.download_dir(prefix, Path(local))


def stage_in(store: ArtifactStore, key: str, local_dir: Path) -> Path:
    """Copy an object, or every object under a prefix, into a local directory for an engine to read.

    Args:
        store: The store.
        key: An object's key (its file name, suffix included, is kept: engines tell Parquet from CSV by it) or a
            prefix (with or without the trailing ``/``; empty for the whole store).
        local_dir: An existing directory to copy into.

    Returns:
        The local copy: a file for an object, a directory for a prefix.

    Raises:
        KeyError: No such object and nothing under the prefix.
    """
    if key and not key.endswith("/") and store.exists(key):
        dest = Path(local_dir) / PurePosixPath(key).name
        LOG.info("copying %s to %s", store.uri(key), dest)
        dest.write_bytes(store.read_bytes(key))
        return dest
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    name = PurePosixPath(prefix.rstrip("/")).name or "data"
    return fetch_prefix(store, prefix, Path(local_dir) / name)


def check_publishable(store: ArtifactStore, prefix: str) -> None:
    """Refuse, before any work, a destination prefix holding something other than an earlier complete output.

    Args:
        store: The store.
        prefix: Destination prefix (ends with ``/``).

    Raises:
        ValueError: Objects are there but no completion marker (not an output this replaces); an object (not a
            prefix) has the destination's name.
        StoreError: The store cannot be listed (unreachable, refused).
    """
    if prefix.strip("/") and store.exists(prefix.rstrip("/")):
        raise ValueError(f"{store.uri(prefix.rstrip('/'))}: is an object, give a prefix for the day partitions")
    keys = store.list(prefix)
    if keys and prefix + MARKER not in keys:
        raise ValueError(
            f"{store.uri(prefix)}: holds {len(keys)} objects but no {MARKER}: not an earlier feature output, "
            "give an empty prefix"
        )


def publish_dir(store: ArtifactStore, local: Path, prefix: str) -> int:
    """Upload a directory under a prefix, replacing an earlier output, with the completion marker written last.

    Not atomic (object stores have no rename): the old marker goes first, then every file is written, then the
    earlier output's files that the new one lacks are deleted, then the marker is written.

    Args:
        store: The store.
        local: The directory (e.g. Spark's output: day partitions and ``_SUCCESS``).
        prefix: Destination prefix (ends with ``/``).

    Returns:
        The number of files written, the marker included.
    """
    local = Path(local)
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    (local / MARKER).touch()
    names = [*(f for f in files if f != MARKER and not PurePosixPath(f).name.startswith(".")), MARKER]
    stale = [k for k in store.list(prefix) if k[len(prefix) :] not in names]
    store.delete(prefix + MARKER)  # from here on, readers see the output as incomplete
    LOG.info("publishing %d files to %s", len(names), store.uri(prefix))
    for name in names[:-1]:
        store.write_bytes(prefix + name, (local / name).read_bytes())
    for key in stale:
        if key != prefix + MARKER:
            store.delete(key)
    store.write_bytes(prefix + MARKER, (local / MARKER).read_bytes())
    return len(names)
