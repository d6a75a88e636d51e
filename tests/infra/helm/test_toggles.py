"""Each enabled toggle removes exactly its objects."""

from __future__ import annotations

import pytest

from tests.infra.helm.chart import ALL_ENABLED, Render, kinds_and_names, predictor

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------------------------- toggles

# toggle -> (--set expression, the (kind, name) it removes; None: every dashboard ConfigMap)
TOGGLES: dict[str, tuple[str, set[tuple[str, str]] | None]] = {
    "inferenceService": (
        "inferenceService.enabled=false",
        {
            ("InferenceService", "fraud-detector"),
            ("PodMonitor", "fraud-detection-predictor"),
            ("NetworkPolicy", "fraud-detection-predictor"),
            ("RequestAuthentication", "fraud-detection-predictor"),
            ("AuthorizationPolicy", "fraud-detection-predictor"),
            ("AuthorizationPolicy", "fraud-detection-predictor-deny"),
            ("EnvoyFilter", "fraud-detection-ratelimit"),
            ("EnvoyFilter", "fraud-detection-path-normalization"),
        },
    ),
    "serviceAccount": (
        "serviceAccount.create=false,serviceAccount.name=existing-sa",
        {("ServiceAccount", "fraud-detection")},
    ),
    "drift": (
        "drift.enabled=false",
        {
            ("CronJob", "fraud-detection-drift"),
            ("NetworkPolicy", "fraud-detection-drift"),
            ("ServiceAccount", "fraud-detection-drift"),
        },
    ),
    "rollout": (
        "rollout.enabled=false",
        {
            ("ServiceAccount", "fraud-detection-rollout"),
            ("Role", "fraud-detection-rollout"),
            ("RoleBinding", "fraud-detection-rollout"),
        },
    ),
    "pipeline": ("pipeline.enabled=false", {("ConfigMap", "fraud-detection-pipeline")}),
    "podMonitor": ("metrics.podMonitor.enabled=false", {("PodMonitor", "fraud-detection-predictor")}),
    "prometheusRule": ("prometheusRule.enabled=false", {("PrometheusRule", "fraud-detection")}),
    "dashboards": ("dashboards.enabled=false", None),
    "networkPolicy": (
        "networkPolicy.enabled=false",
        {
            ("NetworkPolicy", "fraud-detection-predictor"),
            ("NetworkPolicy", "fraud-detection-drift"),
            ("NetworkPolicy", "fraud-detection-minio"),
            ("NetworkPolicy", "fraud-detection-redis"),
        },
    ),
    "istioAuth": (
        "istio.auth.enabled=false",
        {
            ("RequestAuthentication", "fraud-detection-predictor"),
            ("AuthorizationPolicy", "fraud-detection-predictor"),
            ("AuthorizationPolicy", "fraud-detection-predictor-deny"),
            ("EnvoyFilter", "fraud-detection-path-normalization"),
        },
    ),
    "istioRateLimit": ("istio.rateLimit.enabled=false", {("EnvoyFilter", "fraud-detection-ratelimit")}),
    "minio": (
        "minio.enabled=false",
        {
            ("Deployment", "fraud-detection-minio"),
            ("Service", "fraud-detection-minio"),
            ("PersistentVolumeClaim", "fraud-detection-minio"),
            ("NetworkPolicy", "fraud-detection-minio"),
        },
    ),
    "onlineStoreRedis": (
        "onlineStore.redis.enabled=false",
        {
            ("StatefulSet", "fraud-detection-redis"),
            ("Service", "fraud-detection-redis"),
            ("NetworkPolicy", "fraud-detection-redis"),
        },
    ),
}


@pytest.mark.parametrize("toggle", TOGGLES)
def test_each_toggle_removes_exactly_its_objects(render: Render, toggle: str) -> None:
    """From the all-enabled values, switching one piece off removes its objects and nothing else."""
    expression, expected = TOGGLES[toggle]
    everything = kinds_and_names(render(ALL_ENABLED))
    remaining = kinds_and_names(render(ALL_ENABLED, (expression,)))
    removed = everything - remaining
    if expected is None:
        dashboards = {(k, n) for k, n in everything if k == "ConfigMap" and "-dashboard-" in n}
        assert dashboards
        assert removed == dashboards
    else:
        assert removed == expected
    assert remaining <= everything


def test_canary_toggle(render: Render) -> None:
    assert "canaryTrafficPercent" in predictor(render(ALL_ENABLED))
    assert "canaryTrafficPercent" not in predictor(render(ALL_ENABLED, ("canary.enabled=false",)))
