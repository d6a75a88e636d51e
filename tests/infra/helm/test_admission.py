"""Every InferenceService the chart renders passes KServe's and Knative's admission rules (tests/infra/*_admission.py).

The CRD schema (test_render.py) checks shapes only; these rules are what KServe's webhook refuses at ``helm install``
and at every later update (the rollout's canary patches included). Each values set is rendered, and each rendered
InferenceService is created and re-applied through the rules; Knative-mode ones also through Knative's revision rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import k8s
from tests.infra import knative_admission as kn
from tests.infra import kserve_admission as ka
from tests.infra.helm.chart import VALUE_SETS, Render, predictor, serve_container

pytestmark = pytest.mark.integration

#: Every shipped values set, the gRPC release over the AKS values, and the autoscaling variants the values allow.
RENDERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    **{name: (values, ()) for name, values in VALUE_SETS.items()},
    "aks+grpc": (("values-aks.yaml", "values-grpc.yaml"), ()),
    "legacy-serverless": ((), ("inferenceService.deploymentMode=Serverless",)),
    "knative-memory": ((), ("inferenceService.scaleMetric=memory", "inferenceService.scaleTarget=80")),
    "knative-concurrency": ((), ("inferenceService.scaleMetric=concurrency", "inferenceService.scaleTarget=150")),
    "knative-rps": (
        ("ci/canary-values.yaml",),
        ("inferenceService.scaleMetric=rps", "inferenceService.scaleTarget=200"),
    ),
    "standard-memory": ((), ("inferenceService.deploymentMode=Standard", "inferenceService.scaleMetric=memory")),
}


def isvcs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return k8s.find(objects, "InferenceService")


@pytest.mark.parametrize(("values", "sets"), RENDERS.values(), ids=RENDERS.keys())
def test_every_rendered_inference_service_is_admitted(render: Render, values: tuple[str, ...], sets: tuple[str, ...]):
    rendered = isvcs(render(values, sets))
    assert rendered, "every values set renders an InferenceService"
    for isvc in rendered:
        assert ka.admit(isvc, update=True) == [], k8s.describe(isvc)
        assert ka.validate_storage_uri(ka.storage_uri(isvc)) is None
        assert ka.canary_is_served(isvc) is None
        mode = isvc["metadata"]["annotations"][ka.DEPLOYMENT_MODE]
        assert mode in (ka.KNATIVE, ka.STANDARD), "current names only: KServe compares the legacy ones raw"
        if mode == ka.KNATIVE:
            assert kn.admit_revision(isvc) == [], k8s.describe(isvc)


def test_canary_and_cpu_autoscaling_together(render: Render) -> None:
    """The 10 % canary and 2-10 replicas at 70 % CPU in one InferenceService: Knative mode with Knative's HPA class."""
    objects = render(("ci/canary-values.yaml",))
    (isvc,) = isvcs(objects)
    assert isvc["metadata"]["annotations"][ka.DEPLOYMENT_MODE] == "Knative"
    spec = predictor(objects)
    assert spec["canaryTrafficPercent"] == 10
    revision = kn.revision_annotations(isvc)
    assert revision[ka.KNATIVE_CLASS] == kn.HPA
    assert (revision[kn.METRIC], revision[kn.TARGET], revision[kn.MIN_SCALE], revision[kn.MAX_SCALE]) == (
        "cpu", "70", "2", "10",
    )  # fmt: skip
    # What the chart rendered before: Serverless, cpu and no class annotation, which KServe refuses.
    before = {**isvc, "metadata": {**isvc["metadata"], "annotations": {ka.DEPLOYMENT_MODE: "Serverless"}}}
    assert ka.admit(before) == ["[cpu] is not a supported metric"]


@pytest.mark.parametrize(
    ("sets", "mode", "cls"),
    [
        (("inferenceService.deploymentMode=Serverless",), "Knative", kn.HPA),
        (("inferenceService.deploymentMode=RawDeployment",), "Standard", None),
        (("inferenceService.scaleMetric=concurrency",), "Knative", kn.KPA),
    ],
    ids=["serverless-alias", "rawdeployment-alias", "kpa"],
)
def test_modes_and_classes_as_rendered(render: Render, sets: tuple[str, ...], mode: str, cls: str | None) -> None:
    annotations = isvcs(render(sets=sets))[0]["metadata"]["annotations"]
    assert annotations[ka.DEPLOYMENT_MODE] == mode
    assert annotations.get(ka.KNATIVE_CLASS) == cls
    assert annotations.get(ka.AUTOSCALER_CLASS) == (None if mode == "Knative" else "hpa")


def ports(objects: list[dict[str, Any]]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in serve_container(objects)["ports"]}


def test_grpc_is_offered_where_kserve_allows_it(render: Render) -> None:
    """Knative routes one port: REST there; Standard mode's Service carries gRPC too; values-grpc.yaml adds it."""
    assert ports(render()) == {"http1": 8080}
    assert ports(render(("ci/raw-deployment-values.yaml",))) == {"http1": 8080, "grpc": 8081}
    grpc = render(("values-aks.yaml", "values-grpc.yaml"))
    assert ports(grpc) == {"http1": 8080, "grpc": 8081}
    (isvc,) = isvcs(grpc)
    assert isvc["metadata"]["name"] == "fraud-detector-grpc"
    assert predictor(grpc)["serviceAccountName"] == "fraud-detection"  # the main release's store identity
    # Only what the second InferenceService needs: its own NetworkPolicy and PodMonitor select its pods, and on AKS
    # the SecretProviderClass its predictor mounts the Application Insights connection string from.
    kinds = {o["kind"] for o in grpc}
    assert kinds == {"InferenceService", "NetworkPolicy", "PodMonitor", "SecretProviderClass"}, kinds
    for kind in ("NetworkPolicy", "PodMonitor"):
        spec = k8s.one(grpc, kind)["spec"]
        selector = spec.get("podSelector", spec.get("selector"))
        assert selector["matchLabels"] == {"serving.kserve.io/inferenceservice": "fraud-detector-grpc"}
    assert k8s.env_of(serve_container(grpc))["STORAGE_URI"].startswith("https://<account>.blob.core.windows.net/")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("inferenceService.scaleTarget=150",), "must be 1-100 with scaleMetric cpu"),
        (("inferenceService.scaleMetric=memory", "inferenceService.scaleTarget=512"), "must be 1-100"),
        (("inferenceService.deploymentMode=Standard", "inferenceService.scaleMetric=concurrency"), "need Knative"),
        (("inferenceService.deploymentMode=Standard", "canary.enabled=true"), "canary.enabled needs"),
    ],
    ids=["cpu-target", "memory-target", "standard-kpa", "standard-canary"],
)
def test_the_chart_refuses_what_kserve_would_refuse_or_ignore(chart: Path, sets: tuple[str, ...], message: str):
    with pytest.raises(k8s.ToolError, match=message):
        k8s.helm_template(chart, (), sets)
