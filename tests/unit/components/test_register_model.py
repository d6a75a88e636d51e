"""register_model's body: publish and promote a new model once, never the same model twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.register_model import register_model
from fraud_detection.model.bundle import MANIFEST_FILE
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.store.local import LocalStore
from tests.unit.components.helpers import run_evaluate


def test_register_publishes_then_the_same_model_is_neither_promoted_nor_registered_again(
    trained: dict[str, Any], tmp_path: Path
):
    store = tmp_path / "store"
    first = register_model.python_func(
        bundle=trained["bundle"], test_set=trained["test_set"], store_uri=str(store), model_name="fraud-detector"
    )
    registry = ModelRegistry(LocalStore(store), "fraud-detector")
    assert first.version == trained["version"]
    assert (registry.get_alias("production") or {}).get("version") == first.version
    assert Path(first.storage_uri) == store / "models/fraud-detector/versions" / first.version
    assert (Path(first.storage_uri) / MANIFEST_FILE).exists()

    promote, metrics, _, report = run_evaluate(trained, tmp_path, store)
    assert promote is False
    assert metrics.metadata["production_average_precision"] == metrics.metadata["average_precision"]
    assert "keep production" in Path(report.path).read_text()
    assert any("average precision" in r and r.endswith("fail") for r in report.metadata["reasons"])

    again = register_model.python_func(
        bundle=trained["bundle"], test_set=trained["test_set"], store_uri=str(store), model_name="fraud-detector"
    )
    assert (again.version, again.storage_uri) == ("", "")
    assert registry.versions() == [first.version]
