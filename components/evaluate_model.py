"""Component ``evaluate_model``: candidate vs production on the same test rows; metrics, curves, report, gate."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate_model(
    bundle: Input[Model],
    test_set: Input[Dataset],
    metrics: Output[Metrics],
    curves: Output[ClassificationMetrics],
    report: Output[HTML],
    store_uri: str = "",
    model_name: str = "",
    min_ap_gain: float = 0.0,
    max_cp_loss: float = 0.0,
) -> bool:
    """Score the test rows with the candidate and with production, log both, and apply the promotion gate.

    Args:
        bundle: Candidate bundle (``train_model``).
        test_set: Held-out test rows (``train_model``).
        metrics: Candidate metrics, plus production's AP and CP@100 when there is a production model.
        curves: ROC curve and confusion matrix at the candidate's threshold (shown by the Kubeflow UI).
        report: HTML report: the gate's verdict and reasons, metrics side by side, ROC and PR curves (its metadata
            holds the candidate's version, the verdict and the reasons).
        store_uri: Model store; empty for the ``FRAUD_STORE_URI`` setting.
        model_name: Model name in the store; empty for the ``FRAUD_MODEL_NAME`` setting.
        min_ap_gain: AP gain over production needed to promote.
        max_cp_loss: CP@100 loss tolerated against production.

    Returns:
        Whether the candidate passes the gate (``fraud_detection.evaluate.promotion_gate``).
    """
    import math
    import tempfile
    from pathlib import Path

    import pandas as pd
    from sklearn.metrics import confusion_matrix

    from components._report import evaluation_html, roc_points
    from fraud_detection import schema
    from fraud_detection.bundle import load_bundle
    from fraud_detection.evaluate import compute_metrics, plot_curves, promotion_gate
    from fraud_detection.registry import ModelRegistry
    from fraud_detection.settings import Settings
    from fraud_detection.train import score
    from fraud_detection.workflow import evaluate_bundle

    test, candidate = pd.read_parquet(test_set.path), load_bundle(bundle.path)
    labels, scores, meta = test[schema.LABEL].to_numpy(), score(candidate.model, test), candidate.metadata
    cand = compute_metrics(test, scores, meta.threshold, meta.review_cost).as_dict()
    settings = Settings()
    registry = ModelRegistry(settings.open_store(store_uri or None), model_name or settings.model_name)
    with tempfile.TemporaryDirectory() as tmp:
        prod = (
            evaluate_bundle(registry.fetch("production", Path(tmp)), test).as_dict()
            if registry.get_alias("production")
            else None
        )
        images = {k: p.read_bytes() for k, p in plot_curves(labels, scores, Path(tmp) / "png", meta.version).items()}
    decision = promotion_gate(cand, prod, min_ap_gain=min_ap_gain, max_cp_loss=max_cp_loss)
    for key, value in [*cand.items(), *((f"production_{k}", v) for k, v in (prod or {}).items())]:
        if math.isfinite(value):
            metrics.log_metric(key, value)
    curves.log_roc_curve(*roc_points(labels, scores))
    matrix = confusion_matrix(labels, scores >= meta.threshold, labels=[0, 1])
    curves.log_confusion_matrix(["legitimate", "fraud"], matrix.tolist())
    Path(report.path).write_text(evaluation_html(meta.version, decision.reasons, decision.promote, cand, prod, images))
    report.metadata.update({"version": meta.version, "promote": decision.promote, "reasons": decision.reasons})
    return bool(decision.promote)
