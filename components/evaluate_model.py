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
        metrics: Candidate metrics, and production's on the same rows prefixed ``production_``.
        curves: ROC curve and confusion matrix at the candidate's threshold (shown by the Kubeflow UI).
        report: HTML page with the verdict and reasons, both models' metrics, ROC and PR curves.
        store_uri: Model store; empty for the ``FRAUD_STORE_URI`` setting.
        model_name: Model name in the store; empty for the ``FRAUD_MODEL_NAME`` setting.
        min_ap_gain: AP gain over production needed to promote.
        max_cp_loss: CP@100 loss tolerated against production.

    Returns:
        Whether the candidate passes the gate (``fraud_detection.evaluate.promotion_gate``).
    """
    import tempfile
    from pathlib import Path

    import pandas as pd

    from fraud_detection.model.promotion import report_candidate
    from fraud_detection.model.registry import open_registry
    from fraud_detection.settings import PipelineSettings

    registry = open_registry(PipelineSettings(), store_uri, model_name)
    with tempfile.TemporaryDirectory() as tmp:
        test = pd.read_parquet(test_set.path)
        result = report_candidate(
            registry, Path(bundle.path), test, work_dir=Path(tmp), min_ap_gain=min_ap_gain, max_cp_loss=max_cp_loss
        )
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    curves.log_roc_curve(*result.roc)
    curves.log_confusion_matrix(["legitimate", "fraud"], result.confusion)
    Path(report.path).write_text(result.html)
    verdict = result.comparison.decision
    report.metadata.update(
        {"version": result.comparison.version, "promote": verdict.promote, "reasons": verdict.reasons}
    )
    return bool(verdict.promote)
