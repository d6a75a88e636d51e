"""KServe's admission rules for an InferenceService, transcribed from its Go source to check rendered charts offline.

A CRD schema only checks shapes; KServe's webhooks check meaning (which autoscaler class goes with which metric in
which deployment mode). Each function here mirrors one Go function, named in its docstring, and returns the error
message KServe answers with, or None. :func:`admit` runs them in the webhook's order.

Source: github.com/kserve/kserve, read at commit ``00ff000547e7`` of
``pkg/apis/serving/v1beta1/inference_service_validation.go`` (master on the v0.21 line: it already has
``validateConfidential``), the other files at the revisions the code index holds. The rules used here hold from
v0.16, when the deployment modes became ``Knative``/``Standard`` with ``Serverless``/``RawDeployment`` as legacy
aliases, to that commit; the aliases are compared raw (kserve/kserve#5885, open; PR #6063 would normalise them).
The chart pins kserve 0.21.0 (pyproject) and validates against the v0.20 CRDs (tests/schemas/). Files:

* ``V``: pkg/apis/serving/v1beta1/inference_service_validation.go (the validating webhook)
* ``D``: pkg/apis/serving/v1beta1/inference_service_defaults.go (the mutating webhook, runs first)
* ``C``: pkg/apis/serving/v1beta1/component.go; ``P``: predictor.go, predictor_custom.go (same package)
* ``K``: pkg/constants/constants.go; ``E``: pkg/validation/env_policy.go (v0.18+)
* ``U``: pkg/controller/v1beta1/inferenceservice/utils/utils.go (the controller, at reconcile: not admission)
* ``R``: pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go (the controller)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# ------------------------------------------------------------------------------------------ K: constants.go

DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"  # constants.DeploymentMode
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"  # constants.AutoscalerClass
KNATIVE_CLASS = "autoscaling.knative.dev/class"  # knative autoscaling.ClassAnnotationKey
KNATIVE_HPA = "hpa.autoscaling.knative.dev"  # knative autoscaling.HPA
KNATIVE, STANDARD, MODEL_MESH = "Knative", "Standard", "ModelMesh"  # constants.Knative, Standard, ModelMeshDeployment
LEGACY_MODES = {"Serverless": KNATIVE, "RawDeployment": STANDARD}  # LegacyServerless, LegacyRawDeployment
AUTOSCALER_ALLOWED_CLASSES = ("hpa", "external", "keda", "none")  # AutoscalerAllowedClassList
HPA_METRICS = ("cpu", "memory")  # AutoscalerAllowedHPAMetricsList
KPA_METRICS = ("concurrency", "rps")  # AutoscalerAllowedKPAMetricsList
BLOCKED_ENV_VARS = ("PYTHONPATH",)  # E: DefaultBlockedEnvVars
KSERVE_CONTAINER = "kserve-container"  # InferenceServiceContainerName
TRANSFORMER_CONTAINER = "transformer-container"  # TransformerContainerName
STORAGE_URI_ENV = "STORAGE_URI"  # CustomSpecStorageUriEnvVarKey
PROTOCOL_ENV = "PROTOCOL"  # CustomSpecProtocolEnvVarKey
#: P: PredictorSpec's framework fields (JSON names); a container named kserve-container adds the custom predictor.
PREDICTOR_FRAMEWORKS = (
    "xgboost", "pytorch", "triton", "sklearn", "tensorflow", "onnx", "pmml", "lightgbm", "paddle", "huggingface",
    "model",
)  # fmt: skip
ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # V: IsvcNameFmt
#: U: SupportedStorageURIPrefixList and AzureBlobURIRegEx.
STORAGE_URI_PREFIXES = (
    "gs://", "s3://", "pvc://", "file://", "https://", "http://", "hdfs://", "webhdfs://", "oci://", "hf://",
)  # fmt: skip
AZURE_BLOB = re.compile(r"https://(.+?).blob.core.windows.net/(.+)")

Obj = dict[str, Any]


def parse_deployment_mode(mode: str) -> str:
    """K: ``ParseDeploymentMode``: the legacy names mapped to the current ones (empty: the default, Standard).

    Args:
        mode: A deployment-mode annotation value.

    Returns:
        The normalised mode.
    """
    return LEGACY_MODES.get(mode, mode) if mode else STANDARD


def _annotations(isvc: Mapping[str, Any]) -> dict[str, str]:
    return dict(isvc.get("metadata", {}).get("annotations") or {})


def _predictor(isvc: Mapping[str, Any]) -> dict[str, Any]:
    return dict(isvc.get("spec", {}).get("predictor") or {})


def _env(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


# ---------------------------------------------------------------------------------------- D: mutating webhook


def default_inference_service(isvc: Mapping[str, Any], default_mode: str = STANDARD) -> Obj:
    """D: ``DefaultInferenceService``: without a mode annotation, Standard/ModelMesh defaults are written into it.

    Args:
        isvc: The InferenceService as applied.
        default_mode: ``deploy.defaultDeploymentMode`` of KServe's ConfigMap (Standard since v0.16).

    Returns:
        The InferenceService the validating webhook sees (a copy; the legacy aliases are left as they are).
    """
    out = {**isvc, "metadata": {**isvc.get("metadata", {}), "annotations": _annotations(isvc)}}
    if DEPLOYMENT_MODE not in out["metadata"]["annotations"] and default_mode in (STANDARD, MODEL_MESH):
        out["metadata"]["annotations"][DEPLOYMENT_MODE] = default_mode
    return out


# ------------------------------------------------------------------------------- V: validating webhook rules


def validate_inference_service_name(isvc: Mapping[str, Any]) -> str | None:
    """V: ``validateInferenceServiceName``: a DNS-1035-like name."""
    name = isvc.get("metadata", {}).get("name", "")
    return None if ISVC_NAME.match(name) else f'the InferenceService "{name}" is invalid: a InferenceService name ...'


def validate_inference_service_autoscaler(isvc: Mapping[str, Any]) -> str | None:
    """V: ``validateInferenceServiceAutoscaler``: serving.kserve.io/autoscalerClass, when set, is a known class."""
    annotations = _annotations(isvc)
    if AUTOSCALER_CLASS in annotations and annotations[AUTOSCALER_CLASS] not in AUTOSCALER_ALLOWED_CLASSES:
        return f"[{annotations[AUTOSCALER_CLASS]}] is not a supported autoscaler class type"
    return None


def validate_blocked_env_vars(isvc: Mapping[str, Any]) -> str | None:
    """V: ``validateBlockedEnvVars`` with E: ``ValidateBlockedEnvVars``: no container sets PYTHONPATH."""
    spec = isvc.get("spec", {})
    for component in ("predictor", "transformer", "explainer"):
        part = spec.get(component) or {}
        for container in [*(part.get("containers") or []), *(part.get("initContainers") or [])]:
            for name in _env(container):
                if name in BLOCKED_ENV_VARS:
                    return f'setting {name} in container "{container.get("name")}" is not allowed for security reasons'
    return None


def validate_collocation_storage_uri(predictor: Mapping[str, Any]) -> str | None:
    """V: ``validateCollocationStorageURI``: a collocated transformer container carries no STORAGE_URI."""
    for container in predictor.get("containers") or []:
        if container.get("name") == TRANSFORMER_CONTAINER:
            return (
                "storage uri should not be specified in transformer container"
                if STORAGE_URI_ENV in _env(container)
                else None
            )
    return None


def predictor_implementations(predictor: Mapping[str, Any]) -> list[str]:
    """P: ``PredictorSpec.GetImplementations``: the framework fields set, plus ``custom`` for the containers.

    Args:
        predictor: ``spec.predictor``.

    Returns:
        The implementation names, in KServe's order.
    """
    found = [name for name in PREDICTOR_FRAMEWORKS if predictor.get(name) is not None]
    containers = predictor.get("containers") or []
    found += ["custom" for c in containers if c.get("name") == KSERVE_CONTAINER]
    if containers and not found:
        found.append("custom")
    return found


def validate_exactly_one_implementation(predictor: Mapping[str, Any]) -> str | None:
    """C: ``validateExactlyOneImplementation``: one predictor implementation, no more, no less."""
    found = predictor_implementations(predictor)
    return None if len(found) == 1 else f"exactly one of [...] must be specified in PredictorSpec (found {found})"


def validate_custom_protocol(predictor: Mapping[str, Any]) -> str | None:
    """P: ``CustomPredictor.validateCustomProtocol``: the first container's PROTOCOL env, if any, is v1 or v2."""
    containers = predictor.get("containers") or [{}]
    protocol = _env(containers[0]).get(PROTOCOL_ENV)
    return None if protocol in (None, "v1", "v2") else f"invalid protocol {protocol}. Must be one of [v1, v2]"


