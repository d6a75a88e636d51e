"""Judge a candidate against production and register it behind the gate."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraud_detection.data import schema
from fraud_detection.model.bundle import BundleTrust, load_bundle
from fraud_detection.model.curves import plot_curves
from fraud_detection.model.gate import GateDecision, promotion_gate
from fraud_detection.model.metrics import compute_metrics
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.model.train import score
from fraud_detection.scoring.scorer import Scorer

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Comparison:
    """A candidate and production scored on the same labelled rows, and the promotion gate's decision.

    Attributes:
        version: The candidate's version id.
        threshold: The candidate's decision threshold.
        scores: The candidate's scores of the rows, as served (``Scorer.from_bundle(...).score``).
        candidate: Candidate metrics.
        production: Production metrics on the same rows (None without a production model).
        production_version: Production's version (None without one).
        decision: The gate's decision.
    """

    version: str
    threshold: float
    scores: np.ndarray
    candidate: dict[str, float]
    production: dict[str, float] | None
    production_version: str | None
    decision: GateDecision


def compare_with_production(
    registry: ModelRegistry,
    bundle_dir: Path,
    test: pd.DataFrame,
    *,
    cache_dir: Path,
    alias: str = "production",
    min_ap_gain: float = 0.0,
    max_cp_loss: float = 0.0,
) -> Comparison:
    """Score the candidate and the model behind ``alias`` on the same rows and apply the promotion gate.

    Both are scored as the model server scores them (``Scorer.from_bundle``: the compiled engine and calibration),
    so the gate judges the code that serves.

    The incumbent comes from the store and is loaded under the registry's trust (its signature checked before it is
    unpickled). The candidate is this process's (or this pipeline's) own training output, which the registry signs
    when it publishes it: a signature it carries must verify, but an unsigned one is accepted.

    Args:
        registry: The model registry.
        bundle_dir: Candidate bundle.
        test: Labelled test feature frame.
        cache_dir: Local cache for the production bundle.
        alias: The incumbent's alias.
        min_ap_gain: Required AP improvement over production.
        max_cp_loss: Tolerated CP@100 loss.

    Returns:
        Both models' metrics and the decision.
    """
    candidate = load_bundle(bundle_dir, trust=BundleTrust(registry.trust.verify_key, trust_unsigned=True))
    meta = candidate.metadata
    scores = score(Scorer.from_bundle(candidate), test)
    cand = compute_metrics(test, scores, meta.threshold, meta.review_cost).as_dict()
    prod: dict[str, float] | None = None
    production_version: str | None = None
    if registry.get_alias(alias) is not None:
        incumbent = registry.load(alias, cache_dir)
        inc = incumbent.metadata
        prod_scores = score(Scorer.from_bundle(incumbent), test)
        prod = compute_metrics(test, prod_scores, inc.threshold, inc.review_cost).as_dict()
        production_version = inc.version  # the version these metrics belong to, even if the alias moved since
    decision = promotion_gate(cand, prod, min_ap_gain=min_ap_gain, max_cp_loss=max_cp_loss)
    for reason in decision.reasons:
        LOG.info("gate: %s", reason)
    return Comparison(meta.version, meta.threshold, scores, cand, prod, production_version, decision)


@dataclass(frozen=True)
class CandidateReport:
    """What the evaluation step shows: the comparison, loggable metrics, curves and an HTML page.

    Attributes:
        comparison: Candidate vs production and the gate's decision.
        metrics: The finite candidate metrics, and production's prefixed ``production_``.
        roc: ROC curve thinned for the Kubeflow UI: (false-positive rates, true-positive rates, thresholds).
        confusion: Confusion matrix at the candidate's threshold, rows and columns (legitimate, fraud).
        html: Self-contained HTML report with the verdict, metrics side by side and the ROC and PR curves.
    """

    comparison: Comparison
    metrics: dict[str, float]
    roc: tuple[list[float], list[float], list[float]]
    confusion: list[list[int]]
    html: str


def report_candidate(
    registry: ModelRegistry,
    bundle_dir: Path,
    test: pd.DataFrame,
    *,
    work_dir: Path,
    min_ap_gain: float = 0.0,
    max_cp_loss: float = 0.0,
) -> CandidateReport:
    """Compare the candidate with production and build the evaluation step's metrics, curves and report.

    Args:
        registry: The model registry.
        bundle_dir: Candidate bundle.
        test: Labelled test feature frame.
        work_dir: Scratch directory (production bundle cache, curve images).
        min_ap_gain: Required AP improvement over production.
        max_cp_loss: Tolerated CP@100 loss.

    Returns:
        The report.
    """
    from sklearn.metrics import confusion_matrix

    from fraud_detection.model.report import evaluation_html, roc_points

    c = compare_with_production(
        registry, bundle_dir, test, cache_dir=work_dir / "cache", min_ap_gain=min_ap_gain, max_cp_loss=max_cp_loss
    )
    labels = test[schema.LABEL].to_numpy()
    images = {k: p.read_bytes() for k, p in plot_curves(labels, c.scores, work_dir / "png", c.version).items()}
    named = [*c.candidate.items(), *((f"production_{k}", v) for k, v in (c.production or {}).items())]
    return CandidateReport(
        comparison=c,
        metrics={k: float(v) for k, v in named if np.isfinite(v)},
        roc=roc_points(labels, c.scores),
        confusion=confusion_matrix(labels, c.scores >= c.threshold, labels=[0, 1]).tolist(),
        html=evaluation_html(c.version, c.decision.reasons, c.decision.promote, c.candidate, c.production, images),
    )


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of gating and registering a candidate.

    Attributes:
        registered: Whether the candidate was published and became production.
        version: The candidate's version id.
        production_version: Production after this step (candidate or the unchanged incumbent).
        decision: The gate's decision.
        candidate_metrics: Candidate metrics on the test frame.
        production_metrics: Incumbent metrics on the same frame (None without one).
        storage_uri: The published version's location in the store (KServe's ``storageUri``); empty when not
            registered.
    """

    registered: bool
    version: str
    production_version: str | None
    decision: GateDecision
    candidate_metrics: dict[str, float]
    production_metrics: dict[str, float] | None
    storage_uri: str = ""


