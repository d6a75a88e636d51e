"""Fixtures of the Helm chart tests: the chart with its links dereferenced, and a cached renderer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import k8s
from tests.infra.helm.chart import Render


@pytest.fixture(scope="package")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart with its monitoring links dereferenced (see tests/k8s.py)."""
    return k8s.materialize_chart(tmp_path_factory.mktemp("chart") / "fraud-detection")


@pytest.fixture(scope="package")
def render(chart: Path) -> Render:
    """Render the chart once per (values files, --set expressions), cached for the package."""
    cache: dict[tuple[tuple[str, ...], tuple[str, ...]], list[dict[str, Any]]] = {}

    def _render(values: tuple[str, ...] = (), sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        key = (values, sets)
        if key not in cache:
            cache[key] = k8s.helm_template(chart, [chart / v for v in values], sets)
        return cache[key]

    return _render
