"""Canary rollout: start, analyse, promote or roll back, and the pipeline's deploy step."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fraud_detection.model.registry import ModelRegistry
from fraud_detection.rollout.analysis import Decision, RolloutDecision, Thresholds, decide
from fraud_detection.rollout.contract import API_VERSION, DEFAULT_CANARY_PERCENT, GROUP, PLURAL, SERVE_IMAGE
from fraud_detection.rollout.errors import RolloutError
from fraud_detection.rollout.kube import InferenceServiceClient, load_cluster_config, new_inference_service
from fraud_detection.rollout.patches import (
    JsonPatch,
    ServiceState,
    annotation_ops,
    canary_patch,
    finish_rollback_patch,
    promote_patch,
    read_state,
    rollback_patch,
)
from fraud_detection.rollout.prometheus import PrometheusClient, fetch_version_metrics
from fraud_detection.rollout.records import decision_annotations, record_key, write_record
from fraud_detection.store.base import ArtifactStore

LOG = logging.getLogger(__name__)


def analyse(
    prometheus: PrometheusClient,
    *,
    model_name: str,
    stable_version: str,
    canary_version: str,
    window: str = "10m",
    thresholds: Thresholds | None = None,
    at: float | None = None,
    namespace: str | None = None,
) -> RolloutDecision:
    """Compare canary with stable over a window and decide.

    Args:
        prometheus: The client.
        model_name: Served model name (``model_name`` label).
        stable_version: Stable version.
        canary_version: Canary version.
        window: Analysis window, e.g. ``10m``.
        thresholds: Limits (defaults when None).
        at: End of the window (Unix seconds); now by default.
        namespace: ``namespace`` label to match, if the metrics carry one.

    Returns:
        The decision.
    """
    if stable_version == canary_version:
        raise ValueError(f"stable and canary are the same version {stable_version!r}: nothing to compare")
    end = time.time() if at is None else at
    stable = fetch_version_metrics(prometheus, model_name, stable_version, window, at=end, namespace=namespace)
    canary = fetch_version_metrics(prometheus, model_name, canary_version, window, at=end, namespace=namespace)
    return decide(stable, canary, thresholds or Thresholds(), model_name=model_name, window=window)


@dataclass(frozen=True)
class StartResult:
    """What :func:`start_canary` did.

    Attributes:
        stable_version: Version that keeps (100 - percent) %.
        canary_version: New version.
        percent: Canary share.
        patch: The JSON patch (applied unless a dry run).
        applied: Whether it was applied.
    """

    stable_version: str
    canary_version: str
    percent: int
    patch: JsonPatch
    applied: bool


def start_canary(
    isvc: InferenceServiceClient,
    version: str,
    *,
    percent: int = DEFAULT_CANARY_PERCENT,
    registry: ModelRegistry | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> StartResult:
    """Start a canary of ``version`` on the InferenceService.

    Args:
        isvc: The InferenceService.
        version: The new version (must be complete in the registry when one is given).
        percent: Canary traffic share, 1-99.
        registry: The model registry: checks the version and moves the ``canary`` alias.
        force: Replace a canary already running.
        dry_run: Build the patch, change nothing.

    Returns:
        What was (or would be) done.

    Raises:
        RolloutError: A canary runs already (without ``force``), or the version is unknown.
    """
    if registry is not None and version not in registry.versions():
        raise RolloutError(
            f"version {version!r} of {registry.model_name} is not complete in {registry.store.uri()}; "
            "publish it first (fraud models list shows what is there)"
        )
    current = isvc.get()
    state = read_state(current)
    if state.canary_running and not force:
        raise RolloutError(
            f"a canary of {state.canary_version or state.model_version} runs already at {state.canary_percent} % "
            "on {ns}/{name}; analyse, promote or roll it back first (or pass --force)".format(
                ns=isvc.namespace, name=isvc.name
            )
        )
    # Replacing a running canary: the stable version stays the one rolled out before it.
    stable = state.stable_version if (state.canary_running and state.stable_version) else state.model_version
    patch = canary_patch(current, version, percent, stable_version=stable)
    if dry_run:
        return StartResult(str(stable), version, percent, patch, False)
    isvc.patch(patch)
    if registry is not None:
        registry.set_alias("canary", version)
    LOG.info("canary %s at %d %% beside %s on %s/%s", version, percent, stable, isvc.namespace, isvc.name)
    return StartResult(str(stable), version, percent, patch, True)


def resolve_versions(
    state: ServiceState | None,
    registry: ModelRegistry | None,
    *,
    stable_version: str | None = None,
    canary_version: str | None = None,
) -> tuple[str, str]:
    """Work out the stable and canary versions.

    Explicit versions win; then the InferenceService (the annotations written at the start, and the spec's
    version while a canary runs); then the store aliases: ``canary``, and ``production`` (or, when it already
    names the canary, the version it pointed at before).

    Args:
        state: The InferenceService's state, if a cluster is used.
        registry: The registry, if a store is used.
        stable_version: Explicit stable version.
        canary_version: Explicit canary version.

    Returns:
        ``(stable, canary)``.

    Raises:
        RolloutError: Either cannot be determined, or both are the same.
    """
    stable, canary = stable_version, canary_version
    if state is not None:
        stable = stable or state.stable_version
        if state.canary_running:
            canary = canary or state.canary_version or state.model_version
    if registry is not None:
        canary = canary or (registry.get_alias("canary") or {}).get("version")
        production = registry.get_alias("production") or {}
        if not stable and production:
            # The training pipeline may have moved `production` to the new version before deploying it as a
            # canary: the stable version is then the one the alias pointed at before.
            stable = production.get("previous") if production.get("version") == canary else production.get("version")
    if not stable or not canary:
        raise RolloutError(
            f"cannot tell the versions apart (stable {stable!r}, canary {canary!r}): no canary is running; "
            "pass --stable-version and --canary-version"
        )
    if stable == canary:
        raise RolloutError(f"stable and canary are both {stable!r}: no canary to judge")
    return str(stable), str(canary)


def apply_decision(
    decision: RolloutDecision,
    *,
    isvc: InferenceServiceClient | None,
    registry: ModelRegistry | None,
    store: ArtifactStore,
    wait_seconds: float = 300.0,
    poll_interval: float = 5.0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Carry a decision out and record it.

    Promote: canary to 100 % and the store alias ``production`` to it. Rollback: the stable version back at
    100 % (pinned at once, then the restored revision once ready) and ``production`` back to it if it had
    moved. Inconclusive: only the annotations. The ``canary`` alias is removed after promote and rollback.
    The record (decision, checks, actions, errors) is written to the store even when an action fails.

    Args:
        decision: The decision.
        isvc: The InferenceService, or None to change only the store.
        registry: The registry (aliases), or None.
        store: Where the record goes.
        wait_seconds: How long a rollback waits for the restored revision before leaving the traffic pinned.
        poll_interval: Seconds between readiness reads.
        extra: More fields for the record (e.g. the Prometheus URL).

    Returns:
        The record as written.
    """
    key = record_key(decision.model_name)
    annotations = decision_annotations(decision, key)
    record: dict[str, Any] = {
        **(extra or {}),
        **decision.to_dict(),
        "record_key": key,
        "inference_service": f"{isvc.namespace}/{isvc.name}" if isvc else None,
        "actions": [],
        "completed": False,
        "error": None,
    }
    actions: list[dict[str, Any]] = record["actions"]
    try:
        if isvc is not None:
            current = isvc.get()
            state = read_state(current)
            record["service_before"] = state.to_dict()
            if decision.decision is Decision.PROMOTE:
                if not state.canary_running:
                    raise RolloutError(f"no canary runs on {isvc.namespace}/{isvc.name}: nothing to promote")
                if (
                    state.latest_created_revision
                    and state.latest_ready_revision
                    and state.latest_created_revision != state.latest_ready_revision
                ):
                    raise RolloutError(
                        f"the canary's revision {state.latest_created_revision} is not ready "
                        f"(latest ready: {state.latest_ready_revision}); not promoting"
                    )
                patch = promote_patch(current, decision.canary_version, annotations)
                isvc.patch(patch)
                actions.append({"action": "promote", "patch": patch})
            elif decision.decision is Decision.ROLLBACK:
                patch = rollback_patch(current, decision.stable_version, annotations)
                patched = isvc.patch(patch)
                actions.append({"action": "pin-stable", "patch": patch})
                generation = (patched.get("metadata") or {}).get("generation")
                if isvc.wait_latest_ready(generation, wait_seconds, interval=poll_interval):
                    finish = finish_rollback_patch(isvc.get())
                    if finish:
                        isvc.patch(finish)
                    actions.append({"action": "release-pin", "patch": finish})
                else:
                    raise RolloutError(
                        f"the restored revision of {decision.stable_version} was not ready within "
                        f"{wait_seconds:.0f} s; "
                        "all traffic stays pinned on the previous revision (canaryTrafficPercent 0). "
                        "Run `fraud rollout rollback` again once it is ready"
                    )
            else:
                patch = annotation_ops(current, annotations)
                isvc.patch(patch)
                actions.append({"action": "annotate", "patch": patch})
        if registry is not None and decision.decision is not Decision.INCONCLUSIVE:
            target = decision.canary_version if decision.decision is Decision.PROMOTE else decision.stable_version
            production = (registry.get_alias("production") or {}).get("version")
            if production != target:
                registry.set_alias("production", target)
                actions.append({"action": "alias", "alias": "production", "version": target})
            if registry.get_alias("canary") is not None:
                registry.store.delete(f"{registry.base}aliases/canary.json")
                actions.append({"action": "alias-removed", "alias": "canary"})
        record["completed"] = True
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        write_record(store, key, record)
    LOG.info("%s of %s carried out; record %s", decision.decision.value, decision.canary_version, key)
    return record


