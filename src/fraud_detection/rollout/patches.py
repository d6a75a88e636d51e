"""Guarded JSON patches (RFC 6902) of an InferenceService: canary, promote, roll back."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from fraud_detection.rollout.contract import (
    ANNOTATION_CANARY,
    ANNOTATION_PREFIX,
    ANNOTATION_STABLE,
    CONTAINER_NAME,
    DEFAULT_CANARY_PERCENT,
    ENV_MODEL_VERSION,
    ENV_STORAGE_URI,
    VERSION_ANNOTATION,
)
from fraud_detection.rollout.errors import RolloutError

_STORAGE_URI_RE = re.compile(r"^(?P<root>.*)/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/?$")


# ------------------------------------------------------------------------------------- InferenceService patches
# The patch builders below are the project's InferenceService patch logic for the rollout. The pipeline's
# deploy_model step (src/fraud_detection/deploy.py) should reuse them rather than keep a second copy.

JsonPatch = list[dict[str, Any]]


def _escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class ServiceState:
    """What the rollout needs to know of an InferenceService.

    Attributes:
        namespace: Namespace.
        name: Name.
        model_version: ``FRAUD_MODEL_VERSION`` of ``kserve-container`` (the version of the spec).
        storage_uri: ``STORAGE_URI`` of ``kserve-container``.
        canary_percent: ``spec.predictor.canaryTrafficPercent``, None when unset.
        stable_version: The stable version recorded when the canary started, if any.
        canary_version: The canary version recorded when the canary started, if any.
        annotations: All annotations.
        traffic: ``(revision, percent, tag)`` from ``status.components.predictor.traffic``.
        latest_created_revision: Knative's latest created revision of the predictor, if known.
        latest_ready_revision: Knative's latest ready revision of the predictor, if known.
        ready: The InferenceService's Ready condition, None when there is no status yet.
        generation: ``metadata.generation``.
        observed_generation: ``status.observedGeneration``.
    """

    namespace: str
    name: str
    model_version: str | None
    storage_uri: str | None
    canary_percent: int | None
    stable_version: str | None
    canary_version: str | None
    annotations: Mapping[str, str]
    traffic: tuple[tuple[str, int, str | None], ...]
    latest_created_revision: str | None
    latest_ready_revision: str | None
    ready: bool | None
    generation: int | None
    observed_generation: int | None

    @property
    def canary_running(self) -> bool:
        """Whether a canary split is configured (``canaryTrafficPercent`` above 0)."""
        return self.canary_percent is not None and self.canary_percent > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form.

        Returns:
            Every field.
        """
        out = asdict(self)
        out["traffic"] = [{"revision": r, "percent": p, "tag": t} for r, p, t in self.traffic]
        out["annotations"] = {k: v for k, v in self.annotations.items() if k.startswith(ANNOTATION_PREFIX)}
        return out


