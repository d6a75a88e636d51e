"""The transcribed KServe and Knative admission rules can fail: each rejects a hand-made bad InferenceService.

tests/infra/helm/test_admission.py runs every rendered InferenceService through the same rules; here each rule is
shown to reject what KServe (or Knative) rejects, and to admit the shape the chart renders.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.infra import knative_admission as kn
from tests.infra import kserve_admission as ka

Obj = dict[str, Any]


def isvc(mode: str = "Knative", **predictor: Any) -> Obj:
    """A minimal InferenceService shaped like the chart's: a custom predictor scaled on CPU."""
    annotations = {ka.DEPLOYMENT_MODE: mode}
    annotations |= {ka.KNATIVE_CLASS: ka.KNATIVE_HPA} if mode == "Knative" else {ka.AUTOSCALER_CLASS: "hpa"}
    ports = [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    if mode == "Standard":
        ports.append({"name": "grpc", "containerPort": 8081, "protocol": "TCP"})
    container = {
        "name": "kserve-container",
        "image": "registry.example/fraud-detection-serve:1",
        "ports": ports,
        "env": [{"name": "STORAGE_URI", "value": "s3://fraud-detection/models/fraud-detector/versions/1"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}, "periodSeconds": 5},
    }
    spec = {"minReplicas": 2, "maxReplicas": 10, "scaleMetric": "cpu", "scaleTarget": 70, "containers": [container]}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "fraud-detector", "annotations": annotations},
        "spec": {"predictor": spec | predictor},
    }


def edit(obj: Obj, change: Callable[[Obj], object]) -> Obj:
    out = copy.deepcopy(obj)
    change(out)
    return out


def annotate(key: str, value: str) -> Callable[[Obj], object]:
    return lambda o: o["metadata"]["annotations"].update({key: value})


def container(o: Obj) -> Obj:
    result: Obj = o["spec"]["predictor"]["containers"][0]
    return result


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_the_charts_shape_is_admitted(mode: str) -> None:
    good = isvc(mode)
    assert ka.admit(good, update=True) == []
    assert ka.validate_storage_uri(ka.storage_uri(good)) is None
    if mode == "Knative":
        assert kn.admit_revision(good) == []


# Each case: a bad InferenceService and the message KServe's webhook answers it with (ka.admit, create and update).
BAD: dict[str, tuple[Obj, str]] = {
    # The finding: Serverless/Knative with scaleMetric cpu and no Knative HPA class goes to the KPA rules.
    "cpu-without-knative-hpa-class": (
        edit(isvc(), lambda o: o["metadata"]["annotations"].pop(ka.KNATIVE_CLASS)),
        "[cpu] is not a supported metric",
    ),
    # serving.kserve.io/autoscalerClass: hpa does not change that in Knative mode: the webhook reads Knative's class.
    "kserve-hpa-class-in-knative-mode": (
        edit(
            isvc(),
            lambda o: o["metadata"].update(annotations={ka.DEPLOYMENT_MODE: "Knative", ka.AUTOSCALER_CLASS: "hpa"}),
        ),
        "[cpu] is not a supported metric",
    ),
    # The legacy name RawDeployment is compared raw: not "Standard", so the KPA rules refuse cpu.
    "legacy-rawdeployment-with-cpu": (
        edit(isvc("Standard"), annotate(ka.DEPLOYMENT_MODE, "RawDeployment")),
        "[cpu] is not a supported metric",
    ),
    "unknown-autoscaler-class": (
        edit(isvc("Standard"), annotate(ka.AUTOSCALER_CLASS, "kpa")),
        "[kpa] is not a supported autoscaler class type",
    ),
    "hpa-target-over-100": (isvc(scaleTarget=150), "the target utilization percentage should be a [1-100] integer"),
    "hpa-memory-target-over-100": (
        isvc(scaleMetric="memory", scaleTarget=512),
        "the target utilization percentage should be a [1-100] integer",
    ),
    "hpa-rps": (isvc("Standard", scaleMetric="rps"), "[rps] is not a supported metric"),
    "kpa-rps-target-zero": (
        edit(isvc(scaleMetric="rps", scaleTarget=0), lambda o: o["metadata"]["annotations"].pop(ka.KNATIVE_CLASS)),
        "the target for rps should be greater than 1",
    ),
    "kpa-deployment-strategy": (
        edit(
            isvc(scaleMetric="concurrency", deploymentStrategy={"type": "Recreate"}),
            lambda o: o["metadata"]["annotations"].pop(ka.KNATIVE_CLASS),
        ),
        "customizing deploymentStrategy is only supported for raw deployment mode",
    ),
    "keda-with-scale-metric": (
        edit(isvc("Standard"), annotate(ka.AUTOSCALER_CLASS, "keda")),
        "ScaleMetric is not supported for KEDA",
    ),
    "bad-name": (edit(isvc(), lambda o: o["metadata"].update(name="Fraud_Detector")), "is invalid"),
    "min-over-max": (isvc(minReplicas=5, maxReplicas=2), "'MinReplicas' cannot be greater than MaxReplicas"),
    "negative-concurrency": (isvc(containerConcurrency=-1), "parallelism cannot be less than 0"),
    "bad-logger": (isvc(logger={"mode": "everything"}), "invalid logger type"),
    "pythonpath": (
        edit(isvc(), lambda o: container(o)["env"].append({"name": "PYTHONPATH", "value": "/x"})),
        "setting PYTHONPATH in container",
    ),
    "bad-protocol": (
        edit(isvc(), lambda o: container(o)["env"].append({"name": "PROTOCOL", "value": "grpc-v2"})),
        "invalid protocol grpc-v2",
    ),
    "two-implementations": (isvc(sklearn={"storageUri": "s3://b/m"}), "exactly one of"),
    "storage-uri-and-storage-uris": (
        isvc(storageUris=[{"uri": "s3://b/m", "mountPath": "/mnt/models"}]),
        "Setting both StorageURI and StorageURIs is not supported.",
    ),
    "transformer-with-storage-uri": (
        edit(
            isvc(),
            lambda o: o["spec"]["predictor"]["containers"].append(
                {"name": "transformer-container", "env": [{"name": "STORAGE_URI", "value": "s3://b/m"}]}
            ),
        ),
        "storage uri should not be specified in transformer container",
    ),
}


