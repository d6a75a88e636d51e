"""Component ``train_model``: train on the older days, evaluate on the held-out window, write the model bundle."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train_model(
    features: Input[Dataset],
    bundle: Output[Model],
    test_set: Output[Dataset],
    source: str = "",
    model_name: str = "",
    model_type: str = "rf",
    max_iter: int = 300,
    learning_rate: float = 0.03,
    max_leaf_nodes: int = 31,
    min_samples_leaf: int = 0,
    review_cost: float = 10.0,
    # fraud_detection.data.splits.TRAINING_SPLIT, as literals: KFP ships this source alone (tests check they match).
    train_days: int = 28,
    test_days: int = 14,
    delay_days: int = 7,
    sample_legit: float = 1.0,
    max_rows: int = 0,
    max_frauds: int = 0,
    params_json: str = "",
) -> str:
    """Train a calibrated model and write its bundle (``fraud_detection.workflow.train_bundle``).

    Args:
        features: Output of ``build_features``.
        bundle: The model bundle directory (model, metadata, reference sample, manifest).
        test_set: The held-out test rows (Parquet) that evaluation and the promotion gate score.
        source: Where the raw data came from, for the lineage.
        model_name: Served model name; empty for the ``FRAUD_MODEL_NAME`` setting.
        model_type: ``rf`` (the default), ``hgb`` or ``logreg``.
        max_iter: Boosting iterations (hgb).
        learning_rate: Boosting learning rate (hgb).
        max_leaf_nodes: Leaves per tree (hgb).
        min_samples_leaf: Minimum rows per leaf; 0 for the model type's default (20 for hgb, 5 for rf).
        review_cost: Cost of reviewing one false alert, for the threshold.
        train_days: Most recent days before the delay window to train on; 0 for all of them.
        test_days: Held-out test days.
        delay_days: Label delay between training and test, never trained on.
        sample_legit: Share of the legitimate training rows kept (every fraud is), weighted by its inverse; 1 keeps
            all. The test window is never sampled.
        max_rows: Most legitimate training rows kept (bounded memory whatever the history's size); 0 for no cap.
            When sampling, or when ``features`` is a directory (day partitions of the Spark engine), the split is
            read in bounded memory (``fraud_detection.data.sampled_split``).
        max_frauds: Most training frauds kept (a deterministic sample weighted by its inverse rate), so memory stays
            flat however many frauds the history holds; 0 keeps every fraud.
        params_json: Hyperparameters chosen by ``fraud backtest --select --params-out`` (the file's JSON text);
            they override the parameters above and must be for ``model_type``. Empty for none.

    Returns:
        The candidate's version id.
    """
    from pathlib import Path
    from typing import cast

    import pandas as pd

    from fraud_detection.data import schema
    from fraud_detection.data.sampled_split import read_sampled_holdout
    from fraud_detection.data.sampling import SampleSpec
    from fraud_detection.data.window import HoldoutSplit
    from fraud_detection.model.candidate import train_bundle
    from fraud_detection.model.train import ModelType, TrainConfig
    from fraud_detection.settings import PipelineSettings

    config = TrainConfig(
        model_type=cast(ModelType, model_type),
        review_cost=review_cost,
        max_iter=max_iter,
        learning_rate=learning_rate,
        max_leaf_nodes=max_leaf_nodes,
        min_samples_leaf=min_samples_leaf or None,
    )
    if params_json:
        from fraud_detection.model.selection import parse_params

        config = parse_params(params_json, source="params_json").apply(config)
    name = model_name or PipelineSettings().model_name
    spec = SampleSpec(legit_rate=sample_legit, max_rows=max_rows or None, max_frauds=max_frauds or None)
    data: pd.DataFrame | HoldoutSplit
    sampling = None
    if spec.samples or Path(features.path).is_dir():
        held = read_sampled_holdout(
            features.path, spec, test_days=test_days, delay_days=delay_days, train_days=train_days or None
        )
        data = held.split
        sampling = held.sample.description()
    else:
        data = pd.read_parquet(features.path)
    meta, split = train_bundle(
        data,
        Path(bundle.path),
        config=config,
        model_name=name,
        train_days=train_days or None,
        test_days=test_days,
        delay_days=delay_days,
        source=source,
        sampling=sampling if spec.samples else None,
    )
    schema.write_frame(split.test, test_set.path)
    bundle.metadata.update({k: meta[k] for k in ("model_name", "version", "model_type", "threshold")})
    test_set.metadata.update({"rows": len(split.test), "n_fraud": int(split.test[schema.LABEL].sum())})
    return str(meta["version"])
