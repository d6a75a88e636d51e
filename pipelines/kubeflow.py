"""Submit the compiled pipeline to a Kubeflow Pipelines endpoint and keep one weekly recurring run.

Both operations are idempotent:

* :func:`submit` uploads the package as a pipeline version named after its content digest (an unchanged package
  reuses its version) and starts one run of it.
* :func:`schedule` keeps exactly one recurring run of a given name: it records a digest of its whole configuration
  (package, cron, parameters, caching, service account) in the description; a second call with the same
  configuration changes nothing, a call with another one deletes the old recurring run(s) and creates the new one
  (KFP has no update call for recurring runs).
"""

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from pipelines.training import PIPELINE_DESCRIPTION, PIPELINE_NAME

LOG = logging.getLogger(__name__)

#: Mondays 05:00:00 UTC, as in the original project. KFP uses robfig/cron with a seconds field first (6 fields:
#: second minute hour day-of-month month day-of-week, Sunday = 0); the scheduler evaluates it in the
#: controller's CRON_SCHEDULE_TIMEZONE, UTC unless the installation changed it.
WEEKLY_CRON = "0 0 5 * * 1"
SCHEDULE_NAME = "fraud-training-weekly"
EXPERIMENT = "fraud-detection"
_CONFIG_TAG = re.compile(r"\[config sha256:([0-9a-f]{64})\]")
_KFP_TYPES = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "BOOLEAN": bool}


class Secret(Protocol):
    """A secret value that is not shown in logs (e.g. ``pydantic.SecretStr``)."""

    def get_secret_value(self) -> str: ...  # noqa: D102


class KubeflowConfig(Protocol):
    """Where Kubeflow Pipelines is and where its heavy steps run: the caller's settings (``DriftSettings``, ...)."""

    @property
    def kfp_endpoint(self) -> str | None: ...  # noqa: D102

    @property
    def kfp_namespace(self) -> str | None: ...  # noqa: D102

    @property
    def kfp_token(self) -> Secret | None: ...  # noqa: D102

    @property
    def training_node_selector(self) -> str | None: ...  # noqa: D102

    @property
    def training_toleration(self) -> str | None: ...  # noqa: D102


def make_client(endpoint: str | None, *, token: str | None = None, namespace: str | None = None) -> Any:
    """A ``kfp.Client`` for the configured endpoint.

    Args:
        endpoint: KFP API URL (``FRAUD_KFP_ENDPOINT``), e.g. ``https://kubeflow.example.com/pipeline``.
        token: Bearer token (``FRAUD_KFP_TOKEN``), if the endpoint needs one.
        namespace: User namespace for multi-user Kubeflow (``FRAUD_KFP_NAMESPACE``).

    Returns:
        The client.

    Raises:
        ValueError: No endpoint is configured.
    """
    if not endpoint:
        raise ValueError("no Kubeflow Pipelines endpoint: set FRAUD_KFP_ENDPOINT (and FRAUD_KFP_TOKEN if needed)")
    import kfp

    return kfp.Client(host=endpoint, existing_token=token or None, namespace=namespace or "kubeflow")


def make_configured_client(config: KubeflowConfig) -> Any:
    """A ``kfp.Client`` for the configured endpoint, token and namespace.

    Args:
        config: The caller's settings.

    Returns:
        The client.
    """
    token = config.kfp_token.get_secret_value() if config.kfp_token else None
    return make_client(config.kfp_endpoint, token=token, namespace=config.kfp_namespace)


def check_cron(cron: str) -> str:
    """Check that a cron expression has KFP's six fields (seconds first).

    Args:
        cron: The expression.

    Returns:
        The expression, whitespace-normalised.

    Raises:
        ValueError: It does not have six fields.
    """
    fields = cron.split()
    if len(fields) != 6:
        raise ValueError(
            f"cron {cron!r} has {len(fields)} field(s); Kubeflow Pipelines needs 6, seconds first "
            f"(second minute hour day-of-month month day-of-week), e.g. {WEEKLY_CRON!r} for Mondays 05:00"
        )
    return " ".join(fields)