def validate_component_extension(ext: Mapping[str, Any]) -> str | None:
    """C: ``ComponentExtensionSpec.Validate``: validateContainerConcurrency, validateReplicas, validateLogger."""
    if (ext.get("containerConcurrency") or 0) < 0:
        return "parallelism cannot be less than 0"
    minimum, maximum = ext.get("minReplicas", 1), ext.get("maxReplicas", 0)
    if minimum < 0:
        return "'MinReplicas' cannot be less than 0"
    if maximum < 0:
        return "'MaxReplicas' cannot be less than 0"
    if minimum > maximum and maximum != 0:
        return "'MinReplicas' cannot be greater than MaxReplicas"
    logger = ext.get("logger")
    if logger is not None and logger.get("mode") not in ("all", "request", "response"):
        return "invalid logger type"
    return None


def validate_scaling_hpa_comp_extension(ext: Mapping[str, Any]) -> str | None:
    """V: ``validateScalingHPACompExtension`` (with ``validateHPAMetrics``): cpu or memory, target 1-100.

    Go's ``metric == MetricCPU && target < 1 || target > 100`` binds as ``(cpu and < 1) or > 100``: any HPA target
    above 100 is refused, memory's too.
    """
    metric = ext.get("scaleMetric") or "cpu"
    if metric not in HPA_METRICS:
        return f"[{metric}] is not a supported metric"
    target = ext.get("scaleTarget")
    if target is not None:
        if (metric == "cpu" and target < 1) or target > 100:
            return "the target utilization percentage should be a [1-100] integer"
        if metric == "memory" and target < 1:
            return "the target memory should be greater than 1 MiB"
    for spec in (ext.get("autoScaling") or {}).get("metrics") or []:
        if spec.get("type") != "Resource":
            return (
                f"invalid HPA metric source type with value [{spec.get('type')}],valid metric source types are Resource"
            )
        if spec.get("resource") is None:
            return "metricSpec.Resource is not set for resource metric source type"
    return None


