"""Prequential model selection benchmark (issue 15, point 2): validation vs test, default vs selected, search cost.

Reads a features file (``fraud simulate --seed 11`` then ``fraud features``: a draw the project was not developed on),
runs :func:`fraud_detection.model.selection.select_and_test` for each model type (the default grid, validation folds
the Handbook's shift before the test folds, 4 weekly 7/7/7-day test folds from 2018-07-25, one native thread per
fit) and prints one JSON object per model on stdout. Writes nothing to docs/PERFORMANCE.md (not part of
``make bench``).

Run: ``.venv/bin/python -m bench.selection_bench --features /tmp/sel/features.parquet --models hgb,rf``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import pandas as pd

from fraud_detection.data import schema
from fraud_detection.model.selection import Folds, select_and_test
from fraud_detection.model.train import TrainConfig

LOG = logging.getLogger("bench.selection")


def main(argv: list[str] | None = None) -> int:
    """Run the selection per model type and print its report as JSON lines.

    Args:
        argv: Command-line arguments.

    Returns:
        Exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True, help="Features Parquet file.")
    parser.add_argument("--models", default="hgb", help="Comma-separated: hgb, rf.")
    parser.add_argument("--metric", default="average_precision", help="average_precision or card_precision_at_100.")
    parser.add_argument("--start", default="2018-07-25", help="First training day of the first test fold.")
    parser.add_argument("--threads", type=int, default=1, help="Native threads per fit.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    frame = pd.read_parquet(args.features)
    LOG.info("%d rows, %d features; load average %s", len(frame), len(schema.FEATURES), os.getloadavg())
    for model in args.models.split(","):
        report = select_and_test(
            frame,
            TrainConfig(model_type=model),  # type: ignore[arg-type]
            Folds.starting(args.start),
            metric=args.metric,
            threads=args.threads,
        )
        LOG.info("%s done; load average %s", model, os.getloadavg())
        sys.stdout.write(json.dumps({"model": model, **report.as_dict()}) + "\n")
        sys.stdout.flush()
        LOG.info("grid:\n%s", report.selection.table().to_string())
        LOG.info("validation vs test:\n%s", report.comparison().to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