def pipeline_parameters(package: Path) -> dict[str, str]:
    """The pipeline's parameters and their KFP types, from a compiled package.

    Args:
        package: Compiled pipeline YAML.

    Returns:
        Parameter name to KFP type (``STRING``, ``NUMBER_INTEGER``, ``NUMBER_DOUBLE``, ``BOOLEAN``).
    """
    spec = next(yaml.safe_load_all(Path(package).read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    return {name: str(p["parameterType"]) for name, p in params.items()}


def parse_params(pairs: list[str], package: Path) -> dict[str, Any]:
    """Turn ``NAME=VALUE`` strings into typed pipeline arguments.

    Args:
        pairs: Items like ``max_iter=200``.
        package: Compiled pipeline YAML (for the names and types).

    Returns:
        The arguments.

    Raises:
        ValueError: An item is malformed, names no parameter, or its value does not fit the type.
    """
    types = pipeline_parameters(package)
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in types:
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(types))}")
        kind = _KFP_TYPES.get(types[name], str)
        try:
            if kind is bool:
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                out[name] = value.lower() == "true"
            else:
                out[name] = kind(value)
        except ValueError as exc:
            raise ValueError(f"--param {pair!r}: {value!r} is not a valid {types[name]}") from exc
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _experiment_id(client: Any, experiment: str, namespace: str | None) -> str:
    return str(client.create_experiment(name=experiment, namespace=namespace).experiment_id)


def upload_version(client: Any, package: Path, *, pipeline_name: str = PIPELINE_NAME) -> tuple[str, str]:
    """Upload the package as a version of the pipeline, reusing the version of an identical package.

    Args:
        client: ``kfp.Client``.
        package: Compiled pipeline YAML.
        pipeline_name: Pipeline name in KFP.

    Returns:
        (pipeline id, version id).
    """
    version_name = f"{pipeline_name}-{_digest(package)[:12]}"
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(
            str(package), pipeline_name=pipeline_name, description=PIPELINE_DESCRIPTION
        ).pipeline_id
        newest = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
        LOG.info("created pipeline %s (%s)", pipeline_name, pipeline_id)
        return str(pipeline_id), str(newest.pipeline_versions[0].pipeline_version_id)
    existing = client.list_pipeline_versions(pipeline_id, page_size=1, filter=_name_filter(version_name))
    if existing.pipeline_versions:
        LOG.info("pipeline version %s exists already", version_name)
        return str(pipeline_id), str(existing.pipeline_versions[0].pipeline_version_id)
    version = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id)
    LOG.info("uploaded pipeline version %s", version_name)
    return str(pipeline_id), str(version.pipeline_version_id)


def submit(
    client: Any,
    package: Path,
    *,
    params: dict[str, Any],
    run_name: str,
    experiment: str = EXPERIMENT,
    namespace: str | None = None,
    service_account: str | None = None,
) -> str:
    """Upload the package (see :func:`upload_version`) and start a run of it.

    Args:
        client: ``kfp.Client``.
        package: Compiled pipeline YAML.
        params: Pipeline arguments.
        run_name: Display name of the run.
        experiment: Experiment to run in (created if missing).
        namespace: User namespace (multi-user Kubeflow).
        service_account: Kubernetes ServiceAccount of the run's pods (it must be allowed to patch the
            InferenceService for the deploy step).

    Returns:
        The run id.
    """
    pipeline_id, version_id = upload_version(client, package)
    run = client.run_pipeline(
        experiment_id=_experiment_id(client, experiment, namespace),
        job_name=run_name,
        pipeline_id=pipeline_id,
        version_id=version_id,
        params=params,
        service_account=service_account,
    )
    LOG.info("started run %s (%s)", run_name, run.run_id)
    return str(run.run_id)


@dataclass(frozen=True)
class ScheduleResult:
    """What :func:`schedule` did.

    Attributes:
        action: ``created`` (none existed), ``unchanged`` (same configuration) or ``replaced``.
        recurring_run_id: The recurring run now in place.
        deleted: Ids of recurring runs removed (an older configuration, or duplicates).
    """

    action: Literal["created", "unchanged", "replaced"]
    recurring_run_id: str
    deleted: tuple[str, ...] = ()


