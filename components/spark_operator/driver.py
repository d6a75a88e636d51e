"""Entry point of the feature SparkApplication's driver: ``spark-submit driver.py --input URI --output URI``.

The operator's ``spark-submit`` configures master, executors and memory, so the features run with ``master=None``
(:func:`fraud_detection.features.spark.run_spark_features`). The image holds this file at the SparkApplication's
``mainApplicationFile`` (default ``/opt/fraud-detection/spark_features.py``; docs/KUBERNETES.md, "Features on the
Spark Operator"), plus the ``fraud_detection`` wheel, pyspark and Hadoop's S3A jars.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

LOG = logging.getLogger("fraud_detection.spark_driver")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The driver's arguments (what :func:`components.spark_operator.application.build_application` passes).

    Args:
        argv: Command-line arguments without the program name.

    Returns:
        ``input``, ``output``, ``label_delay_days``, ``column_map``.
    """
    parser = argparse.ArgumentParser(description="Build the fraud features on Spark, partitioned by day.")
    parser.add_argument("--input", required=True, help="validated transactions (s3a:// or abfss:// URI, or a path)")
    parser.add_argument("--output", required=True, help="destination of the day partitions")
    parser.add_argument("--label-delay-days", type=int, default=7, help="label delay of the terminal risk features")
    parser.add_argument("--column-map", default="", help="SRC=DST renames, comma separated")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the feature job under the operator's Spark and report its outcome.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 on failure (the error on one line in the driver's log).
    """
    from fraud_detection.data import schema
    from fraud_detection.features.offline import FeatureConfig
    from fraud_detection.features.spark import run_spark_features

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    pairs = [p.strip() for p in args.column_map.split(",") if p.strip()]
    try:
        rows = run_spark_features(
            args.input,
            args.output,
            schema.parse_column_map(pairs),
            FeatureConfig(label_delay_days=args.label_delay_days),
            master=None,
        )
    except Exception as exc:
        LOG.error("feature job failed: %s", " ".join(str(exc).split())[:400])
        return 1
    LOG.info("wrote %s feature rows to %s", f"{rows:,}", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
