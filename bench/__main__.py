"""Run every benchmark in turn (``make bench``); each writes its own section of docs/PERFORMANCE.md."""

from __future__ import annotations

import importlib
import logging
import sys

BENCHES = (
    "bench.core_bench",
    "bench.pipeline_bench",
    "bench.serving_bench",
    "bench.online_bench",
    "bench.drift_bench",
    "bench.spark_bench",
    "bench.sampling_bench",
    "bench.simulate_bench",
    "bench.image_size",
)


def main() -> int:
    """Run the benchmarks that exist; return non-zero if one fails."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    failed = 0
    for name in BENCHES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            logging.getLogger("bench").warning("%s not present, skipped", name)
            continue
        try:
            module.main()
        except Exception:
            logging.getLogger("bench").exception("%s failed", name)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
