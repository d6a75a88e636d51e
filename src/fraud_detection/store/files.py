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

    Raises:
        OSError: Writing or renaming failed; an error about the temporary file names ``path`` instead (the
            temporary file is removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    except OSError as exc:
        if str(exc.filename) != str(tmp) and str(tmp) not in str(exc):
            raise  # not about the temporary file (e.g. the writer's source failed): as it is
        # Name the file the caller asked for, not the temporary one (the user never chose that name).
        text = str(exc.strerror or exc).replace(str(tmp), str(path))
        raise OSError(exc.errno, text, str(path)) from exc
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
