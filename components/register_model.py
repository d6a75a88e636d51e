"""Component ``register_model``: publish the candidate to the store and point ``production`` at it."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Model

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def register_model(
    bundle: Input[Model],
    test_set: Input[Dataset],
    store_uri: str = "",
    model_name: str = "",
    min_ap_gain: float = 0.0,
    max_cp_loss: float = 0.0,
) -> NamedTuple("Outputs", [("version", str), ("storage_uri", str)]):  # type: ignore[valid-type]
    """Publish the bundle and move ``production`` to it (``fraud_detection.workflow.gate_and_register``).

    The gate is checked again against production as it is now, so a model promoted by another run since
    ``evaluate_model`` is never replaced by a worse one.

    Args:
        bundle: Candidate bundle (``train_model``).
        test_set: Held-out test rows the gate scores.
        store_uri: Model store; empty for the ``FRAUD_STORE_URI`` setting.
        model_name: Model name in the store; empty for the ``FRAUD_MODEL_NAME`` setting.
        min_ap_gain: AP gain over production needed to promote.
        max_cp_loss: CP@100 loss tolerated against production.

    Returns:
        The registered version and its location in the store (for KServe's ``storageUri``); both empty when
        the re-checked gate refused the candidate.
    """
    import logging
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    import pandas as pd

    from fraud_detection.registry import ModelRegistry
    from fraud_detection.settings import Settings
    from fraud_detection.workflow import gate_and_register

    settings = Settings()
    registry = ModelRegistry(settings.open_store(store_uri or None), model_name or settings.model_name)
    with tempfile.TemporaryDirectory() as cache:
        result = gate_and_register(
            registry,
            Path(bundle.path),
            pd.read_parquet(test_set.path),
            min_ap_gain=min_ap_gain,
            max_cp_loss=max_cp_loss,
            cache_dir=Path(cache),
        )
    Outputs = namedtuple("Outputs", ["version", "storage_uri"])
    if not result.registered:
        logging.getLogger(__name__).warning("not registered: production is %s", result.production_version)
        return Outputs("", "")
    return Outputs(result.version, registry.store.uri(registry.version_prefix(result.version)).rstrip("/"))
