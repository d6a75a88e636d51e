"""Features in memory vs on Spark (local), from a raw Parquet file to feature Parquet.

Run: ``.venv/bin/python -m bench.spark_bench`` (1.8 M transactions: the simulator's default 5,000 customers over 183
days); ``--customers 5000 50000`` adds 17.7 M. Each engine runs in its own process (``fraud features --engine
memory|spark``, so each reads the raw file, builds the features and writes them); the time is the whole command
(Spark's session start included), the peak RSS is the sum over the process tree (the CLI, the JVM, Spark's Python
workers), sampled every 0.2 s with psutil (else /proc). Results go to the section "Features on Spark" of
docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import update_section

LOG = logging.getLogger("bench.spark")
SECTION = "Features on Spark"
COMMAND = ".venv/bin/python -m bench.spark_bench"


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants."""
    try:
        import psutil

        root = psutil.Process(pid)
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total
    except ImportError:
        return _proc_tree_rss(pid)
    except Exception:
        return 0


def _proc_tree_rss(pid: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            rss[int(entry.name)] = int((entry / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def measure(cmd: list[str]) -> dict[str, float]:
    """Run a command; its wall time and the peak RSS of its process tree."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return {"seconds": seconds, "peak_rss_gib": peak / 2**30, "load_before": load}


def simulate(customers: int, path: Path) -> int:
    """Simulate ``customers`` customers (twice as many terminals, 183 days) into a Parquet file; its row count."""
    cmd = [
        sys.executable,
        "-m",
        "cli",
        "simulate",
        "--customers",
        str(customers),
        "--terminals",
        str(2 * customers),
        "--days",
        "183",
        "--seed",
        "0",
        "--output",
        str(path),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def run(
    customers: list[int], engines: list[str], workdir: Path, write: bool = True, command: str = COMMAND
) -> list[dict[str, object]]:
    """Each size, each engine; the section is rewritten after each size (a long run keeps what it measured)."""
    results: list[dict[str, object]] = []
    for n in customers:
        raw = workdir / f"raw-{n}.parquet"
        rows = simulate(n, raw)
        LOG.info("simulated %s transactions (%s customers)", f"{rows:,}", f"{n:,}")
        for engine in engines:
            out = workdir / f"features-{n}-{engine}{'.parquet' if engine == 'memory' else ''}"
            cmd = [sys.executable, "-m", "cli", "features", "--data", str(raw), "--output", str(out)]
            cmd += ["--engine", engine]
            timing = measure(cmd)
            result: dict[str, object] = {**timing, "customers": n, "rows": rows, "engine": engine}
            result["tx_per_s"] = rows / timing["seconds"]
            LOG.info("%s", json.dumps(result))
            results.append(result)
            if out.is_dir():
                shutil.rmtree(out)
            else:
                out.unlink(missing_ok=True)
        raw.unlink(missing_ok=True)
        if write:
            LOG.info("wrote %s", report(results, command))
    return results


def report(results: list[dict[str, object]], command: str = COMMAND) -> Path:
    lines = [
        f"Command: `{command}`. The machine is shared: the load average (1 min) before each run is in the table.",
        "",
        "`fraud features --engine memory|spark` end to end in its own process: read the raw Parquet, build every "
        "feature, write Parquet (Spark: day partitions; its time includes the 10-20 s session start). Peak RSS is the "
        "whole process tree (CLI, JVM, Python workers). Spark runs `local[*]` with a 4 GiB driver heap.",
        "",
        "| transactions | engine | seconds | transactions/s | peak RSS (process tree) | load before |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        rate, rss = f"{r['tx_per_s']:,.0f}", f"{r['peak_rss_gib']:.2f} GiB"
        load = f"{r['load_before']:.1f}" if "load_before" in r else "-"
        lines.append(f"| {r['rows']:,} | {r['engine']} | {r['seconds']:.1f} | {rate} | {rss} | {load} |")
    lines += [
        "",
        "Both write the same features (equal bit for bit: `tests/unit/features/test_spark.py`). On one machine the "
        "in-memory executor is the faster one; Spark is for histories that do not fit in one machine's memory, where "
        "it runs on a cluster (Kubeflow Spark Operator) and spills to disk instead of failing.",
    ]
    return update_section(SECTION, "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, nargs="+", default=[5000], help="5000: 1.8 M tx; 50000: 17.7 M")
    parser.add_argument("--engines", nargs="+", default=["memory", "spark"], choices=["memory", "spark"])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
        results = run(args.customers, args.engines, Path(tmp), write=not args.no_report, command=command)
    print(json.dumps(results, indent=1))  # noqa: T201


if __name__ == "__main__":
    main()
