"""Component ``ingest_data``: fetch raw transactions as they are (simulated, a local path or an ``s3://`` URI)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def ingest_data(
    raw: Output[Dataset],
    data_source: str = "",
    source_version: str = "",
    n_customers: int = 5_000,
    n_terminals: int = 10_000,
    n_days: int = 183,
    start_date: str = "2018-04-01",
    seed: int = 0,
) -> str:
    """Fetch raw transactions unchanged into a directory; checking them is ``validate_data``'s job.

    Args:
        raw: Output directory holding the source file(s) under their own names (Parquet when simulated).
        data_source: Empty to simulate; ``payload-log`` for the raw transactions the server scored (the last
            ``n_days`` days) with the ingested labels (``FRAUD_PAYLOAD_LOG_URI``, ``FRAUD_IDENTIFIER_KEY``); else a
            ``.csv``/``.parquet`` file or Parquet directory, local or ``s3://`` (endpoint and keys from
            ``FRAUD_S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``).
        source_version: Identity of the data behind ``data_source`` (a snapshot id or digest); part of the cache key.
        n_customers: Simulated customers.
        n_terminals: Simulated terminals.
        n_days: Simulated days; with ``payload-log``, the days of scoring history read.
        start_date: First simulated day (YYYY-MM-DD).
        seed: Simulation seed.

    Returns:
        A description of the source, recorded in the model's lineage.
    """
    from functools import partial
    from pathlib import Path

    from fraud_detection.data.ingest import ingest
    from fraud_detection.data.simulate import SimulationConfig
    from fraud_detection.settings import PipelineSettings
    from fraud_detection.store.uri import open_configured_store

    settings = PipelineSettings()
    if data_source == "payload-log":  # production: what was scored, with the labels that came back
        from fraud_detection.data.schema import write_frame
        from fraud_detection.monitoring.training_data import transactions_from_log

        key = settings.identifier_key.get_secret_value().encode() if settings.identifier_key else None
        log_store = open_configured_store(settings, settings.payload_log_uri)
        data = transactions_from_log(log_store, settings.model_name, days=n_days, identifier_key=key)
        write_frame(data.transactions, Path(raw.path) / "tx.parquet")
        source = data.describe()
    else:
        simulation = SimulationConfig(n_customers, n_terminals, n_days, start_date, seed)
        source = ingest(data_source, Path(raw.path), simulation, partial(open_configured_store, settings))
    raw.metadata.update({"source": source, "source_version": source_version})
    return f"{source}@{source_version}" if source_version else source
