"""pipeline.nodePool: the drift job compiles its retraining runs for the spot pool only where the values say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import k8s
from tests.infra.helm.chart import Render, drift_container

pytestmark = pytest.mark.integration

POOL_ENV = ("FRAUD_TRAINING_NODE_SELECTOR", "FRAUD_TRAINING_TOLERATION")


def test_off_by_default(render: Render) -> None:
    env = k8s.env_of(drift_container(render()))
    assert not set(POOL_ENV) & env.keys()


def test_aks_values_put_the_retraining_runs_on_the_spot_pool(render: Render) -> None:
    env = k8s.env_of(drift_container(render(("values-aks.yaml",))))
    # infra/modules/aks.bicep: the training pool's label and taint.
    assert env["FRAUD_TRAINING_NODE_SELECTOR"] == "fraud-detection/pool=training"
    assert env["FRAUD_TRAINING_TOLERATION"] == "kubernetes.azure.com/scalesetpriority=spot:NoSchedule"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("pipeline.nodePool.toleration=dedicated:NoSchedule",), "needs pipeline.nodePool.nodeSelector"),
        (("pipeline.nodePool.nodeSelector=training",), "nodeSelector"),
        (("pipeline.nodePool.nodeSelector=a=b", "pipeline.nodePool.toleration=k:Sometimes"), "toleration"),
    ],
    ids=["toleration-alone", "selector-without-value", "bad-effect"],
)
def test_malformed_pools_are_refused(chart: Path, sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(k8s.ToolError, match=message):
        k8s.helm_template(chart, (), sets)