@pytest.mark.parametrize(("bad", "message"), BAD.values(), ids=BAD.keys())
def test_each_kserve_rule_rejects_a_bad_spec(bad: Obj, message: str) -> None:
    errors = ka.admit(bad)
    assert any(message in e for e in errors), errors


def test_a_legacy_mode_is_refused_on_every_update() -> None:
    """validateDeploymentMode: created as Serverless, recorded as Knative, so re-applying Serverless is refused."""
    legacy = edit(isvc(), annotate(ka.DEPLOYMENT_MODE, "Serverless"))
    assert ka.admit(legacy) == []  # the create passes ...
    assert ka.admit(legacy, update=True) == [
        "update rejected: deploymentMode cannot be changed from 'Knative' to 'Serverless'"
    ]  # ... every later patch, the rollout's canary patches included, does not
    assert ka.validate_deployment_mode(isvc(), "Serverless") is None  # the current name matches the recorded one


def test_the_mutating_webhook_writes_the_default_mode() -> None:
    bare = edit(isvc("Standard"), lambda o: o["metadata"]["annotations"].pop(ka.DEPLOYMENT_MODE))
    assert ka.default_inference_service(bare)["metadata"]["annotations"][ka.DEPLOYMENT_MODE] == "Standard"
    assert ka.DEPLOYMENT_MODE not in ka.default_inference_service(bare, "Knative")["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("s3://fraud-detection/models/m/versions/1", True),
        ("https://acct.blob.core.windows.net/models/models/m/versions/1", True),
        ("/mnt/local/model", True),
        ("az://models/models/m/versions/1", False),
        ("https://acct.blob.core.windows.net", False),
        ("ftp://host/model", False),
    ],
)
def test_storage_uri_forms(uri: str, ok: bool) -> None:
    assert (ka.validate_storage_uri(uri) is None) is ok


def test_canary_is_only_served_in_knative_mode() -> None:
    standard = isvc("Standard", canaryTrafficPercent=10)
    assert ka.admit(standard) == []  # KServe admits it ...
    assert ka.canary_is_served(standard) == "canaryTrafficPercent is ignored in Standard mode: no traffic is split"
    assert ka.canary_is_served(isvc(canaryTrafficPercent=10)) is None


# Each case: a Knative-mode InferenceService whose revision Knative's webhook rejects (kn.admit_revision).
KNATIVE_BAD: dict[str, tuple[Obj, str]] = {
    "two-ports": (
        edit(isvc(), lambda o: container(o)["ports"].append({"name": "grpc", "containerPort": 8081})),
        "more than one container port is set",
    ),
    "port-name": (
        edit(isvc(), lambda o: container(o)["ports"][0].update(name="grpc")),
        "Port name grpc is not allowed",
    ),
    "reserved-port": (
        edit(isvc(), lambda o: container(o)["ports"][0].update(containerPort=8012)),
        "8012 is a reserved port",
    ),
    "udp": (edit(isvc(), lambda o: container(o)["ports"][0].update(protocol="UDP")), "protocol"),
    "named-probe-port": (
        edit(isvc(), lambda o: container(o)["readinessProbe"]["httpGet"].update(port="metrics")),
        "Probe port must match container port",
    ),
    "two-probe-handlers": (
        edit(isvc(), lambda o: container(o)["readinessProbe"].update(tcpSocket={"port": 8080})),
        "expected exactly one",
    ),
    "kpa-with-cpu": (
        edit(isvc(), annotate(ka.KNATIVE_CLASS, kn.KPA)),
        "invalid value: cpu: autoscaling.knative.dev/metric",
    ),
    "unknown-knative-class": (
        edit(isvc(), annotate(ka.KNATIVE_CLASS, "foo.autoscaling.knative.dev")),
        "invalid value: foo.autoscaling.knative.dev",
    ),
    "max-under-min": (isvc(minReplicas=5, maxReplicas=2), "max-scale=2 is less than min-scale=5"),
}


@pytest.mark.parametrize(("bad", "message"), KNATIVE_BAD.values(), ids=KNATIVE_BAD.keys())
def test_each_knative_rule_rejects_a_bad_revision(bad: Obj, message: str) -> None:
    errors = kn.admit_revision(bad)
    assert any(message in e for e in errors), errors


def test_kserve_derives_the_knative_autoscaling_annotations() -> None:
    annotations = kn.revision_annotations(isvc())
    assert annotations[ka.KNATIVE_CLASS] == kn.HPA
    assert (annotations[kn.METRIC], annotations[kn.TARGET]) == ("cpu", "70")
    assert (annotations[kn.MIN_SCALE], annotations[kn.MAX_SCALE]) == ("2", "10")
    bare = edit(isvc(), lambda o: o["metadata"]["annotations"].pop(ka.KNATIVE_CLASS))
    assert kn.revision_annotations(bare)[ka.KNATIVE_CLASS] == kn.KPA  # KServe's default class
