"""Promotion gate: a candidate replaces production only when it is better by the margins."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the promotion gate.

    Attributes:
        promote: Whether the candidate should replace production.
        reasons: Human-readable reasons, one per check.
    """

    promote: bool
    reasons: list[str]


def promotion_gate(
    candidate: dict[str, float],
    production: dict[str, float] | None,
    *,
    min_ap_gain: float = 0.0,
    max_cp_loss: float = 0.0,
) -> GateDecision:
    """Compare a candidate's metrics with production's on the same test data.

    The candidate is promoted when there is no production model, or when its average precision beats production's
    by more than ``min_ap_gain`` (absolute) and its card precision@100 is not lower by more than ``max_cp_loss``.

    Args:
        candidate: Candidate metrics (``average_precision``, ``card_precision_at_100``).
        production: Production metrics on the same data, or None.
        min_ap_gain: Required AP improvement (absolute).
        max_cp_loss: Tolerated CP@100 loss (absolute).

    Returns:
        The decision and its reasons.
    """
    if production is None:
        return GateDecision(True, ["no production model: the candidate becomes the first production model"])
    ap_c, ap_p = candidate["average_precision"], production["average_precision"]
    cp_c, cp_p = candidate["card_precision_at_100"], production["card_precision_at_100"]
    ap_ok = ap_c > ap_p + min_ap_gain
    cp_ok = cp_c >= cp_p - max_cp_loss
    reasons = [
        f"average precision {ap_c:.4f} vs production {ap_p:.4f} (needs > {ap_p + min_ap_gain:.4f}): "
        + ("pass" if ap_ok else "fail"),
        f"card precision@100 {cp_c:.4f} vs production {cp_p:.4f} (needs >= {cp_p - max_cp_loss:.4f}): "
        + ("pass" if cp_ok else "fail"),
    ]
    return GateDecision(ap_ok and cp_ok, reasons)
