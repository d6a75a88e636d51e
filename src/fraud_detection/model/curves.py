"""ROC and precision-recall curves as PNG images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from fraud_detection.store.files import atomic_file


def plot_curves(labels: np.ndarray, scores: np.ndarray, out_dir: Path, title: str = "") -> dict[str, Path]:
    """Write ROC and precision-recall curves as PNG.

    Args:
        labels: 0/1 labels.
        scores: Scores.
        out_dir: Directory for ``roc.png`` and ``pr.png``.
        title: Prefix for the plot titles.

    Returns:
        Paths of the written images by kind (``roc``, ``pr``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    auc = roc_auc_score(labels, scores)
    ap = average_precision_score(labels, scores)
    paths = {}
    for kind, (x, y, xl, yl, label, diag) in {
        "roc": (fpr, tpr, "false positive rate", "true positive rate", f"ROC AUC {auc:.3f}", True),
        "pr": (
            recall,
            precision,
            "recall",
            "precision",
            f"AP {ap:.3f} (base rate {labels.mean():.4f})",
            False,
        ),
    }.items():
        fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
        ax.plot(x, y, lw=1.5, label=label)
        if diag:
            ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        else:
            ax.axhline(labels.mean(), ls="--", c="grey", lw=0.8)
        ax.set(xlabel=xl, ylabel=yl, xlim=(0, 1), ylim=(0, 1.02), title=f"{title} {kind.upper()} curve".strip())
        ax.legend(loc="lower right" if diag else "upper right")
        fig.tight_layout()
        path = out_dir / f"{kind}.png"
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths[kind] = path
    return paths
