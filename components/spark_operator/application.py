"""Build the feature job's SparkApplication (``sparkoperator.k8s.io/v1beta2``): a pure function of its inputs.

The driver runs :mod:`components.spark_operator.driver` in cluster mode with the input and output as S3A (or ABFS)
URIs; Spark's own master (the operator's ``spark-submit``) runs the executors. Store keys reach driver and executors
by ``secretKeyRef`` from the store Secret, never as values; an ``abfss://`` store (AKS) uses workload identity.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import urlparse

from components.spark_operator.settings import SECRET_KEYS, SparkSettings

GROUP, VERSION, PLURAL, KIND = "sparkoperator.k8s.io", "v1beta2", "sparkapplications", "SparkApplication"
API_VERSION = f"{GROUP}/{VERSION}"
#: Labels of every feature application (``kubectl get sparkapplications -l app.kubernetes.io/component=features``).
LABELS = {"app.kubernetes.io/name": "fraud-detection", "app.kubernetes.io/component": "features"}
_NAME_MAX = 63
#: The pod label AKS's workload identity webhook acts on: it mounts the federated token and sets ``AZURE_CLIENT_ID``,
#: ``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE`` and ``AZURE_AUTHORITY_HOST`` from the pod's service account
#: (annotated ``azure.workload.identity/client-id`` by the chart).
WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"
#: ABFS with AKS workload identity (Hadoop >= 3.4.1, HADOOP-18610). Key names as in hadoop-azure's
#: ``ConfigurationKeys`` (``FS_AZURE_ACCOUNT_AUTH_TYPE_PROPERTY_NAME``,
#: ``FS_AZURE_ACCOUNT_TOKEN_PROVIDER_TYPE_PROPERTY_NAME``, ``FS_AZURE_ACCOUNT_OAUTH_CLIENT_ID``,
#: ``FS_AZURE_ACCOUNT_OAUTH_MSI_TENANT``, ``FS_AZURE_ACCOUNT_OAUTH_MSI_AUTHORITY``,
#: ``FS_AZURE_ACCOUNT_OAUTH_TOKEN_FILE``), read by ``AbfsConfiguration.getTokenProvider`` for
#: ``WorkloadIdentityTokenProvider``. The values are Hadoop ``${env.NAME}`` substitutions, resolved in each pod from
#: what the webhook injected: no identifier or secret is in the manifest. The operator passes ``hadoopConf`` entries
#: to Spark as ``spark.hadoop.<key>``.
ABFS_WORKLOAD_IDENTITY = {
    "fs.azure.account.auth.type": "OAuth",
    "fs.azure.account.oauth.provider.type": "org.apache.hadoop.fs.azurebfs.oauth2.WorkloadIdentityTokenProvider",
    "fs.azure.account.oauth2.client.id": "${env.AZURE_CLIENT_ID}",
    "fs.azure.account.oauth2.msi.tenant": "${env.AZURE_TENANT_ID}",
    "fs.azure.account.oauth2.msi.authority": "${env.AZURE_AUTHORITY_HOST}",
    "fs.azure.account.oauth2.token.file": "${env.AZURE_FEDERATED_TOKEN_FILE}",
}


def application_name(run_key: str, prefix: str = "fraud-features") -> str:
    """A DNS-1123 name, unique per run, stable for the same key (a retried step finds its own application).

    Args:
        run_key: What identifies the run (e.g. the output artifact's URI).
        prefix: Name prefix.

    Returns:
        ``<prefix>-<12 hex digits>``, at most 63 characters.
    """
    digest = hashlib.sha256(run_key.encode()).hexdigest()[:12]
    return f"{prefix[: _NAME_MAX - 13].rstrip('-')}-{digest}"


def spark_uri(store_uri: str, azure_account_url: str | None = None) -> str:
    """The Hadoop URI Spark reads a store URI through: ``s3://`` -> ``s3a://``, ``az://`` -> ``abfss://``.

    Args:
        store_uri: ``s3://bucket/key`` or ``az://container/key``.
        azure_account_url: ``https://<account>.blob.core.windows.net`` (needed for ``az://``).

    Returns:
        ``s3a://bucket/key`` or ``abfss://container@<account>.dfs.core.windows.net/key``.

    Raises:
        ValueError: A local path or another scheme (the driver pods cannot read it), or ``az://`` without an
            account.
    """
    parsed = urlparse(store_uri)
    if parsed.scheme == "s3" and parsed.netloc:
        return f"s3a://{parsed.netloc}{parsed.path}"
    if parsed.scheme == "az" and parsed.netloc:
        host = urlparse(azure_account_url or "").hostname or ""
        match = re.fullmatch(r"([a-z0-9]{3,24})\.blob\.(.+)", host)
        if not match:
            raise ValueError(f"{store_uri}: az:// needs the storage account URL (https://<account>.blob...)")
        return f"abfss://{parsed.netloc}@{match.group(1)}.dfs.{match.group(2)}{parsed.path}"
    raise ValueError(
        f"{store_uri}: the Spark Operator's pods read the data from the store: it must be s3:// or az://, not a "
        "local path"
    )


def _pod(settings: SparkSettings, cores: int, memory: str, azure: bool = False) -> dict[str, Any]:
    labels = {**LABELS, WORKLOAD_IDENTITY_LABEL: "true"} if azure else dict(LABELS)
    pod: dict[str, Any] = {
        "cores": cores,
        "memory": memory,
        "labels": labels,
        "serviceAccount": settings.service_account,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    env: list[dict[str, Any]] = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    if settings.secret_name:
        env += [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": settings.secret_name, "key": key, "optional": True}}}
            for key in SECRET_KEYS
        ]
    pod["env"] = env
    if settings.node_selector:
        pod["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod["tolerations"] = [dict(t) for t in settings.tolerations]
    return pod


def build_application(
    name: str,
    settings: SparkSettings,
    input_uri: str,
    output_uri: str,
    label_delay_days: int = 7,
    column_map: str = "",
) -> dict[str, Any]:
    """The SparkApplication that builds the features of ``input_uri`` into day partitions under ``output_uri``.

    Args:
        name: Application name (:func:`application_name`).
        settings: Cluster settings (image, namespace, resources, node pool, store Secret).
        input_uri: The validated transactions (``s3a://`` or ``abfss://``, Parquet).
        output_uri: Destination directory of the day partitions.
        label_delay_days: The label delay of the terminal risk features.
        column_map: Source-to-contract renames, ``SRC=DST`` pairs separated by commas.

    Returns:
        The manifest (a dict ready for ``CustomObjectsApi.create_namespaced_custom_object``). With an ``abfss://``
        input or output, driver and executors carry the workload identity label and ABFS authenticates with
        :data:`ABFS_WORKLOAD_IDENTITY`.
    """
    azure = any(urlparse(uri).scheme == "abfss" for uri in (input_uri, output_uri))
    arguments = ["--input", input_uri, "--output", output_uri, "--label-delay-days", str(label_delay_days)]
    if column_map:
        arguments += ["--column-map", column_map]
    spec: dict[str, Any] = {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "mainApplicationFile": settings.main_application_file,
        "arguments": arguments,
        "sparkVersion": settings.spark_version,
        "sparkConf": {
            "spark.sql.session.timeZone": "UTC",
            "spark.ui.enabled": "false",
        },
        "restartPolicy": {"type": "Never"},
        "timeToLiveSeconds": settings.time_to_live_seconds,
        "driver": _pod(settings, settings.driver_cores, settings.driver_memory, azure),
        "executor": {
            **_pod(settings, settings.executor_cores, settings.executor_memory, azure),
            "instances": settings.executor_instances,
        },
    }
    if settings.s3_endpoint:
        endpoint = urlparse(settings.s3_endpoint)
        spec["hadoopConf"] = {
            "fs.s3a.endpoint": settings.s3_endpoint,
            "fs.s3a.path.style.access": "true",
            "fs.s3a.connection.ssl.enabled": "true" if endpoint.scheme == "https" else "false",
        }
    if azure:
        spec["hadoopConf"] = {**spec.get("hadoopConf", {}), **ABFS_WORKLOAD_IDENTITY}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": settings.namespace, "labels": dict(LABELS)},
        "spec": spec,
    }