def manual_decision(
    decision: Decision,
    *,
    model_name: str,
    stable_version: str,
    canary_version: str,
    reason: str,
) -> RolloutDecision:
    """A decision taken by a person (``fraud rollout promote``/``rollback``), with their reason.

    Args:
        decision: promote or rollback.
        model_name: Served model name.
        stable_version: Stable version.
        canary_version: Canary version.
        reason: Why.

    Returns:
        The decision, without checks.
    """
    if decision is Decision.INCONCLUSIVE:
        raise ValueError("a manual decision is promote or rollback")
    return RolloutDecision(
        decision=decision,
        model_name=model_name,
        stable_version=stable_version,
        canary_version=canary_version,
        reasons=(f"manual {decision.value}: {reason}",),
        source="manual",
    )


Action = Literal["created", "canary", "unchanged", "skipped"]


@dataclass(frozen=True)
class DeployResult:
    """What :func:`deploy_canary` did.

    Attributes:
        action: ``created`` (new InferenceService, all traffic), ``canary`` (the version now runs as a canary
            beside the stable one), ``unchanged`` (the spec already serves it) or ``skipped`` (no cluster).
        name: InferenceService name.
        namespace: Its namespace.
        version: The model version deployed.
        reason: One line explaining the action.
    """

    action: Action
    name: str
    namespace: str
    version: str
    reason: str


