"""Build the four image targets (pipeline, serve, drift, spark) of the one Dockerfile; needs a Docker engine."""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

LOG = logging.getLogger("images")
ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("pipeline", "serve", "drift", "spark")


def main() -> int:
    """Build every target, tagged ``<registry>/fraud-detection-<target>:<version>``."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registry", default="ghcr.io/fraud-detection")
    args = parser.parse_args()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        LOG.error("no Docker engine is reachable: `docker info` failed; build the images where one runs")
        return 2
    for target in TARGETS:
        tag = f"{args.registry}/fraud-detection-{target}:{version}"
        LOG.info("building %s", tag)
        subprocess.run(["docker", "build", "--target", target, "-t", tag, str(ROOT)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
