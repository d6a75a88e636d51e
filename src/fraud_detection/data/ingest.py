"""Ingestion: raw transactions fetched unchanged (simulated, a local path or an ``s3://`` URI) for validation.

Kept apart from :mod:`fraud_detection.workflow` so the ingest step imports neither scikit-learn nor the model code.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from fraud_detection.data import schema
from fraud_detection.data.simulate import SimulationConfig, simulate
from fraud_detection.store.base import ArtifactStore
from fraud_detection.store.files import atomic_file


def ingest(
    data_source: str, out_dir: Path, simulation: SimulationConfig, open_store: Callable[[str], ArtifactStore]
) -> str:
    """Fetch raw transactions unchanged into a directory (simulated when there is no source).

    Args:
        data_source: Empty to simulate; else a ``.csv``/``.parquet`` file or Parquet directory, local or ``s3://``.
        out_dir: Destination directory; files keep their names (``tx.parquet`` when simulated).
        simulation: What to simulate when ``data_source`` is empty.
        open_store: Opens a store URI with the platform's credentials (e.g. ``open_configured_store`` bound to the
            settings).

    Returns:
        A description of the source for the model's lineage.

    Raises:
        FileNotFoundError: A local source that does not exist.
        KeyError: An ``s3://`` source with no such object or prefix.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if not data_source:
        schema.write_frame(simulate(simulation), out_dir / "tx.parquet")
        c = simulation
        return f"simulator(customers={c.n_customers}, terminals={c.n_terminals}, days={c.n_days}, seed={c.seed})"
    if data_source.startswith("s3://"):
        url = urlparse(data_source)
        store, key = open_store(f"s3://{url.netloc}"), url.path.strip("/")
        try:
            data = store.read_bytes(key)
        except KeyError:
            store.download_dir(key + "/", out_dir)
        else:
            with atomic_file(out_dir / Path(key).name) as tmp:
                tmp.write_bytes(data)
        return data_source
    src = Path(data_source)
    if not src.exists():
        raise FileNotFoundError(f"data source {data_source}: no such file or directory")
    if src.is_dir():
        shutil.copytree(src, out_dir, dirs_exist_ok=True)
    else:
        shutil.copy2(src, out_dir / src.name)
    return str(src.resolve())