def _container_env(isvc: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    containers = ((isvc.get("spec") or {}).get("predictor") or {}).get("containers") or []
    if not containers or containers[0].get("name") != CONTAINER_NAME:
        name = (isvc.get("metadata") or {}).get("name")
        raise RolloutError(
            f"InferenceService {name}: spec.predictor.containers[0] must be {CONTAINER_NAME!r} "
            f"(found {[c.get('name') for c in containers]}); is it installed by the fraud-detection chart?"
        )
    return containers, list(containers[0].get("env") or [])


def _env_value(env: Sequence[Mapping[str, Any]], name: str) -> str | None:
    for item in env:
        if item.get("name") == name:
            value = item.get("value")
            return None if value is None else str(value)
    return None


def read_state(isvc: Mapping[str, Any]) -> ServiceState:
    """Extract the rollout's view of an InferenceService object.

    Args:
        isvc: The object, as the API returns it.

    Returns:
        Its state.
    """
    meta = isvc.get("metadata") or {}
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    _, env = _container_env(isvc)
    status = isvc.get("status") or {}
    component = (status.get("components") or {}).get("predictor") or {}
    traffic = tuple(
        (str(t.get("revisionName", "")), int(t.get("percent", 0) or 0), t.get("tag"))
        for t in component.get("traffic") or []
    )
    ready = None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
    annotations = dict(meta.get("annotations") or {})
    percent = predictor.get("canaryTrafficPercent")
    return ServiceState(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        model_version=_env_value(env, ENV_MODEL_VERSION),
        storage_uri=_env_value(env, ENV_STORAGE_URI),
        canary_percent=None if percent is None else int(percent),
        stable_version=annotations.get(ANNOTATION_STABLE),
        canary_version=annotations.get(ANNOTATION_CANARY),
        annotations=annotations,
        traffic=traffic,
        latest_created_revision=component.get("latestCreatedRevision"),
        latest_ready_revision=component.get("latestReadyRevision"),
        ready=ready,
        generation=meta.get("generation"),
        observed_generation=status.get("observedGeneration"),
    )


def storage_uri_for(current_uri: str, version: str) -> str:
    """The storage URI of another version under the same root and model name.

    Args:
        current_uri: The current ``STORAGE_URI``: ``<root>/models/<name>/versions/<version>``.
        version: The version to point at.

    Returns:
        ``<root>/models/<name>/versions/<version>``.

    Raises:
        RolloutError: The current URI does not follow the store layout.
    """
    match = _STORAGE_URI_RE.match(current_uri)
    if not match:
        raise RolloutError(
            f"{ENV_STORAGE_URI} {current_uri!r} does not follow <root>/models/<name>/versions/<version>; "
            "cannot derive another version's location"
        )
    if not version or "/" in version:
        raise ValueError(f"model version {version!r} must be a non-empty name without '/'")
    return f"{match['root']}/models/{match['name']}/versions/{version}"


def _env_ops(isvc: Mapping[str, Any], values: Mapping[str, str]) -> JsonPatch:
    """Set env vars of kserve-container by name, guarding each index with a ``test``."""
    _, env = _container_env(isvc)
    base = "/spec/predictor/containers/0"
    ops: JsonPatch = [{"op": "test", "path": f"{base}/name", "value": CONTAINER_NAME}]
    if not env:
        ops.append({"op": "add", "path": f"{base}/env", "value": []})
    for name, value in values.items():
        index = next((i for i, item in enumerate(env) if item.get("name") == name), None)
        if index is None:
            ops.append({"op": "add", "path": f"{base}/env/-", "value": {"name": name, "value": value}})
        else:
            ops.append({"op": "test", "path": f"{base}/env/{index}/name", "value": name})
            ops.append({"op": "replace", "path": f"{base}/env/{index}", "value": {"name": name, "value": value}})
    return ops


def annotation_ops(isvc: Mapping[str, Any], annotations: Mapping[str, str | None]) -> JsonPatch:
    """Set (or, with None, remove) annotations.

    Args:
        isvc: The current object.
        annotations: Key to value; None removes the key if present.

    Returns:
        The operations.
    """
    current = (isvc.get("metadata") or {}).get("annotations")
    if current is None:
        kept = {k: v for k, v in annotations.items() if v is not None}
        return [{"op": "add", "path": "/metadata/annotations", "value": kept}] if kept else []
    ops: JsonPatch = []
    for key, value in annotations.items():
        path = "/metadata/annotations/" + _escape_pointer(key)
        if value is None:
            if key in current:
                ops.append({"op": "remove", "path": path})
        else:
            ops.append({"op": "add", "path": path, "value": str(value)})
    return ops


def _percent_op(isvc: Mapping[str, Any], percent: int | None) -> JsonPatch:
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    path = "/spec/predictor/canaryTrafficPercent"
    if percent is None:
        return [{"op": "remove", "path": path}] if "canaryTrafficPercent" in predictor else []
    return [{"op": "add", "path": path, "value": int(percent)}]


def canary_patch(
    isvc: Mapping[str, Any],
    version: str,
    percent: int = DEFAULT_CANARY_PERCENT,
    *,
    stable_version: str | None = None,
) -> JsonPatch:
    """Start a canary: the spec points at ``version``, ``percent`` % of the traffic goes to it.

    Args:
        isvc: The current object.
        version: The canary version.
        percent: Canary traffic share, 1-99.
        stable_version: The version recorded as stable; by default the spec's current version (give the
            recorded one when replacing a running canary, whose spec version is that canary).

    Returns:
        The JSON patch.

    Raises:
        ValueError: Bad percent or version.
        RolloutError: The object cannot take a canary (no current version, same version, unknown layout).
    """
    if not 1 <= percent <= 99:
        raise ValueError(f"canary traffic percent must be between 1 and 99, not {percent}")
    state = read_state(isvc)
    if not state.model_version or not state.storage_uri:
        raise RolloutError(
            f"InferenceService {state.name}: {CONTAINER_NAME} has no {ENV_MODEL_VERSION}/{ENV_STORAGE_URI}"
        )
    if version == state.model_version:
        raise RolloutError(f"InferenceService {state.name} already serves version {version}")
    uri = storage_uri_for(state.storage_uri, version)
    return (
        _env_ops(isvc, {ENV_STORAGE_URI: uri, ENV_MODEL_VERSION: version})
        + _percent_op(isvc, percent)
        + annotation_ops(
            isvc,
            {
                ANNOTATION_STABLE: stable_version or state.model_version,
                ANNOTATION_CANARY: version,
                VERSION_ANNOTATION: version,
            },
        )
    )


def promote_patch(isvc: Mapping[str, Any], version: str, annotations: Mapping[str, str]) -> JsonPatch:
    """Promote: ``version`` is the spec and takes 100 % (``canaryTrafficPercent`` removed).

    Args:
        isvc: The current object.
        version: The canary version being promoted (already the spec during a canary).
        annotations: Decision annotations to write.

    Returns:
        The JSON patch.
    """
    return _settle_patch(isvc, version, None, annotations)


def rollback_patch(isvc: Mapping[str, Any], stable_version: str, annotations: Mapping[str, str]) -> JsonPatch:
    """Roll back, first step: all traffic to the previously rolled-out revision, spec back to the stable version.

    ``canaryTrafficPercent: 0`` makes KServe send 100 % to the revision rolled out before the canary at once.
    The restored spec becomes a new revision at 0 %; :func:`finish_rollback_patch` hands it the traffic once
    it is ready.

    Args:
        isvc: The current object.
        stable_version: The version to restore.
        annotations: Decision annotations to write.

    Returns:
        The JSON patch.
    """
    return _settle_patch(isvc, stable_version, 0, annotations)


def _settle_patch(
    isvc: Mapping[str, Any], version: str, percent: int | None, annotations: Mapping[str, str]
) -> JsonPatch:
    """Point the spec at ``version`` (if it is not already), set or remove the canary percent, record the result.

    Args:
        isvc: The current object.
        version: The version that becomes (or stays) the spec and the stable version.
        percent: ``canaryTrafficPercent`` to set, or None to remove it.
        annotations: Decision annotations to write.

    Returns:
        The JSON patch.
    """
    state = read_state(isvc)
    if not state.storage_uri:
        raise RolloutError(f"InferenceService {state.name}: {CONTAINER_NAME} has no {ENV_STORAGE_URI}")
    ops: JsonPatch = []
    if state.model_version != version:
        ops += _env_ops(
            isvc, {ENV_STORAGE_URI: storage_uri_for(state.storage_uri, version), ENV_MODEL_VERSION: version}
        )
    stable = {ANNOTATION_STABLE: version, ANNOTATION_CANARY: None, VERSION_ANNOTATION: version}
    return ops + _percent_op(isvc, percent) + annotation_ops(isvc, {**annotations, **stable})


def finish_rollback_patch(isvc: Mapping[str, Any]) -> JsonPatch:
    """Roll back, last step: remove ``canaryTrafficPercent`` (the ready, restored revision takes 100 %).

    Args:
        isvc: The current object.

    Returns:
        The JSON patch (empty when there is nothing to remove).
    """
    return _percent_op(isvc, None)