def deploy_canary(
    *,
    name: str,
    namespace: str,
    model_name: str,
    version: str,
    storage_uri: str,
    canary_traffic_percent: int = 10,
    registry: ModelRegistry | None = None,
    image: str = SERVE_IMAGE,
    api: Any = None,
    patcher: Any = None,
) -> DeployResult:
    """Make the InferenceService serve ``version``: create it, or start a canary of the version.

    Args:
        name: InferenceService name.
        namespace: Its namespace.
        model_name: Served model name (used when creating).
        version: Model version.
        storage_uri: Where the version lives (used when creating; a canary keeps the InferenceService's own
            storage root, which may differ from the store's URI, e.g. a Blob container URL on AKS).
        canary_traffic_percent: Share of traffic for the canary, 1-99.
        registry: The model registry: the canary start checks the version there and moves the ``canary`` alias.
        image: Serving image (used when creating).
        api: A ``kubernetes.client.CustomObjectsApi`` for reads and creation; None to connect with the cluster
            configuration, or to skip when there is none.
        patcher: The CustomObjectsApi that sends JSON patches (with ``api``; defaults to it).

    Returns:
        What was done.

    Raises:
        RolloutError: The canary cannot start (a canary already runs, unknown version, unexpected layout) or the
            API refused a call; the message says why.
    """
    if api is None:
        configuration = load_cluster_config()
        if configuration is None:
            reason = "no Kubernetes cluster configured (in-cluster or kubeconfig): deployment skipped"
            LOG.info("deploy %s to %s/%s: %s", version, namespace, name, reason)
            return DeployResult("skipped", name, namespace, version, reason)
        from kubernetes import client

        isvc = InferenceServiceClient.from_configuration(namespace, name, configuration)
        api = client.CustomObjectsApi(client.ApiClient(configuration=configuration))
    else:
        isvc = InferenceServiceClient(namespace, name, api, patcher or api)
    try:
        current = isvc.get()
    except RolloutError as exc:
        if getattr(exc.__cause__, "status", None) != 404:
            raise
        body = new_inference_service(
            name=name, namespace=namespace, model_name=model_name, version=version, storage_uri=storage_uri, image=image
        )
        api.create_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, body)
        reason = f"created InferenceService {namespace}/{name} serving {version} with all the traffic"
        LOG.info(reason)
        return DeployResult("created", name, namespace, version, reason)
    if read_state(current).model_version == version:
        reason = f"InferenceService {namespace}/{name} already serves {version}"
        LOG.info(reason)
        return DeployResult("unchanged", name, namespace, version, reason)
    started = start_canary(isvc, version, percent=canary_traffic_percent, registry=registry)
    reason = (
        f"{version} runs as a canary on {namespace}/{name} with {started.percent} % of the traffic beside "
        f"{started.stable_version}; `fraud rollout analyse` judges it"
    )
    LOG.info(reason)
    return DeployResult("canary", name, namespace, version, reason)
