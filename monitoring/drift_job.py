"""CronJob entry point: ``python -m monitoring.drift_job``. Configuration comes from ``FRAUD_*`` variables.

It wires the domain's drift job to the settings, the payload log, the Pushgateway and the retrain trigger (the
training pipeline on Kubeflow); ``fraud drift`` without files calls :func:`run_from_settings` too.

Exits 0 on success, 1 on failure (so the Kubernetes Job shows it); the last-success gauge is pushed only on success.
An unreachable or hung store (bounded by ``FRAUD_STORE_TIMEOUT_SECONDS`` and the store's retries) or a production
bundle that does not verify is one error line naming it; an unexpected failure keeps its traceback.
A run that skipped bad objects (a corrupt payload-log partition or label object, rows of a version not in the
registry) still succeeds: each is logged with its key, counted in ``fraud_drift_skipped_objects_total``, and a
warning sums them up (docs/RUNBOOK.md). An empty store (no production model, nothing logged) is one line and exit 0.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fraud_detection.model.bundle import BundleIntegrityError
from fraud_detection.model.registry import RegistryError
from fraud_detection.monitoring.drift_job import DriftJobConfig, DriftJobResult, NothingToMonitorError, run_drift_job
from fraud_detection.settings import DriftSettings
from fraud_detection.store.base import StoreError
from fraud_detection.store.uri import open_configured_store

LOG = logging.getLogger(__name__)


def run_from_settings(
    settings: DriftSettings | None = None,
    *,
    store: str | None = None,
    window_hours: float | None = None,
    pushgateway_url: str | None = None,
) -> DriftJobResult:
    """Run the drift job once with the environment's settings; push gauges when a Pushgateway is configured.

    Args:
        settings: The drift job's settings (default: read from the environment).
        store: Overrides the store URI.
        window_hours: Overrides the window.
        pushgateway_url: Overrides the Pushgateway URL.

    Returns:
        The job result.
    """
    from fraud_detection.monitoring import telemetry
    from fraud_detection.monitoring.payload_reader import read_payload_log

    settings = settings or DriftSettings()
    config = DriftJobConfig(
        model_name=settings.model_name,
        window_hours=window_hours or settings.drift_window_hours,
        min_rows=settings.drift_min_rows,
        drift_share=settings.drift_share,
        retrain_on_drift=settings.drift_retrain,
        ap_floor=settings.drift_ap_floor,
        identifier_key=settings.identifier_key.get_secret_value().encode() if settings.identifier_key else None,
    )
    gateway = pushgateway_url or settings.pushgateway_url
    model_store = open_configured_store(settings, store)
    # One store serves both unless the payload log lives apart (and no --store overrides everything).
    log_uri = settings.payload_log_uri if not store else None
    log_store = open_configured_store(settings, log_uri) if log_uri else model_store
    result = run_drift_job(
        model_store,
        config,
        log_store=log_store,
        read_window=read_payload_log,
        cache_dir=Path(settings.cache_dir),
        retrain=_retrain_trigger(settings),
    )
    if gateway:
        telemetry.push_drift_result(gateway, result)
        LOG.info("pushed drift gauges to %s", gateway)
    else:
        LOG.info("no Pushgateway configured (FRAUD_PUSHGATEWAY_URL): gauges not pushed")
    return result


def _retrain_trigger(settings: DriftSettings) -> Callable[[list[str]], bool] | None:
    """A callable starting the training pipeline on Kubeflow on the configured training data, or None.

    None when no endpoint is configured, retraining is off, or no training data source is configured: retraining
    never falls back to simulated data.
    """
    if not settings.kfp_endpoint or not settings.drift_retrain:
        return None
    data_source = settings.training_data
    if not data_source:
        LOG.warning(
            "retraining is on but FRAUD_TRAINING_DATA is not set (payload-log, or a path or s3:// URI of the "
            "transaction export): the drift job will not start training runs"
        )
        return None

    def retrain(reasons: list[str]) -> bool:
        from pipelines.kubeflow import submit_training_run

        run_id = submit_training_run(
            settings,
            run_name="drift-retrain",
            data_source=data_source,
            reason="; ".join(reasons),
            feature_engine=settings.feature_engine,  # FRAUD_FEATURE_ENGINE (the chart: spark-operator with spark on)
            spark_operator=settings.spark_operator,
        )
        LOG.info("started retraining run %s on %s", run_id, settings.kfp_endpoint)
        return True

    return retrain


def main() -> int:
    """Run the drift job once, as one span to Application Insights when it is configured (monitoring/tracing.py)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("fraud_detection.store.azure.http").setLevel(logging.WARNING)  # the Azure SDK's request lines
    from monitoring.tracing import run_traced

    return run_traced(_run_once, os.environ)


def _run_once() -> int:
    """Run the drift job once and log a one-line summary per model version."""
    log = logging.getLogger("monitoring.drift_job")
    try:
        result = run_from_settings()
    except NothingToMonitorError as exc:
        log.warning("nothing to monitor: %s", exc)
        return 0
    except (StoreError, RegistryError, BundleIntegrityError) as exc:
        # An unreachable, hung or misconfigured store, or a production bundle that does not verify: one line
        # naming it (the store's error carries the endpoint and key); a traceback would only bury it.
        log.error("drift job failed: %s", " ".join(str(exc).split()) or type(exc).__name__)
        return 1
    except Exception:
        log.exception("drift job failed")  # unexpected: keep the traceback
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
    if result.dropped_rows:
        log.warning("dropped %d payload-log row(s) with a non-finite or out-of-range value", result.dropped_rows)
    if result.skipped:
        log.warning(
            "skipped %d bad object(s), computed on the rest (docs/RUNBOOK.md, 'Drift job skipped objects'): %s",
            len(result.skipped),
            "; ".join(f"{o.kind} {o.key}" for o in result.skipped[:10]) + ("; ..." if len(result.skipped) > 10 else ""),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
