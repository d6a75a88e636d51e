"""What the Helm chart tests share: the values sets and accessors of rendered objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests import k8s

CI_FILES = sorted((k8s.CHART_DIR / "ci").glob("*.yaml"))
VALUE_SETS: dict[str, tuple[str, ...]] = {
    "default": (),
    **{f"ci/{p.stem}": (f"ci/{p.name}",) for p in CI_FILES},
    "aks": ("values-aks.yaml",),
    "grpc": ("values-grpc.yaml",),
}
ALL_ENABLED = ("ci/all-enabled-values.yaml",)

Render = Callable[..., list[dict[str, Any]]]


def kinds_and_names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def predictor(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return k8s.one(objects, "InferenceService")["spec"]["predictor"]


def serve_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = predictor(objects)["containers"]
    return container


def drift_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    cronjob = k8s.one(objects, "CronJob")
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container
