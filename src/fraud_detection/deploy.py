"""Run a registered model version as a KServe canary: the training pipeline's deploy step.

Three cases, after reading the InferenceService:

* it does not exist: create a minimal one serving the version with all the traffic (the Helm chart normally
  creates it; there is no previous revision to share traffic with);
* its spec already serves the version: nothing to do;
* otherwise start a canary with :func:`fraud_detection.rollout.start_canary`, the same guarded JSON patch and
  annotations ``fraud rollout`` uses, so the rollout's analysis, promotion and rollback take over from there.

Without a cluster configuration (neither in-cluster credentials nor a kubeconfig) the step is skipped with a log
line. The ``kubernetes`` client and :mod:`fraud_detection.rollout` are imported only when a cluster is used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from fraud_detection.registry import ModelRegistry

LOG = logging.getLogger(__name__)

#: Annotation recording the model version the InferenceService's spec serves (also written by the rollout).
VERSION_ANNOTATION = "fraud-detection/model-version"
#: Serving image used only when the InferenceService does not exist yet.
SERVE_IMAGE = "ghcr.io/fraud-detection/fraud-detection-serve:0.1.0"

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
    from fraud_detection.rollout import API_VERSION, CONTAINER_NAME, ENV_MODEL_VERSION, ENV_STORAGE_URI, GROUP

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
    from fraud_detection.rollout import (
        API_VERSION,
        GROUP,
        PLURAL,
        InferenceServiceClient,
        RolloutError,
        read_state,
        start_canary,
    )

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
