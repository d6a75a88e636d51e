"""The evaluation report of a candidate model: ROC points for the Kubeflow UI and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence

import numpy as np


def roc_points(
    labels: np.ndarray, scores: np.ndarray, max_points: int = 200
) -> tuple[list[float], list[float], list[float]]:
    """ROC curve thinned to at most ``max_points`` points (ends kept), with thresholds clipped to [0, 1].

    Args:
        labels: 0/1 labels.
        scores: Calibrated scores.
        max_points: Most points to keep (the Kubeflow UI stores them in the artifact's metadata).

    Returns:
        (false-positive rates, true-positive rates, thresholds), as plain lists.
    """
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).round().astype(int))
    return fpr[keep].tolist(), tpr[keep].tolist(), np.clip(thresholds[keep], 0.0, 1.0).tolist()


def evaluation_html(
    version: str,
    reasons: Sequence[str],
    promote: bool,
    candidate: Mapping[str, float],
    production: Mapping[str, float] | None,
    images: Mapping[str, bytes],
) -> str:
    """A self-contained HTML page: the gate's verdict and reasons, metrics side by side, curves as embedded PNG.

    Args:
        version: Candidate version.
        reasons: The gate's reasons.
        promote: The gate's verdict.
        candidate: Candidate metrics.
        production: Production metrics on the same rows, or None.
        images: PNG bytes by name (``roc``, ``pr``).

    Returns:
        The page.
    """

    def cell(values: Mapping[str, float] | None, key: str) -> str:
        if values is None or key not in values:
            return ""
        return f"{values[key]:,.0f}" if key.startswith("n_") else f"{values[key]:.4f}"

    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{cell(candidate, k)}</td><td>{cell(production, k)}</td></tr>"
        for k in candidate
    )
    items = "".join(f"<li>{html.escape(r)}</li>" for r in reasons)
    imgs = "".join(
        f'<figure><img alt="{html.escape(k)} curve" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(k.upper())} curve</figcaption></figure>"
        for k, png in images.items()
    )
    verdict = "promote to production" if promote else "keep production"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Fraud model evaluation</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}td:first-child{text-align:left}"
        "</style></head><body>"
        f"<h1>Candidate {html.escape(version)}: {verdict}</h1><ul>{items}</ul>"
        f"<table><tr><th>metric</th><th>candidate</th><th>production</th></tr>{rows}</table>{imgs}</body></html>"
    )
