"""Helpers shared by the component tests: artifacts on local paths, the training arguments, evaluate_model's call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kfp.dsl import HTML, ClassificationMetrics, Metrics

from components.evaluate_model import evaluate_model

# A small boosted model: quick to train on the small simulated set.
TRAIN = {"model_type": "hgb", "max_iter": 40, "test_days": 10, "delay_days": 7}


def art(kind: type, path: Path) -> Any:
    """A KFP artifact of ``kind`` whose uri (and so path) is ``path``."""
    return kind(name=path.name, uri=str(path))


def run_evaluate(
    trained: dict[str, Any], tmp_path: Path, store: Path, **kwargs: Any
) -> tuple[bool, Metrics, Any, HTML]:
    """evaluate_model's body on the trained bundle against the registry in ``store``.

    Returns:
        The promote decision and the metrics, curves and report artifacts.
    """
    metrics = art(Metrics, tmp_path / "metrics")
    curves = art(ClassificationMetrics, tmp_path / "curves")
    report = art(HTML, tmp_path / "report")
    promote = evaluate_model.python_func(
        bundle=trained["bundle"],
        test_set=trained["test_set"],
        metrics=metrics,
        curves=curves,
        report=report,
        store_uri=str(store),
        model_name="fraud-detector",
        **kwargs,
    )
    return promote, metrics, curves, report
