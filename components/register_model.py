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
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    import pandas as pd

    from fraud_detection.model.promotion import gate_and_register
    from fraud_detection.model.registry import open_registry
    from fraud_detection.settings import PipelineSettings

    registry = open_registry(PipelineSettings(), store_uri, model_name)
    test = pd.read_parquet(test_set.path)
    with tempfile.TemporaryDirectory() as tmp:
        result = gate_and_register(
            registry, Path(bundle.path), test, cache_dir=Path(tmp), min_ap_gain=min_ap_gain, max_cp_loss=max_cp_loss
        )
    Outputs = namedtuple("Outputs", ["version", "storage_uri"])
    return Outputs(result.version if result.registered else "", result.storage_uri)
