"""CronJob entry point: ``python -m monitoring.drift_job``. Configuration comes from ``FRAUD_*`` variables.

Exits 0 on success, 1 on failure (so the Kubernetes Job shows it); the last-success gauge is pushed only on success.
"""

from __future__ import annotations

import logging
import sys


def main() -> int:
    """Run the drift job once and log a one-line summary per model version."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    log = logging.getLogger("monitoring.drift_job")
    from fraud_detection.drift_job import run_from_settings

    try:
        result = run_from_settings()
    except Exception:
        log.exception("drift job failed")
        return 1
    for version in result.versions:
        drift = version.drift
        log.info(
            "version %s: %d rows, %s",
            version.model_version,
            drift.n_current,
            "window too small: drift not judged"
            if drift.too_small
            else f"drifted share {drift.drifted_share:.2f}, dataset drift {drift.dataset_drifted}",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
