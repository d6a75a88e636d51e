"""Create the feature SparkApplication with the ``kubernetes`` client and wait for it to finish.

The decisions (done, running, failed, timed out) are :mod:`components.spark_operator.status`'s pure functions;
this module only makes the calls: ``create``, ``get`` (polled) and ``delete`` on ``sparkapplications`` (the chart's
runner Role grants exactly these).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from components.spark_operator.application import GROUP, PLURAL, VERSION
from components.spark_operator.status import (
    FAILURE_STATES,
    SparkApplicationError,
    application_state,
    interpret,
    one_line,
    timeout_error,
)

LOG = logging.getLogger(__name__)


class CustomObjects(Protocol):
    """The ``kubernetes.client.CustomObjectsApi`` calls used here."""

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, body: Any) -> Any:
        """Create a custom object."""

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        """Read a custom object."""

    def delete_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        """Delete a custom object."""


def connect() -> CustomObjects:
    """A CustomObjectsApi with the pod's ServiceAccount, else the local kubeconfig.

    Returns:
        The client.

    Raises:
        SparkApplicationError: No Kubernetes configuration.
    """
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise SparkApplicationError(f"no Kubernetes configuration (in-cluster or kubeconfig): {exc}") from exc
    return client.CustomObjectsApi()


def _http_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return int(status) if status is not None else None


def _api_error(what: str, name: str, exc: Exception) -> Exception:
    """An API error as one line naming the call and the application; other errors unchanged."""
    status = _http_status(exc)
    if status is None:
        return exc
    hint = {
        403: "the pipeline's ServiceAccount lacks RBAC on sparkapplications.sparkoperator.k8s.io (chart spark.*)",
        404: "not found (is the Spark Operator's CRD installed?)",
    }.get(status, one_line(str(getattr(exc, "reason", "") or exc), 200))
    return SparkApplicationError(f"{what} SparkApplication {name} failed with HTTP {status}: {hint}")


def _call(what: str, name: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        raise _api_error(what, name, exc) from exc


def create(api: CustomObjects, manifest: Mapping[str, Any]) -> None:
    """Create the application; an earlier one of the same name is reused, or replaced when it had failed.

    The name is derived from the run (a retried step computes the same one), so a retry attaches to its running
    application instead of starting a second.

    Args:
        api: The client.
        manifest: The SparkApplication (:func:`components.spark_operator.application.build_application`).

    Raises:
        SparkApplicationError: The API refused it.
    """
    meta = manifest["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    who = f"{namespace}/{name}"
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, dict(manifest))
        LOG.info("created SparkApplication %s", who)
        return
    except Exception as exc:
        if _http_status(exc) != 409:
            raise _api_error("create", who, exc) from exc
    existing = _call("get", who, lambda: api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
    state, _ = application_state(existing)
    if state not in FAILURE_STATES:
        LOG.info("SparkApplication %s already exists (state %s): waiting for it", who, state or "none")
        return
    LOG.info("SparkApplication %s exists and %s: deleting it and submitting again", who, state)
    delete(api, namespace, name)
    _call("create", who, lambda: api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, dict(manifest)))


def delete(api: CustomObjects, namespace: str, name: str) -> None:
    """Delete an application (a missing one is fine)."""
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except Exception as exc:
        if _http_status(exc) != 404:
            raise _api_error("delete", f"{namespace}/{name}", exc) from exc


def wait(
    api: CustomObjects,
    namespace: str,
    name: str,
    timeout_seconds: float,
    poll_seconds: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the application until it is COMPLETED; delete it and fail when it does not finish in time.

    Args:
        api: The client.
        namespace: Its namespace.
        name: Its name.
        timeout_seconds: Longest wait.
        poll_seconds: Seconds between two reads.
        clock: Monotonic clock.
        sleep: Sleep function.

    Returns:
        The completed application.

    Raises:
        SparkApplicationError: FAILED, SUBMISSION_FAILED or the timeout, naming the application and its error.
    """
    who = f"{namespace}/{name}"
    deadline = clock() + timeout_seconds
    last_state = None
    while True:
        obj = _call("get", who, lambda: api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        state, _ = application_state(obj)
        if state != last_state:
            LOG.info("SparkApplication %s: %s", who, state or "submitted, not yet seen by the operator")
            last_state = state
        if interpret(who, obj) == "done":
            return dict(obj)
        if clock() >= deadline:
            delete(api, namespace, name)
            raise timeout_error(who, obj, timeout_seconds)
        sleep(poll_seconds)


def run_application(
    api: CustomObjects, manifest: Mapping[str, Any], timeout_seconds: float, poll_seconds: float
) -> None:
    """Create the application and wait until it has COMPLETED.

    Args:
        api: The client (:func:`connect`).
        manifest: The SparkApplication.
        timeout_seconds: Longest wait.
        poll_seconds: Seconds between two reads of its status.

    Raises:
        SparkApplicationError: It failed, was refused, or did not finish in time.
    """
    create(api, manifest)
    meta = manifest["metadata"]
    wait(api, meta["namespace"], meta["name"], timeout_seconds, poll_seconds)