def validate_scaling_keda_comp_extension(ext: Mapping[str, Any]) -> str | None:
    """V: ``validateScalingKedaCompExtension`` (its first rule): KEDA takes ``autoScaling.metrics``, no scaleMetric."""
    return "ScaleMetric is not supported for KEDA" if ext.get("scaleMetric") is not None else None


def validate_scaling_kpa_comp_extension(ext: Mapping[str, Any]) -> str | None:
    """V: ``validateScalingKPACompExtension`` (with ``validateKPAMetrics``): concurrency or rps, never cpu/memory."""
    if ext.get("deploymentStrategy") is not None:
        return "customizing deploymentStrategy is only supported for raw deployment mode"
    metric = ext.get("scaleMetric") or "concurrency"
    if metric not in KPA_METRICS:
        return f"[{metric}] is not a supported metric"
    if metric == "rps" and ext.get("scaleTarget") is not None and ext["scaleTarget"] < 1:
        return "the target for rps should be greater than 1"
    return None


def validate_auto_scaling_comp_extension(annotations: Mapping[str, str], ext: Mapping[str, Any]) -> str | None:
    """V: ``validateAutoScalingCompExtension``: which scaling rules apply, by the *raw* deployment-mode annotation.

    Only the literal ``Standard`` selects the HPA (``autoscalerClass: hpa``) or KEDA rules; every other value,
    the legacy ``RawDeployment`` included, gets Knative's: the HPA rules with Knative's HPA class annotation,
    else the KPA rules, which refuse cpu and memory.
    """
    mode = annotations.get(DEPLOYMENT_MODE, "")
    if mode == STANDARD:
        if annotations.get(AUTOSCALER_CLASS) == "hpa":
            return validate_scaling_hpa_comp_extension(ext)
        if annotations.get(AUTOSCALER_CLASS) == "keda":
            return validate_scaling_keda_comp_extension(ext)
        return None
    if annotations.get(KNATIVE_CLASS) == KNATIVE_HPA:
        return validate_scaling_hpa_comp_extension(ext)
    return validate_scaling_kpa_comp_extension(ext)


def validate_multiple_storage_uris(predictor: Mapping[str, Any]) -> str | None:
    """V: ``validateMultipleStorageURIs`` (predictor): not both a storage URI and ``storageUris``.

    For a custom predictor the storage URI is kserve-container's STORAGE_URI env (P: ``CustomPredictor.GetStorageUri``).
    """
    containers = [c for c in predictor.get("containers") or [] if c.get("name") == KSERVE_CONTAINER]
    has_uri = bool(containers) and STORAGE_URI_ENV in _env(containers[0])
    if has_uri and predictor.get("storageUris") is not None:
        return "Setting both StorageURI and StorageURIs is not supported."
    return None