def gate_and_register(
    registry: ModelRegistry,
    bundle_dir: Path,
    test: pd.DataFrame,
    *,
    min_ap_gain: float = 0.0,
    max_cp_loss: float = 0.0,
    cache_dir: Path,
    alias: str = "production",
) -> RegistrationResult:
    """Compare the candidate with production on the same test frame; publish and move the alias if it wins.

    Args:
        registry: The model registry.
        bundle_dir: Candidate bundle.
        test: Labelled test feature frame.
        min_ap_gain: Required AP improvement over production.
        max_cp_loss: Tolerated CP@100 loss.
        cache_dir: Local cache for the production bundle.
        alias: Alias to move when the candidate wins.

    Returns:
        What happened and why.
    """
    c = compare_with_production(
        registry, bundle_dir, test, cache_dir=cache_dir, alias=alias, min_ap_gain=min_ap_gain, max_cp_loss=max_cp_loss
    )
    if not c.decision.promote:
        return RegistrationResult(False, c.version, c.production_version, c.decision, c.candidate, c.production)
    registry.publish(Path(bundle_dir))
    # Compare-and-swap against the production the candidate was judged against: if another run moved the alias
    # meanwhile, the candidate never replaces a model it was not compared with (RegistryError names the winner).
    registry.set_alias(alias, c.version, expected_previous=c.production_version or "")
    uri = registry.store.uri(registry.version_prefix(c.version)).rstrip("/")
    return RegistrationResult(True, c.version, c.version, c.decision, c.candidate, c.production, uri)
