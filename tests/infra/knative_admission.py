"""Knative Serving's admission rules for the revision KServe makes of a Knative-mode InferenceService.

In Knative mode KServe turns the predictor into a Knative Service: the pod spec as it is, and the InferenceService's
annotations plus the autoscaling ones it derives (:func:`revision_annotations`) on the revision template. Knative's
webhook then checks both. Each function mirrors one Go function, named in its docstring, and returns Knative's
error message, or None.

Sources, at the revisions the code index holds:

* ``R``: kserve/kserve pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go
  (``setAutoScalingAnnotations``)
* ``S``: knative/serving pkg/apis/serving/k8s_validation.go (``validateContainersPorts``,
  ``validateContainerPorts``, ``validateContainerPortBasic``, ``validateProbe``)
* ``A``: knative/serving pkg/apis/autoscaling/annotation_validation.go (``validateClass``, ``validateMetric``,
  ``validateMinMaxScale``, ``validateFloats``)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.infra.kserve_admission import KNATIVE_CLASS

KPA = "kpa.autoscaling.knative.dev"  # A: autoscaling.KPA
HPA = "hpa.autoscaling.knative.dev"  # A: autoscaling.HPA
METRIC = "autoscaling.knative.dev/metric"
TARGET = "autoscaling.knative.dev/target"
MIN_SCALE = "autoscaling.knative.dev/min-scale"
MAX_SCALE = "autoscaling.knative.dev/max-scale"
#: S: validPortNames (content negotiation: HTTP/1 or cleartext HTTP/2 to the container).
PORT_NAMES = ("h2c", "http1", "")
#: S: reservedPorts: queue-proxy HTTP/1 and HTTP/2 (8012, 8013), admin (8022), autoscaler and user metrics
#: (9090, 9091), profiling (8008).
RESERVED_PORTS = (8012, 8013, 8022, 9090, 9091, 8008)
TARGET_MIN = 0.01  # A: autoscaling.TargetMin


def revision_annotations(isvc: Mapping[str, Any]) -> dict[str, str]:
    """R: ``setAutoScalingAnnotations``: what KServe writes on the revision for Knative's autoscaler.

    Args:
        isvc: A Knative-mode InferenceService.

    Returns:
        The revision template's annotations (the InferenceService's, then KPA unless a class is given, the
        predictor's scaleTarget/scaleMetric as target/metric, and min/max scale).
    """
    predictor = isvc["spec"]["predictor"]
    out = dict(isvc["metadata"].get("annotations") or {}) | dict(predictor.get("annotations") or {})
    out.setdefault(KNATIVE_CLASS, KPA)
    if predictor.get("scaleTarget") is not None:
        out[TARGET] = str(predictor["scaleTarget"])
    if predictor.get("scaleMetric") is not None:
        out[METRIC] = str(predictor["scaleMetric"])
    out[MIN_SCALE] = str(predictor.get("minReplicas", 1))
    if predictor.get("maxReplicas"):
        out[MAX_SCALE] = str(predictor["maxReplicas"])
    return out


def validate_class(annotations: Mapping[str, str]) -> str | None:
    """A: ``validateClass``: a class in Knative's domain is KPA or HPA."""
    value = annotations.get(KNATIVE_CLASS)
    if value is not None and value.endswith("autoscaling.knative.dev") and value not in (KPA, HPA):
        return f"invalid value: {value}: {KNATIVE_CLASS}"
    return None


def validate_metric(annotations: Mapping[str, str]) -> str | None:
    """A: ``validateMetric``: KPA scales on concurrency or rps; HPA on any named metric (cpu, memory, custom)."""
    if METRIC not in annotations:
        return None
    metric, cls = annotations[METRIC], annotations.get(KNATIVE_CLASS, KPA)
    if (cls == KPA and metric not in ("concurrency", "rps")) or (cls == HPA and not metric):
        return f"invalid value: {metric}: {METRIC}"
    return None


def validate_min_max_scale(annotations: Mapping[str, str]) -> str | None:
    """A: ``validateMinMaxScale`` (without the cluster's max-scale-limit): max 0 (unbounded) or at least min."""
    low, high = int(annotations.get(MIN_SCALE, 0)), int(annotations.get(MAX_SCALE, 0))
    if low < 0 or high < 0:
        return "expected 0 <= value <= 2147483647: min-scale/max-scale"
    if high != 0 and high < low:
        return f"max-scale={high} is less than min-scale={low}"
    return None


def validate_target(annotations: Mapping[str, str]) -> str | None:
    """A: ``validateFloats`` (the target): a number of at least 0.01."""
    if TARGET in annotations and float(annotations[TARGET]) < TARGET_MIN:
        return f"target {annotations[TARGET]} should be at least {TARGET_MIN:g}"
    return None


def validate_containers_ports(containers: list[Mapping[str, Any]]) -> str | None:
    """S: ``validateContainersPorts``: a single port across all containers (Knative routes one port)."""
    if sum(len(c.get("ports") or []) for c in containers) > 1:
        return "more than one container port is set: Only a single port is allowed across all containers"
    return None


def validate_container_ports(ports: list[Mapping[str, Any]]) -> str | None:
    """S: ``validateContainerPorts`` with ``validateContainerPortBasic``: name h2c/http1, TCP, not reserved."""
    if not ports:
        return None
    port = ports[0]
    if port.get("containerPort") in RESERVED_PORTS:
        return f"{port['containerPort']} is a reserved port"
    if port.get("protocol", "TCP") != "TCP":
        return f"invalid value: {port['protocol']}: protocol"
    if port.get("name", "") not in PORT_NAMES:
        return f"Port name {port['name']} is not allowed: Name must be empty, or one of: 'h2c', 'http1'"
    return None


def validate_probe(probe: Mapping[str, Any] | None, port: Mapping[str, Any]) -> str | None:
    """S: ``validateProbe``: one handler; a named httpGet/tcpSocket port must be the serving port's name."""
    if probe is None:
        return None
    handlers = [h for h in ("httpGet", "tcpSocket", "exec", "grpc") if h in probe]
    if len(handlers) != 1:
        return f"expected exactly one, got {handlers or 'neither'}: httpGet, tcpSocket, exec, grpc"
    action = probe.get("httpGet") or probe.get("tcpSocket") or {}
    named = action.get("port")
    if isinstance(named, str) and named != (port.get("name") or "http"):
        return f"invalid value: {named}: {handlers[0]}.port: Probe port must match container port"
    return None


def admit_revision(isvc: Mapping[str, Any]) -> list[str]:
    """Knative's webhook on the revision KServe makes of a Knative-mode InferenceService's predictor.

    Args:
        isvc: The rendered InferenceService (Knative mode).

    Returns:
        The error messages; empty when Knative admits the revision.
    """
    containers = isvc["spec"]["predictor"].get("containers") or []
    serving = next((c for c in containers if c.get("ports")), containers[0] if containers else {})
    port = (serving.get("ports") or [{}])[0]
    annotations = revision_annotations(isvc)
    checks = [
        validate_class(annotations),
        validate_metric(annotations),
        validate_min_max_scale(annotations),
        validate_target(annotations),
        validate_containers_ports(containers),
        *(validate_container_ports(c.get("ports") or []) for c in containers),
        validate_probe(serving.get("livenessProbe"), port),
        validate_probe(serving.get("readinessProbe"), port),
    ]
    return [error for error in checks if error]