def schedule(
    client: Any,
    package: Path,
    *,
    params: dict[str, Any],
    name: str = SCHEDULE_NAME,
    cron: str = WEEKLY_CRON,
    experiment: str = EXPERIMENT,
    namespace: str | None = None,
    enable_caching: bool | None = None,
    service_account: str | None = None,
) -> ScheduleResult:
    """Keep exactly one recurring run named ``name`` with this configuration.

    The recurring run embeds the package (rather than referring to an uploaded version) so that
    ``enable_caching`` can override the compiled settings: KFP applies that override only to an embedded spec.

    Args:
        client: ``kfp.Client``.
        package: Compiled pipeline YAML.
        params: Pipeline arguments of every scheduled run.
        name: Display name of the recurring run.
        cron: KFP cron expression (6 fields).
        experiment: Experiment (created if missing).
        namespace: User namespace (multi-user Kubeflow).
        enable_caching: Override of the compiled caching settings for every task; None keeps them.
        service_account: ServiceAccount of the runs' pods.

    Returns:
        What was done.
    """
    cron = check_cron(cron)
    config = {
        "package_sha256": _digest(package),
        "cron": cron,
        "params": params,
        "enable_caching": enable_caching,
        "service_account": service_account,
    }
    config_digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    experiment_id = _experiment_id(client, experiment, namespace)
    existing = _recurring_runs(client, experiment_id, name)
    current = [r for r in existing if (m := _CONFIG_TAG.search(r.description or "")) and m.group(1) == config_digest]
    if len(existing) == 1 and current:
        LOG.info("recurring run %s is up to date (%s)", name, current[0].recurring_run_id)
        return ScheduleResult("unchanged", str(current[0].recurring_run_id))
    deleted = []
    for old in existing:
        client.delete_recurring_run(old.recurring_run_id)
        deleted.append(str(old.recurring_run_id))
        LOG.info("deleted recurring run %s (%s)", name, old.recurring_run_id)
    created = client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=name,
        description=f"Weekly retraining of the fraud model ({cron}, UTC). [config sha256:{config_digest}]",
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=params,
        pipeline_package_path=str(package),
        enabled=True,
        enable_caching=enable_caching,
        service_account=service_account,
    )
    LOG.info("created recurring run %s (%s): %s", name, created.recurring_run_id, cron)
    return ScheduleResult("replaced" if deleted else "created", str(created.recurring_run_id), tuple(deleted))


def _name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def _recurring_runs(client: Any, experiment_id: str, name: str) -> list[Any]:
    found: list[Any] = []
    token = ""
    while True:
        page = client.list_recurring_runs(
            page_token=token, page_size=100, experiment_id=experiment_id, filter=_name_filter(name)
        )
        found.extend(r for r in page.recurring_runs or [] if r.display_name == name)
        token = page.next_page_token or ""
        if not token:
            return found


def submit_training_run(
    settings: KubeflowConfig,
    *,
    run_name: str,
    data_source: str,
    reason: str = "",
    feature_engine: str | None = None,
    spark_operator: bool = False,
) -> str:
    """Compile the training pipeline and start one run on the configured Kubeflow (the drift job's retrain trigger).

    Args:
        settings: The caller's settings with ``kfp_endpoint`` (and optional token, namespace, node pool of the heavy
            steps), e.g. :class:`fraud_detection.settings.DriftSettings`.
        run_name: Display name prefix of the run (a UTC timestamp is appended).
        data_source: What the run trains on (``payload-log``, a path or ``s3://`` URI); never simulated data.
        reason: Why the run is started (logged).
        feature_engine: The run's ``feature_engine`` parameter (``memory``, ``spark``, ``spark-operator``); None:
            the pipeline's default.
        spark_operator: Compile with the feature step's Spark Operator wiring (implied by
            ``feature_engine="spark-operator"``).

    Returns:
        The run id.
    """
    import tempfile
    from datetime import UTC, datetime

    from pipelines.training import NodePool, compile_pipeline

    client = make_configured_client(settings)
    node_pool = NodePool.parse(settings.training_node_selector, settings.training_toleration)
    LOG.info("starting a training run: %s", reason or "requested")
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(
            Path(tmp) / "fraud-training.yaml",
            node_pool=node_pool,
            spark_operator=spark_operator or feature_engine == "spark-operator",
        )
        params = {"data_source": data_source} | ({"feature_engine": feature_engine} if feature_engine else {})
        return submit(
            client,
            package,
            params=params,
            run_name=f"{run_name}-{datetime.now(UTC):%Y%m%d-%H%M%S}",
            namespace=settings.kfp_namespace,
            service_account="fraud-pipeline-runner",
        )
