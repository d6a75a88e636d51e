"""evaluate_model's body: metrics, curves and report, and the promotion decision against production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from components.register_model import register_model
from tests.unit.components.helpers import run_evaluate


def test_evaluate_without_production_promotes_and_logs_metrics_curves_and_report(
    trained: dict[str, Any], tmp_path: Path
):
    promote, metrics, curves, report = run_evaluate(trained, tmp_path, tmp_path / "empty-store")
    assert promote is True
    assert 0 < metrics.metadata["average_precision"] <= 1
    assert 0 <= metrics.metadata["card_precision_at_100"] <= 1
    assert not any(k.startswith("production_") for k in metrics.metadata)
    roc = curves.metadata["confidenceMetrics"]
    assert 2 <= len(roc) <= 200
    assert all(0 <= p["confidenceThreshold"] <= 1 for p in roc)
    assert roc[-1]["recall"] == pytest.approx(1.0)
    matrix = curves.metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["legitimate", "fraud"]
    test = pd.read_parquet(trained["test_set"].path)
    assert sum(map(sum, (row["row"] for row in matrix["rows"]))) == len(test)
    page = Path(report.path).read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "promote to production" in page
    assert "no production model" in page
    assert report.metadata["version"] == trained["version"]


def test_evaluate_honours_a_negative_margin(trained: dict[str, Any], tmp_path: Path):
    store = tmp_path / "store"
    register_model.python_func(
        bundle=trained["bundle"], test_set=trained["test_set"], store_uri=str(store), model_name="fraud-detector"
    )
    promote, *_ = run_evaluate(trained, tmp_path, store, min_ap_gain=-0.01)
    assert promote is True
