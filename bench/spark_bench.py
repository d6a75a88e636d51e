"""Features in memory vs on Spark (local), from a raw Parquet file to feature Parquet.

Run: ``.venv/bin/python -m bench.spark_bench`` (1.8 M transactions: the simulator's default 5,000 customers over 183
days); ``--sizes 5000:183 50000:183 50000:515 50000:1030`` gives 1.8 M, 17.7 M, about 50 M and 100 M (50,000
customers, 100,000 terminals, over more days: ``fraud simulate`` streams day partitions). The in-memory executor is
skipped where its estimated peak (``features.engine.memory_estimate_bytes``) exceeds 80 % of the RAM. Each engine runs
in its own process (``fraud features --engine
memory|spark``, so each reads the raw file, builds the features and writes them); the time is the whole command
(Spark's session start included), the peak RSS is the sum over the process tree (the CLI, the JVM, Spark's Python
workers), sampled every 0.2 s with psutil (else /proc). Spark writes its event log; the report lists each stage's
tasks, run time, shuffle and spill from it (how the work would spread over executors). ``--train-max-rows N`` then
trains on each Spark output with ``fraud train --train-days DAYS --max-rows N`` (every day of the history, legitimate
rows capped): the bounded-memory training's peak RSS against the history's size. Results go to the section
"Features on Spark" of docs/PERFORMANCE.md.
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


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run a command; its wall time and the peak RSS of its process tree."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:  # a pipe would fill up and stall a long, chatty run
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True, env=env)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        log.seek(0)
        err = log.read()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return {"seconds": seconds, "peak_rss_gib": peak / 2**30, "load_before": load}


def simulate(customers: int, days: int, path: Path) -> int:
    """Simulate ``customers`` customers (twice as many terminals) over ``days`` days into day partitions; the rows."""
    cmd = [sys.executable, "-m", "cli", "simulate", "--customers", str(customers), "--terminals", str(2 * customers)]
    cmd += ["--days", str(days), "--seed", "0", "--output", str(path)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import pyarrow.dataset as ds

    return int(ds.dataset(path, format="parquet", partitioning="hive").count_rows())


def stage_metrics(event_dir: Path) -> list[dict[str, float | int | str]]:
    """Completed stages of a Spark event log (plain JSON lines): tasks, run time, CPU, shuffle and spill."""
    stages: list[dict[str, float | int | str]] = []
    logs = [p for p in event_dir.rglob("*") if p.is_file() and not p.name.startswith(("appstatus", "."))]
    for log in sorted(logs):
        if log.suffix in (".zstd", ".zst"):  # Spark compresses event logs unless told not to
            text = subprocess.run(["zstd", "-dc", str(log)], check=True, capture_output=True, text=True).stdout
        else:
            text = log.read_text()
        for line in text.splitlines():
            if not line.strip():
                continue
            event = json.loads(line)
            if event.get("Event") != "SparkListenerStageCompleted":
                continue
            info = event["Stage Info"]
            acc = {
                a["Name"]: int(a["Value"])
                for a in info.get("Accumulables", [])
                if str(a.get("Name", "")).startswith("internal.metrics.") and str(a.get("Value", "")).isdigit()
            }
            read = acc.get("internal.metrics.shuffle.read.localBytesRead", 0)
            read += acc.get("internal.metrics.shuffle.read.remoteBytesRead", 0)
            stages.append(
                {
                    "stage": int(info["Stage ID"]),
                    "name": str(info["Stage Name"]).split(" at ")[0],
                    "tasks": int(info["Number of Tasks"]),
                    "run_s": acc.get("internal.metrics.executorRunTime", 0) / 1000,
                    "cpu_s": acc.get("internal.metrics.executorCpuTime", 0) / 1e9,
                    "shuffle_write_gib": acc.get("internal.metrics.shuffle.write.bytesWritten", 0) / 2**30,
                    "shuffle_read_gib": read / 2**30,
                    "spill_gib": acc.get("internal.metrics.diskBytesSpilled", 0) / 2**30,
                }
            )
    return stages


def run(
    sizes: list[tuple[int, int]],
    engines: list[str],
    workdir: Path,
    write: bool = True,
    command: str = COMMAND,
    train_max_rows: int = 0,
    train_max_frauds: int = 0,
) -> list[dict[str, object]]:
    """Each size, each engine; the section is rewritten after each size (a long run keeps what it measured)."""
    from fraud_detection.features.engine import memory_estimate_bytes, total_memory_bytes

    results: list[dict[str, object]] = []
    for customers, days in sizes:
        raw = workdir / f"raw-{customers}-{days}"
        rows = simulate(customers, days, raw)
        LOG.info("simulated %s transactions (%s customers, %s days)", f"{rows:,}", f"{customers:,}", days)
        for engine in engines:
            base: dict[str, object] = {"customers": customers, "days": days, "rows": rows, "engine": engine}
            if engine == "memory" and memory_estimate_bytes(rows) > 0.8 * total_memory_bytes():
                need = memory_estimate_bytes(rows) / 2**30
                results.append({**base, "skipped": f"needs ~{need:.0f} GiB"})
                continue
            out = workdir / f"features-{customers}-{days}-{engine}{'.parquet' if engine == 'memory' else ''}"
            cmd = [sys.executable, "-m", "cli", "features", "--data", str(raw), "--output", str(out)]
            cmd += ["--engine", engine]
            events = workdir / f"events-{customers}-{days}"
            env = None
            if engine == "spark":
                events.mkdir()
                conf = f"spark.eventLog.enabled=true --conf spark.eventLog.dir=file://{events}"
                conf += " --conf spark.eventLog.compress=false"
                env = {**os.environ, "PYSPARK_SUBMIT_ARGS": f"--conf {conf} pyspark-shell"}
            timing = measure(cmd, env)
            result: dict[str, object] = {**base, **timing, "tx_per_s": rows / timing["seconds"]}
            if engine == "spark":
                result["stages"] = stage_metrics(events)
                shutil.rmtree(events, ignore_errors=True)
                if train_max_rows:
                    bundle = workdir / f"bundle-{customers}-{days}"
                    train = [sys.executable, "-m", "cli", "train", "--data", str(out), "--output", str(bundle)]
                    train += ["--train-days", str(days), "--max-rows", str(train_max_rows)]
                    result["train"] = measure(train)
                    shutil.rmtree(bundle, ignore_errors=True)
                    if train_max_frauds:
                        result["train_frauds_capped"] = measure([*train, "--max-frauds", str(train_max_frauds)])
                        shutil.rmtree(bundle, ignore_errors=True)
            LOG.info("%s", json.dumps({k: v for k, v in result.items() if k != "stages"}))
            results.append(result)
            if out.is_dir():
                shutil.rmtree(out)
            else:
                out.unlink(missing_ok=True)
        shutil.rmtree(raw, ignore_errors=True)
        if write:
            LOG.info("wrote %s", report(results, command, train_max_rows, train_max_frauds))
    return results


def report(
    results: list[dict[str, object]], command: str = COMMAND, train_max_rows: int = 0, train_max_frauds: int = 0
) -> Path:
    """Write the section: one row per size and engine, then each Spark run's stages."""
    lines = [
        f"Command: `{command}`. The machine is shared: the load average (1 min) before each run is in the table.",
        "",
        "`fraud features --engine memory|spark` end to end in its own process: read the raw day partitions, build "
        "every feature, write Parquet (Spark: day partitions; its time includes the 10-20 s session start). Peak RSS "
        "is the whole process tree (CLI, JVM, Python workers). Spark runs `local[*]` with a 4 GiB driver heap.",
        "",
        "| transactions | days | engine | seconds | transactions/s | peak RSS (process tree) | load before |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['rows']:,} | {r['days']} | {r['engine']} | skipped: {r['skipped']} | | | |")
            continue
        rate, rss = f"{r['tx_per_s']:,.0f}", f"{r['peak_rss_gib']:.2f} GiB"
        load = f"{r['load_before']:.1f}" if "load_before" in r else "-"
        lines.append(f"| {r['rows']:,} | {r['days']} | {r['engine']} | {r['seconds']:.1f} | {rate} | {rss} | {load} |")
    trained = [r for r in results if "train" in r]
    if trained:
        lines += [
            "",
            f"Bounded-memory training on each Spark output: `fraud train --data FEATURES --train-days DAYS --max-rows "
            f"{train_max_rows}` (every day of the history; every fraud and at most {train_max_rows:,} legitimate rows, "
            "weighted), peak RSS of the process"
            + (
                f"; then the same with `--max-frauds {train_max_frauds}` (frauds capped too, weighted):"
                if train_max_frauds
                else ":"
            ),
            "",
            "| transactions in the history | seconds | peak RSS |"
            + (" seconds, frauds capped | peak RSS, frauds capped |" if train_max_frauds else ""),
            "|---:|---:|---:|" + ("---:|---:|" if train_max_frauds else ""),
        ]
        for r in trained:
            t, c = r["train"], r.get("train_frauds_capped")
            assert isinstance(t, dict)
            row = f"| {r['rows']:,} | {t['seconds']:.1f} | {t['peak_rss_gib']:.2f} GiB |"
            if isinstance(c, dict):
                row += f" {c['seconds']:.1f} | {c['peak_rss_gib']:.2f} GiB |"
            lines.append(row)
    for r in results:
        stages = r.get("stages")
        if not stages:
            continue
        assert isinstance(stages, list)
        lines += [
            "",
            f"Spark stages at {r['rows']:,} transactions (from Spark's event log; run and CPU time summed over tasks):",
            "",
            "| stage | what | tasks | run s | CPU s | shuffle write | shuffle read | spill |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for st in stages:
            if st["run_s"] < 1 and not st["shuffle_write_gib"]:
                continue
            lines.append(
                f"| {st['stage']} | {st['name']} | {st['tasks']} | {st['run_s']:.0f} | {st['cpu_s']:.0f} | "
                f"{st['shuffle_write_gib']:.2f} GiB | {st['shuffle_read_gib']:.2f} GiB | {st['spill_gib']:.2f} GiB |"
            )
    lines += [
        "",
        "Both write the same features (equal bit for bit: `tests/unit/features/test_spark.py`). On one machine the "
        "in-memory executor is the faster one; Spark is for histories that do not fit in one machine's memory, where "
        "it runs on a cluster (Kubeflow Spark Operator) and spills to disk instead of failing.",
    ]
    return update_section(SECTION, "\n".join(lines))


def _size(text: str) -> tuple[int, int]:
    customers, _, days = text.partition(":")
    return int(customers), int(days or 183)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", type=_size, nargs="+", default=[(5000, 183)], help="CUSTOMERS[:DAYS]; 50000:183 is 17.7 M"
    )
    parser.add_argument("--engines", nargs="+", default=["memory", "spark"], choices=["memory", "spark"])
    parser.add_argument("--train-max-rows", type=int, default=0, help="also train on each Spark output (0: no)")
    parser.add_argument(
        "--train-max-frauds", type=int, default=0, help="and train again with the frauds capped too (0: no)"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
        results = run(
            args.sizes,
            args.engines,
            Path(tmp),
            not args.no_report,
            command,
            train_max_rows=args.train_max_rows,
            train_max_frauds=args.train_max_frauds,
        )
    print(json.dumps(results, indent=1))  # noqa: T201


if __name__ == "__main__":
    main()