def validate_deployment_mode(new: Mapping[str, Any], status_mode: str) -> str | None:
    """V: ``validateDeploymentMode`` (updates only): the annotation must equal the mode recorded in the status.

    The status side is normalised (``ParseDeploymentMode``), the annotation is not: an unchanged legacy alias is
    refused on every update (kserve/kserve#5885), the canary patches of the rollout step included.

    Args:
        new: The InferenceService as updated.
        status_mode: ``status.deploymentMode`` of the stored object ('' before the controller records it).
    """
    recorded = parse_deployment_mode(status_mode) if status_mode else ""
    annotation = _annotations(new).get(DEPLOYMENT_MODE)
    if recorded and annotation is not None and annotation != recorded:
        return f"update rejected: deploymentMode cannot be changed from '{recorded}' to '{annotation}'"
    return None


def validate_inference_service(isvc: Mapping[str, Any]) -> list[str]:
    """V: ``validateInferenceService`` on the predictor (the chart renders no transformer or explainer).

    KServe stops at the first error; this returns them all, in KServe's order.

    Args:
        isvc: The InferenceService after the mutating webhook.

    Returns:
        The error messages; empty when KServe admits it.
    """
    predictor = _predictor(isvc)
    checks = [
        validate_inference_service_name(isvc),
        validate_inference_service_autoscaler(isvc),
        validate_blocked_env_vars(isvc),
        validate_collocation_storage_uri(predictor),
        validate_multiple_storage_uris(predictor),
        validate_exactly_one_implementation(predictor),
        validate_custom_protocol(predictor),
        validate_component_extension(predictor),
        validate_auto_scaling_comp_extension(_annotations(isvc), predictor),
    ]
    return [error for error in checks if error]


def admit(isvc: Mapping[str, Any], *, update: bool = False) -> list[str]:
    """Create (and optionally re-apply) an InferenceService through KServe's mutating and validating webhooks.

    Args:
        isvc: The rendered InferenceService.
        update: Also check an update with the same annotations once the controller recorded the mode in the status
            (every ``helm upgrade`` and every rollout patch is one).

    Returns:
        The error messages; empty when KServe admits it.
    """
    defaulted = default_inference_service(isvc)
    errors = validate_inference_service(defaulted)
    if update:
        recorded = parse_deployment_mode(_annotations(defaulted).get(DEPLOYMENT_MODE, ""))
        errors += [e for e in [validate_deployment_mode(defaulted, recorded)] if e]
    return errors


# --------------------------------------------------------------------------------- U, R: the controller


def validate_storage_uri(uri: str | None) -> str | None:
    """U: ``ValidateStorageURI`` (reconcile, without ClusterStorageContainer CRs): a form the storage initializer reads.

    A local path (no scheme), an Azure Blob URL ``https://<account>.blob.core.windows.net/<container>/...``, or one
    of the supported prefixes; ``az://`` is not one.
    """
    if uri is None or not re.search(r"\w+?://", uri):
        return None
    if "blob.core.windows.net" in uri:
        return None if AZURE_BLOB.search(uri) else f"storageUri [{uri}] is not supported"
    if uri.startswith(STORAGE_URI_PREFIXES):
        return None
    return f"storageUri, must be one of: [{', '.join(STORAGE_URI_PREFIXES)}] ... StorageUri [{uri}] is not supported"


def storage_uri(isvc: Mapping[str, Any]) -> str | None:
    """P: ``CustomPredictor.GetStorageUri``: kserve-container's STORAGE_URI env."""
    for container in _predictor(isvc).get("containers") or []:
        if container.get("name") == KSERVE_CONTAINER:
            value = _env(container).get(STORAGE_URI_ENV)
            return None if value is None else str(value)
    return None


def canary_is_served(isvc: Mapping[str, Any]) -> str | None:
    """R: ``createKnativeService`` is the only reader of canaryTrafficPercent; outside Knative mode it is ignored.

    KServe admits the field in Standard mode and silently rolls out 100 % (kserve/kserve#5335); v0.20's
    ``spec.canary`` is a different API the rollout step does not use.
    """
    if _predictor(isvc).get("canaryTrafficPercent") is None:
        return None
    mode = parse_deployment_mode(_annotations(default_inference_service(isvc)).get(DEPLOYMENT_MODE, ""))
    return None if mode == KNATIVE else f"canaryTrafficPercent is ignored in {mode} mode: no traffic is split"
