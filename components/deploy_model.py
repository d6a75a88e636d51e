"""Component ``deploy_model``: run the registered version as a KServe canary (skipped without a cluster)."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def deploy_model(
    model_version: str,
    storage_uri: str,
    store_uri: str = "",
    model_name: str = "",
    namespace: str = "",
    inference_service: str = "",
    canary_traffic_percent: int = 10,
    history: Input[Dataset] = None,
    materialize_online: bool = False,
) -> str:
    """Create the InferenceService, or start a canary of ``model_version`` on it (``fraud_detection.deploy``).

    Judging the canary, promoting it or rolling it back is the rollout's job (``fraud rollout``).

    Args:
        model_version: Version to deploy; empty when nothing was registered (the step then does nothing).
        storage_uri: Where the version lives (used when the InferenceService has to be created).
        store_uri: Model store (the ``canary`` alias moves there); empty for the ``FRAUD_STORE_URI`` setting.
        model_name: Served model name; empty for the ``FRAUD_MODEL_NAME`` setting.
        namespace: Namespace of the InferenceService; empty for ``FRAUD_SERVING_NAMESPACE`` (else fraud-detection).
        inference_service: InferenceService name; empty for ``FRAUD_INFERENCE_SERVICE`` (else the model name).
        canary_traffic_percent: Share of traffic (1-99) for the new version while the previous one keeps the rest.
        history: The validated transactions the model was trained on.
        materialize_online: Backfill the online feature store (``FRAUD_ONLINE_STORE``) from ``history`` first, so
            raw transactions are scored with the state the model was trained on (``fraud online materialize``).

    Returns:
        What happened: ``created``, ``canary``, ``unchanged`` or ``skipped``.
    """
    import logging

    from fraud_detection.model.registry import open_registry
    from fraud_detection.rollout.canary import deploy_canary
    from fraud_detection.settings import PipelineSettings

    if not model_version:
        logging.getLogger(__name__).info("deploy skipped: no version was registered")
        return "skipped"
    settings = PipelineSettings()
    if materialize_online and history is not None and settings.online_store:
        import pandas as pd

        from fraud_detection.features.materialize import backfill
        from fraud_detection.features.state.uri import open_online_store

        secret = settings.online_store_password
        store = open_online_store(
            settings.online_store, settings.label_delay_days, password=secret.get_secret_value() if secret else None
        )
        try:
            backfill(pd.read_parquet(history.path), store)
        finally:
            store.close()
    name = model_name or settings.model_name
    result = deploy_canary(
        name=inference_service or settings.inference_service or name,
        namespace=namespace or settings.serving_namespace or "fraud-detection",
        model_name=name,
        version=model_version,
        storage_uri=storage_uri,
        canary_traffic_percent=canary_traffic_percent,
        registry=open_registry(settings, store_uri, name),
    )
    return result.action
