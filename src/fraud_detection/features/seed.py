"""The original project's five-feature body, completed with a history it implies, never with invented statistics.

The seed API sent ``amount``, ``hour_of_day``, ``avg_monthly_spend``, ``customer_tenure_days`` and
``num_prev_tx_24h``. The other features are computed for the one history those five describe on their own: the
customer's only earlier transactions are the ``num_prev_tx_24h`` of the last 24 hours, of equal amounts totalling
``avg_monthly_spend``; the terminal is unknown (no transactions, no fraud); the day is a weekday. So the customer
counts are ``num_prev_tx_24h + 1`` over every window, the means ``(avg_monthly_spend + amount) / count``, the z-score 0,
the 7-day ratio the 30-day one, no older baseline (ratio 1), the terminal features 0, and ``is_night`` follows
``hour_of_day``. Callers that know more should send raw
transactions (features computed on the server) or every feature.
"""

from __future__ import annotations

from collections.abc import Mapping

from fraud_detection.data import schema

#: What a response says about the features a seed body did not carry (docs/SERVING.md).
SEED_COMPLETION = (
    "derived from the five features sent: the customer's only history is its num_prev_tx_24h transactions of the last "
    "24 hours totalling avg_monthly_spend, the terminal is unknown, the day a weekday"
)


def complete_seed(values: Mapping[str, float], night_end_hour: int = 6) -> dict[str, float]:
    """Every feature of the schema from the five seed features.

    Args:
        values: At least the five of :data:`fraud_detection.data.schema.SEED_FEATURES`.
        night_end_hour: Hours before this count as night.

    Returns:
        Feature name to value for every feature (the five as given).
    """
    amount = float(values["amount"])
    hour = float(values["hour_of_day"])
    spend = float(values["avg_monthly_spend"])
    prior = float(values["num_prev_tx_24h"])
    count = prior + 1.0
    mean_prior = spend / prior if prior > 0 else 0.0
    out: dict[str, float] = {
        "amount": amount,
        "hour_of_day": hour,
        "avg_monthly_spend": spend,
        "customer_tenure_days": float(values["customer_tenure_days"]),
        "num_prev_tx_24h": prior,
        "is_weekend": 0.0,
        "is_night": float(hour < night_end_hour),
        "amount_to_customer_avg_30d": amount / mean_prior if mean_prior > 0 else 1.0,
        "amount_zscore_30d": 0.0,
        # All of that history is in the last 7 days: the same mean, no older baseline.
        "amount_to_customer_avg_7d": amount / mean_prior if mean_prior > 0 else 1.0,
        "customer_avg_7d_to_baseline": 1.0,
    }
    for days in schema.CUSTOMER_WINDOWS_DAYS:
        out[f"customer_tx_count_{days}d"] = count
        out[f"customer_avg_amount_{days}d"] = (spend + amount) / count
    for days in schema.TERMINAL_WINDOWS_DAYS:
        out[f"terminal_tx_count_{days}d"] = 0.0
        out[f"terminal_fraud_rate_{days}d"] = 0.0
    return {name: out[name] for name in schema.FEATURES}
