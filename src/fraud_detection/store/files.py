"""Local files written atomically: write to a temporary file, then rename."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that is renamed onto it only when the block succeeds.

    Readers see the old file or the complete new one, never a part; on failure the temporary file is removed. The
    temporary name keeps the suffix, for writers that choose the format by it.

    Args:
        path: Destination file (its directory is created).

    Yields:
        The temporary path to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write JSON atomically.

    Args:
        path: Destination.
        payload: JSON-serialisable dict.

    Returns:
        The path.
    """
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str))
    return path
