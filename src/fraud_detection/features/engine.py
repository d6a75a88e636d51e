"""Which executor builds a history's features: in memory (numpy) or Spark, and whether Spark can run here.

No pyspark import: this module only looks at files and at the machine, so choosing an engine costs nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

#: The in-memory executor's peak memory: about 0.82 KiB per transaction plus the interpreter and libraries
#: (docs/PERFORMANCE.md, "Simulator and features": 1.43 GiB peak for 1.79 M transactions).
BYTES_PER_TRANSACTION = 0.82 * 1024
BASE_BYTES = 0.3 * 2**30
#: By default ``auto`` runs Spark when the in-memory executor would need more than this share of the RAM.
DEFAULT_AUTO_SHARE = 0.25
ENGINES = ("memory", "spark", "auto")
INSTALL_HINT = "install with make install"
LOG = logging.getLogger(__name__)


class SparkUnavailableError(RuntimeError):
    """Spark cannot run here (no Java, no pyspark); the message says what is missing and how to install it."""


class SparkJobError(RuntimeError):
    """The Spark job failed; the message is Spark's error on one line."""


def spark_missing() -> str | None:
    """What Spark lacks on this machine, or None when it can start.

    Returns:
        A one-line reason (Java or pyspark missing), or None.
    """
    if importlib.util.find_spec("pyspark") is None:
        return f"the Spark engine needs pyspark (the 'spark' extra), which is not installed: {INSTALL_HINT}"
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and Path(java_home, "bin", "java").exists()) and shutil.which("java") is None:
        return (
            f"the Spark engine needs Java 17 (Debian openjdk-17-jre-headless), which is not installed: {INSTALL_HINT}"
        )
    return None


def require_spark() -> None:
    """Fail with one clear line when Spark cannot run here.

    Raises:
        SparkUnavailableError: Java or pyspark is missing.
    """
    reason = spark_missing()
    if reason:
        raise SparkUnavailableError(reason)


def total_memory_bytes() -> int:
    """The machine's RAM."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def input_files(path: Path) -> list[Path]:
    """The data files of an input: the file itself, or a directory's Parquet (else CSV) files, hidden ones ignored."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    parquet = [p for p in files if p.suffix == ".parquet"]
    return parquet or [p for p in files if p.name.endswith((".csv", ".csv.gz"))]


def estimate_transactions(path: Path) -> int:
    """How many transactions an input holds: Parquet footers (exact), CSV size over the mean length of its first lines.

    Args:
        path: A file or a directory of files.

    Returns:
        The (estimated) number of rows.
    """
    import pyarrow.parquet as pq

    rows = 0
    for file in input_files(path):
        if file.suffix == ".parquet":
            rows += pq.ParquetFile(file).metadata.num_rows
        elif file.name.endswith(".csv"):
            with file.open("rb") as fh:
                head = fh.read(1 << 16).splitlines()[1:-1] or [b"x" * 64]
            rows += int(file.stat().st_size / (sum(len(line) + 1 for line in head) / len(head)))
        else:  # .csv.gz: about 3x compression for these rows
            rows += int(file.stat().st_size * 3 / 64)
    return rows


def memory_estimate_bytes(transactions: int) -> float:
    """Peak memory the in-memory executor needs for a history of ``transactions`` rows."""
    return transactions * BYTES_PER_TRANSACTION + BASE_BYTES


def choose_engine(engine: str, path: Path, share: float = DEFAULT_AUTO_SHARE, memory: int | None = None) -> str:
    """Resolve ``auto``: Spark when the in-memory executor would need more than ``share`` of the RAM.

    Args:
        engine: ``memory``, ``spark`` or ``auto``.
        path: The raw transactions (file or directory).
        share: Share of the RAM above which ``auto`` runs Spark (0 < share).
        memory: The RAM in bytes (default: this machine's).

    Returns:
        ``memory`` or ``spark``.

    Raises:
        ValueError: Unknown engine or a share that is not positive.
    """
    if engine not in ENGINES:
        raise ValueError(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    if not share > 0:
        raise ValueError(f"auto share {share!r}: must be a positive share of the RAM (e.g. 0.25)")
    if not path.exists():
        raise ValueError(f"input {path}: no such file or directory")
    rows = estimate_transactions(path)
    need, limit = memory_estimate_bytes(rows), share * (memory or total_memory_bytes())
    chosen = "spark" if need > limit else "memory"
    LOG.info(
        "engine auto: ~%s transactions need ~%.1f GiB in memory, %s %.1f GiB (%.0f%% of RAM): %s",
        f"{rows:,}",
        need / 2**30,
        "over" if chosen == "spark" else "within",
        limit / 2**30,
        share * 100,
        chosen,
    )
    return chosen


def check_spark_output(output: Path) -> None:
    """Refuse, before Spark starts, an output that is neither new nor an earlier Spark output (it holds _SUCCESS).

    Args:
        output: The ``--output`` directory.

    Raises:
        ValueError: It exists and is something else (a file, another directory).
    """
    if output.exists() and not (output.is_dir() and (output / "_SUCCESS").exists()):
        raise ValueError(
            f"--output {output}: exists and is not an earlier Spark feature output (a directory with _SUCCESS): "
            "remove it or choose another name"
        )
