"""The simulator at scale: time and peak RSS of ``write_partitions`` (streamed day partitions) by size.

Run: ``.venv/bin/python -m bench.simulate_bench`` (``--sizes 1.8M,17.7M,100M``; ``--no-docs`` to only print). Each
run is its own process (so its peak RSS is its own) writing into a temporary directory that is removed afterwards;
the RSS is also sampled after 10 %, 50 % and 100 % of the days, to show that it stays flat as days pass. The
in-memory ``simulate()`` is measured beside it at the smaller sizes for reference.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile

from bench.report import update_section

LOG = logging.getLogger("bench.simulate")

#: name -> (customers, terminals, days); 100M is the 10x population over 1,030 days (memory bound by population).
SIZES: dict[str, tuple[int, int, int]] = {
    "1.8M": (5_000, 10_000, 183),
    "tiny": (300, 600, 20),
    "17.7M": (50_000, 100_000, 183),
    "100M": (50_000, 100_000, 1_030),
}

RUN = r"""
import json, resource, sys, time
from pathlib import Path
from fraud_detection.data.simulate import SimulationConfig, simulate, write_partitions

mode, customers, terminals, days, out = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
cfg = SimulationConfig(n_customers=customers, n_terminals=terminals, n_days=days)
marks = {max(1, days // 10): "10%", max(1, days // 2): "50%", days: "100%"}
samples = {}

def rss_gib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return 0.0

def on_day(day, rows):
    if day + 1 in marks:
        samples[marks[day + 1]] = rss_gib()

t0 = time.perf_counter()
if mode == "stream":
    s = write_partitions(cfg, out, on_day=on_day)
    rows, rate = s.transactions, s.fraud_rate
    disk = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
else:
    df = simulate(cfg)
    rows, rate, disk = len(df), float(df["is_fraud"].mean()), 0
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"rows": rows, "fraud_rate": rate, "seconds": seconds, "peak_rss_gib": peak,
                  "rss_gib": samples, "disk_gib": disk / 2**30}))
"""


def run(mode: str, size: str) -> dict[str, object]:
    """One measured run in a fresh process."""
    customers, terminals, days = SIZES[size]
    with tempfile.TemporaryDirectory(prefix="simulate-bench-") as tmp:
        out = subprocess.run(
            [sys.executable, "-c", RUN, mode, str(customers), str(terminals), str(days), os.path.join(tmp, "tx")],
            check=True,
            capture_output=True,
            text=True,
        )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(mode=mode, size=size, customers=customers, terminals=terminals, days=days)
    LOG.info("%s", result)
    return result


def render(results: list[dict[str, object]]) -> str:
    """The section's Markdown."""
    lines = [
        "Command: `.venv/bin/python -m bench.simulate_bench` (each run a fresh process; streamed runs write "
        "`day=YYYY-MM-DD/part-0.parquet` partitions into a temporary directory with `write_partitions`, as "
        "`fraud simulate --output DIR` does; seed 0).",
        "",
        "| run | customers | terminals | days | transactions | fraud rate | seconds | tx/s | peak RSS | RSS at 10 % / "
        "50 % / 100 % of days | on disk |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        rss = r["rss_gib"]
        assert isinstance(rss, dict)
        samples = " / ".join(f"{rss[k]:.2f}" for k in ("10%", "50%", "100%")) + " GiB" if rss else "-"
        rows, seconds = int(str(r["rows"])), float(str(r["seconds"]))
        disk = float(str(r["disk_gib"]))
        lines.append(
            f"| {'streamed' if r['mode'] == 'stream' else 'in memory (`simulate()`)'} | {r['customers']:,} | "
            f"{r['terminals']:,} | {r['days']:,} | {rows:,} | {float(str(r['fraud_rate'])):.2%} | {seconds:.1f} | "
            f"{rows / seconds:,.0f} | {float(str(r['peak_rss_gib'])):.2f} GiB | {samples} | "
            f"{f'{disk:.2f} GiB' if disk else '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure, print the table and (unless ``--no-docs``) write the section "Simulator at scale"."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1.8M,17.7M", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--in-memory", default="1.8M,17.7M", help="sizes also run in memory (empty: none)")
    parser.add_argument("--no-docs", action="store_true", help="print only, leave docs/PERFORMANCE.md alone")
    parser.add_argument("--notes", default="", help="text appended to the section")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    results = []
    for size in args.sizes.split(","):
        results.append(run("stream", size))
        if size in args.in_memory.split(","):
            results.append(run("memory", size))
    body = render(results) + ("\n\n" + args.notes if args.notes else "")
    sys.stdout.write(body + "\n")
    if not args.no_docs:
        update_section("Simulator at scale", body)


if __name__ == "__main__":
    main()
