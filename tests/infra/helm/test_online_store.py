"""The online feature store: off by default, Redis in the chart, or an external Redis (Azure Cache for Redis)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests import k8s
from tests.infra.helm.chart import Render, kinds_and_names, serve_container

pytestmark = pytest.mark.integration

ONLINE = ("ci/online-store-values.yaml",)
REDIS = "fraud-detection-redis"
REDIS_URL = f"redis://{REDIS}-0.{REDIS}.{k8s.NAMESPACE}.svc:6379/0"
PASSWORD_REF = {"secretKeyRef": {"name": "fraud-online-store", "key": "password"}}
EXTERNAL = (
    "onlineStore.url=rediss://fraud-cache.redis.cache.windows.net:6380/0",
    "onlineStore.passwordSecret.name=azure-redis",
    "onlineStore.passwordSecret.key=primary",
)
ONLINE_ENV = {"FRAUD_ONLINE_STORE", "FRAUD_ONLINE_STORE_PASSWORD", "FRAUD_ONLINE_STORE_UNAVAILABLE"}


def redis_objects(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(k, n) for k, n in kinds_and_names(objects) if "redis" in n}


def statefulset(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return k8s.one(objects, "StatefulSet", REDIS)


def redis_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = statefulset(objects)["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(
    "values",
    [(), ("ci/all-enabled-values.yaml",), ("ci/minimal-values.yaml",), ("ci/raw-deployment-values.yaml",)],
    ids=["default", "all-enabled-without-redis", "minimal", "raw-deployment"],
)
def test_off_by_default(render: Render, values: tuple[str, ...]) -> None:
    sets = ("onlineStore.redis.enabled=false",) if values else ()
    objects = render(values, sets)
    assert redis_objects(objects) == set()
    assert not k8s.find(objects, "StatefulSet")
    assert ONLINE_ENV.isdisjoint(k8s.env_of(serve_container(objects)))


def test_in_chart_redis_objects(render: Render) -> None:
    objects = render(ONLINE)
    assert k8s.validate_all(objects) == []
    assert redis_objects(objects) == {("StatefulSet", REDIS), ("Service", REDIS), ("NetworkPolicy", REDIS)}
    sts = statefulset(objects)
    spec = sts["spec"]
    assert spec["replicas"] == 2  # the ci file adds a replica; the default is one
    assert spec["serviceName"] == REDIS
    assert spec["selector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["storageClassName"] == "managed-csi"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    container = redis_container(objects)
    assert container["image"] == "docker.io/library/redis:7.4.2-bookworm"
    script = container["command"][-1]
    for flag in ("--appendonly yes", "--dir /data", "--maxmemory-policy noeviction", '--requirepass "$REDIS_PASSWORD"'):
        assert flag in script, flag
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("redis", 6379)]
    for probe in ("livenessProbe", "readinessProbe"):
        assert "redis-cli" in " ".join(container[probe]["exec"]["command"]), probe
        assert " -a " not in " ".join(container[probe]["exec"]["command"]), "password on the command line"
    env = k8s.env_of(container)
    assert env["REDIS_PASSWORD"] == PASSWORD_REF
    assert env["REDISCLI_AUTH"] == PASSWORD_REF
    service = k8s.one(objects, "Service", REDIS)
    assert service["spec"]["clusterIP"] == "None"
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(6379, "redis")]
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]


def test_default_redis_is_one_replica_with_defaults(render: Render) -> None:
    objects = render(sets=("onlineStore.redis.enabled=true",))
    spec = statefulset(objects)["spec"]
    assert spec["replicas"] == 1
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert "storageClassName" not in claim["spec"]
    env = k8s.env_of(serve_container(objects))
    assert env["FRAUD_ONLINE_STORE_UNAVAILABLE"] == "reject"
    assert k8s.validate_all(objects) == []


def test_predictor_points_at_the_in_chart_redis(render: Render) -> None:
    objects = render(ONLINE)
    env = k8s.env_of(serve_container(objects))
    assert env["FRAUD_ONLINE_STORE"] == REDIS_URL
    assert env["FRAUD_ONLINE_STORE_PASSWORD"] == PASSWORD_REF
    assert env["FRAUD_ONLINE_STORE_UNAVAILABLE"] == "degraded"
    # The URL names pod 0 of the StatefulSet through its headless Service.
    assert REDIS_URL.startswith(f"redis://{statefulset(objects)['metadata']['name']}-0.{REDIS}.")
    # The predictor may reach Redis when egress is restricted.
    egress = k8s.one(objects, "NetworkPolicy", "fraud-detection-predictor")["spec"]["egress"]
    assert {
        "to": [{"podSelector": {"matchLabels": statefulset(objects)["spec"]["selector"]["matchLabels"]}}],
        "ports": [{"protocol": "TCP", "port": 6379}],
    } in egress


def test_only_the_model_server_reaches_redis(render: Render) -> None:
    objects = render(ONLINE)
    policy = k8s.one(objects, "NetworkPolicy", REDIS)["spec"]
    assert policy["podSelector"] == statefulset(objects)["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    peers = rule["from"]
    assert {"podSelector": {"matchLabels": {"serving.kserve.io/inferenceservice": "fraud-detector"}}} in peers
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "fraud-online-materialize"}}} in peers
    assert all("namespaceSelector" not in peer for peer in peers), "no other namespace"
    assert len(peers) == 3  # the predictor, the other Redis pods (replication), the configured client
    # Redis itself talks only to DNS and its own pods.
    ports = [p["port"] for rule in policy["egress"] for p in rule["ports"]]
    assert sorted(set(ports)) == [53, 6379]


def test_redis_pod_is_hardened(render: Render) -> None:
    objects = render(ONLINE)
    pod = statefulset(objects)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == 1000  # the PVC is writable by the non-root uid
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = redis_container(objects)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    resources = redis_container(objects)["resources"]
    assert resources["limits"]["memory"] and resources["requests"]["cpu"]
    annotations = statefulset(objects)["metadata"]["annotations"]
    reasons = " ".join(annotations.values())
    assert "CKV_K8S_35=redis-server" in reasons and "CKV_K8S_40=Redis runs" in reasons


def test_external_redis(render: Render) -> None:
    objects = render(sets=(*EXTERNAL, "onlineStore.whenUnavailable=degraded", "networkPolicy.egress.enabled=true"))
    assert redis_objects(objects) == set()
    assert not k8s.find(objects, "StatefulSet")
    env = k8s.env_of(serve_container(objects))
    assert env["FRAUD_ONLINE_STORE"] == "rediss://fraud-cache.redis.cache.windows.net:6380/0"
    assert env["FRAUD_ONLINE_STORE_PASSWORD"] == {"secretKeyRef": {"name": "azure-redis", "key": "primary"}}
    assert env["FRAUD_ONLINE_STORE_UNAVAILABLE"] == "degraded"
    egress = k8s.one(objects, "NetworkPolicy", "fraud-detection-predictor")["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 6380}]} in egress
    assert k8s.validate_all(objects) == []


def test_values_aks_use_the_azure_cache(render: Render) -> None:
    objects = render(("values-aks.yaml",))
    assert redis_objects(objects) == set()
    env = k8s.env_of(serve_container(objects))
    assert env["FRAUD_ONLINE_STORE"] == "rediss://<redis-host>:6380/0"
    assert env["FRAUD_ONLINE_STORE_PASSWORD"] == PASSWORD_REF


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("onlineStore.whenUnavailable=ignore",), "whenUnavailable"),
        (("onlineStore.url=https://cache.example.com",), "url"),
        (("onlineStore.url=redis://user:hunter2@cache:6379/0",), "url"),
        (("onlineStore.redis.enabled=true", "onlineStore.url=redis://cache:6379/0"), "onlineStore"),
        (("onlineStore.redis.enabled=true", "onlineStore.passwordSecret.name="), "name"),
        (("onlineStore.url=rediss://cache:6380/0", "onlineStore.passwordSecret.name="), "name"),
        (("onlineStore.redis.replicas=0",), "replicas"),
        (("onlineStore.redis.password=hunter2",), "password"),
    ],
    ids=[
        "bad-when-unavailable", "bad-scheme", "credentials-in-url", "both-modes", "no-secret-in-chart",
        "no-secret-external", "no-replicas", "no-literal-password",
    ],
)  # fmt: skip
def test_invalid_online_store_values_are_rejected(chart: Path, sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(k8s.ToolError, match=message):
        k8s.helm_template(chart, set_values=sets)


@pytest.mark.parametrize("values", [ONLINE, ("values-aks.yaml",)], ids=["in-chart", "aks"])
def test_no_secret_value_is_rendered(chart: Path, values: tuple[str, ...]) -> None:
    args = ["helm", "template", k8s.RELEASE, str(chart), "-n", k8s.NAMESPACE]
    for v in values:
        args += ["-f", str(chart / v)]
    text = k8s.run_tool(args)
    objects = k8s.load_documents(text)
    assert not k8s.find(objects, "Secret")
    # redis-server gets its password from the environment only.
    assert set(re.findall(r"--(?:requirepass|masterauth)\s+(\S+)", text)) <= {'"$REDIS_PASSWORD"'}
    for template in k8s.pod_templates(objects):
        for container in template.spec["containers"]:
            for env in container.get("env", []):
                if "PASSWORD" in env["name"] or env["name"] == "REDISCLI_AUTH":
                    assert set(env) == {"name", "valueFrom"}, (template.owner, env["name"])
                    assert set(env["valueFrom"]) == {"secretKeyRef"}
