"""The InferenceService in Kubernetes: names, annotations, the cluster configuration and a JSON-patching client."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from fraud_detection.rollout.contract import (
    API_VERSION,
    CONTAINER_NAME,
    ENV_MODEL_VERSION,
    ENV_STORAGE_URI,
    GROUP,
    PLURAL,
    SERVE_IMAGE,
    VERSION_ANNOTATION,
)
from fraud_detection.rollout.errors import RolloutError
from fraud_detection.rollout.patches import JsonPatch, read_state

LOG = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------- Kubernetes client


class CustomObjects(Protocol):
    """The two CustomObjectsApi calls the rollout uses (a fake in tests)."""

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        """Read a custom object."""

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any:
        """Patch a custom object."""


class InferenceServiceClient:
    """Get and JSON-patch one InferenceService.

    Args:
        namespace: Namespace.
        name: InferenceService name.
        reader: CustomObjectsApi (or a fake) for reads.
        patcher: CustomObjectsApi (or a fake) whose patches are sent as ``application/json-patch+json``.
    """

    def __init__(self, namespace: str, name: str, reader: CustomObjects, patcher: CustomObjects) -> None:
        self.namespace = namespace
        self.name = name
        self._reader = reader
        self._patcher = patcher

    @classmethod
    def connect(cls, namespace: str, name: str) -> InferenceServiceClient:
        """Connect with the in-cluster ServiceAccount, else the local kubeconfig.

        Args:
            namespace: Namespace.
            name: InferenceService name.

        Returns:
            The client.
        """
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                config.load_kube_config()
            except (config.ConfigException, OSError) as exc:
                raise RolloutError(f"no Kubernetes configuration (in-cluster or kubeconfig): {exc}") from exc
        return cls.from_configuration(namespace, name, client.Configuration.get_default_copy())

    @classmethod
    def from_configuration(cls, namespace: str, name: str, configuration: Any) -> InferenceServiceClient:
        """Build the client from a ``kubernetes.client.Configuration``.

        Args:
            namespace: Namespace.
            name: InferenceService name.
            configuration: API server address and credentials.

        Returns:
            The client.
        """
        from kubernetes import client

        reader = client.CustomObjectsApi(client.ApiClient(configuration=configuration))
        # CustomObjectsApi sends every PATCH as a merge patch, which would replace the whole containers list.
        # Default headers override the per-call Content-Type, so this client sends JSON patches instead.
        patch_client = client.ApiClient(configuration=configuration)
        patch_client.set_default_header("Content-Type", "application/json-patch+json")
        return cls(namespace, name, reader, client.CustomObjectsApi(patch_client))

    def _call(self, what: str, fn: Callable[[], Any]) -> dict[str, Any]:
        try:
            result = fn()
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status is None:
                raise
            hint = {
                403: "the identity lacks get/patch on inferenceservices.serving.kserve.io here",
                404: "no such InferenceService",
                409: "it changed meanwhile; run again",
                422: "a guarded field changed meanwhile (the patch's test failed); run again",
            }.get(int(status), getattr(exc, "reason", ""))
            raise RolloutError(
                f"{what} InferenceService {self.namespace}/{self.name} failed with HTTP {status}: {hint}"
            ) from exc
        return dict(result)

    def get(self) -> dict[str, Any]:
        """Read the InferenceService.

        Returns:
            The object.
        """
        return self._call(
            "reading",
            lambda: self._reader.get_namespaced_custom_object(GROUP, API_VERSION, self.namespace, PLURAL, self.name),
        )

    def patch(self, patch: JsonPatch) -> dict[str, Any]:
        """Apply a JSON patch.

        Args:
            patch: The operations.

        Returns:
            The patched object.
        """
        LOG.debug("patching %s/%s: %s", self.namespace, self.name, json.dumps(patch))
        return self._call(
            "patching",
            lambda: self._patcher.patch_namespaced_custom_object(
                GROUP, API_VERSION, self.namespace, PLURAL, self.name, patch
            ),
        )

    def wait_latest_ready(
        self,
        generation: int | None,
        timeout: float,
        *,
        interval: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> bool:
        """Wait until the spec of ``generation`` is observed and its revision is the latest ready one.

        Args:
            generation: ``metadata.generation`` after the patch (None: do not check it).
            timeout: Seconds to wait at most.
            interval: Seconds between reads.
            sleep: Sleep function (tests pass a fake).
            clock: Monotonic clock (tests pass a fake).

        Returns:
            True when ready before the deadline.
        """
        deadline = clock() + timeout
        while True:
            state = read_state(self.get())
            observed = generation is None or (state.observed_generation or 0) >= generation
            if (
                observed
                and state.latest_created_revision
                and state.latest_created_revision == state.latest_ready_revision
            ):
                return True
            if clock() >= deadline:
                return False
            sleep(interval)


def new_inference_service(
    *, name: str, namespace: str, model_name: str, version: str, storage_uri: str, image: str = SERVE_IMAGE
) -> dict[str, Any]:
    """A minimal InferenceService serving one version through the project's model server.

    Args:
        name: InferenceService name.
        namespace: Its namespace.
        model_name: Served model name (``/v2/models/<name>``).
        version: Model version.
        storage_uri: Where the version lives (``<root>/models/<name>/versions/<version>``).
        image: Serving image (Dockerfile target ``serve``).

    Returns:
        The object to create.
    """
    return {
        "apiVersion": f"{GROUP}/{API_VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "annotations": {VERSION_ANNOTATION: version}},
        "spec": {
            "predictor": {
                "containers": [
                    {
                        "name": CONTAINER_NAME,
                        "image": image,
                        "args": ["--model_name", model_name, "--model_dir", "/mnt/models"],
                        "env": [
                            {"name": ENV_STORAGE_URI, "value": storage_uri},
                            {"name": ENV_MODEL_VERSION, "value": version},
                        ],
                    }
                ]
            }
        },
    }


def load_cluster_config() -> Any:
    """Load in-cluster credentials, else the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``).

    Returns:
        A ``kubernetes.client.Configuration``, or None when neither is available.
    """
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError, TypeError):
            return None
    return client.Configuration.get_default_copy()
