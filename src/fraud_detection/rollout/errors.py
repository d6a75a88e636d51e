"""Errors of the rollout: a step that cannot go ahead, a Prometheus that cannot answer."""

from __future__ import annotations


class RolloutError(RuntimeError):
    """A rollout step cannot go ahead; the message says why and what to do."""


class PrometheusError(RuntimeError):
    """Prometheus could not be queried or answered an error."""
