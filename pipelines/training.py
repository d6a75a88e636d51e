"""The ``fraud-training`` DAG: ingest, validate, features, train, evaluate, and behind the gate register and deploy.

Nothing is built at import: :func:`build_pipeline` assembles the DAG for one image and one Kubernetes wiring, and
:func:`compile_pipeline` writes the YAML that Kubeflow runs (the same object runs locally through ``kfp.local``).
"""

import logging
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

from components import PIPELINE_IMAGE
from fraud_detection.data.splits import TRAINING_SPLIT

LOG = logging.getLogger(__name__)

PIPELINE_NAME = "fraud-training"
PIPELINE_DESCRIPTION = (
    "Payment fraud detection training: ingest raw transactions (simulated, a path or s3://), validate them, build "
    "point-in-time features, train and evaluate on held-out days, and - only when the candidate beats production by "
    "the configured AP margin without losing card precision@100 - register it and deploy it as a KServe canary."
)
#: Kubernetes Secret with the S3/MinIO keys (the chart's ``pipeline.existingSecret``), read as environment variables.
SECRET_NAME = "fraud-s3-credentials"
SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
#: ConfigMap with the non-secret settings the chart renders (``<release>-pipeline``), read as environment variables.
CONFIG_MAP_NAME = "fraud-detection-pipeline"
CONFIG_MAP_KEYS = (
    "FRAUD_STORE_URI",
    "FRAUD_S3_ENDPOINT",
    "FRAUD_S3_REGION",
    "FRAUD_MODEL_NAME",
    "FRAUD_SERVING_NAMESPACE",
    "FRAUD_INFERENCE_SERVICE",
    "FRAUD_AZURE_STORAGE_ACCOUNT_URL",
    "FRAUD_PAYLOAD_LOG_URI",
    "FRAUD_TRAINING_DATA",
    "FRAUD_ONLINE_STORE",
    "FRAUD_VERIFY_KEY",
    "FRAUD_TRUST_UNSIGNED",
)
#: Optional secrets in the same Secret, each read only by the task that needs it: the HMAC key of the identifier
#: hashes (the ingest step joins labels to the payload log with it), the bundle signing key (the register step signs
#: the published version's manifest with it) and the online store's password (the deploy step's backfill).
#: Optional, so a Secret without them still runs.
OPTIONAL_SECRET_KEYS = {
    "ingest-data": {"FRAUD_IDENTIFIER_KEY": "FRAUD_IDENTIFIER_KEY"},
    "register-model": {"FRAUD_SIGNING_KEY": "FRAUD_SIGNING_KEY"},
    "deploy-model": {"FRAUD_ONLINE_STORE_PASSWORD": "FRAUD_ONLINE_STORE_PASSWORD"},
}
#: Tasks that read or write the store (get the Secret); the data steps are cached.
STORE_TASKS = ("ingest-data", "evaluate-model", "register-model", "deploy-model")
CACHED_TASKS = ("ingest-data", "validate-data", "build-features")
#: Tasks that run only when the candidate passes the promotion gate.
GATED_TASKS = ("register-model", "deploy-model")
#: Tasks that run on a dedicated (e.g. spot) node pool when one is configured (:class:`NodePool`): the data, feature,
#: training and evaluation steps, which hold the CPU and memory and can be retried. Register and deploy stay on the
#: regular nodes: an eviction there could leave a half-published version or a half-applied canary.
POOL_TASKS = ("ingest-data", "validate-data", "build-features", "train-model", "evaluate-model")
#: ConfigMap of the Spark Operator settings (the chart's ``spark:`` values, ``<release>-spark``), mounted into the
#: feature step when the pipeline is compiled with ``spark_operator=True`` (``feature_engine=spark-operator``).
SPARK_CONFIG_MAP_NAME = "fraud-detection-spark"
#: Pod resources of every task: at the default data size (1.8 M transactions) the largest step peaks at about
#: 2 GiB resident (docs/PERFORMANCE.md); the limit leaves room for larger windows.
CPU_REQUEST, MEMORY_REQUEST, MEMORY_LIMIT = "1", "4G", "8G"


TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


@dataclass(frozen=True)
class NodePool:
    """A node pool the heavy tasks (:data:`POOL_TASKS`) run on: the node label they select, the taint they tolerate.

    Attributes:
        label_key: Node label key of the pool, e.g. ``fraud-detection/pool`` (the AKS training pool, infra/).
        label_value: Its value, e.g. ``training``.
        taint_key: Key of the pool's taint, e.g. ``kubernetes.azure.com/scalesetpriority`` (AKS spot nodes); None
            for an untainted pool.
        taint_value: Value of the taint (toleration operator ``Equal``), e.g. ``spot``; None tolerates any value
            (operator ``Exists``).
        taint_effect: Effect of the taint; None tolerates every effect.
    """

    label_key: str
    label_value: str
    taint_key: str | None = None
    taint_value: str | None = None
    taint_effect: TaintEffect | None = None

    @classmethod
    def parse(cls, selector: str | None, toleration: str | None = None) -> "NodePool | None":
        """The pool of ``FRAUD_TRAINING_NODE_SELECTOR`` and ``FRAUD_TRAINING_TOLERATION``, or None when unset.

        Args:
            selector: ``key=value`` node label, e.g. ``fraud-detection/pool=training``; empty or None: no pool.
            toleration: ``key[=value][:Effect]``, e.g. ``kubernetes.azure.com/scalesetpriority=spot:NoSchedule``;
                empty or None: no toleration.

        Returns:
            The pool, or None (the tasks then run on any node).

        Raises:
            ValueError: A malformed selector or toleration, or a toleration without a selector.
        """
        if not selector:
            if toleration:
                raise ValueError("FRAUD_TRAINING_TOLERATION needs FRAUD_TRAINING_NODE_SELECTOR (the pool to run on)")
            return None
        key, sep, value = selector.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"FRAUD_TRAINING_NODE_SELECTOR {selector!r}: expected key=value")
        if not toleration:
            return cls(key, value)
        taint, _, effect = toleration.partition(":")
        taint_key, _, taint_value = taint.partition("=")
        if not taint_key or effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError(
                f"FRAUD_TRAINING_TOLERATION {toleration!r}: expected key[=value][:Effect], Effect one of NoSchedule, "
                "PreferNoSchedule, NoExecute"
            )
        return cls(key, value, taint_key, taint_value or None, cast(TaintEffect, effect) if effect else None)


def build_pipeline(
    image: str = PIPELINE_IMAGE,
    secret_name: str | None = SECRET_NAME,
    config_map_name: str | None = CONFIG_MAP_NAME,
    node_pool: NodePool | None = None,
    spark_operator: bool = False,
) -> Any:
    """Assemble the ``fraud-training`` pipeline.

    Args:
        image: The pipeline image every task runs on.
        secret_name: Kubernetes Secret holding ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, exposed to the tasks
            that use the store; None when the cluster grants store access otherwise (e.g. workload identity).
        config_map_name: ConfigMap with the ``FRAUD_*`` settings (optional at run time); None to not read one.
        node_pool: Node pool of the :data:`POOL_TASKS` (their node selector and toleration, e.g. the AKS spot
            training pool); None: every task runs wherever Kubernetes schedules it.
        spark_operator: Let the feature step submit a SparkApplication (run parameter
            ``feature_engine=spark-operator``): it gets the store Secret (it stages data in the store) and the
            Spark settings ConfigMap (:data:`SPARK_CONFIG_MAP_NAME`) as a volume. Off: the step has neither.

    Returns:
        The pipeline (a kfp ``GraphComponent``): compile it, or call it under ``kfp.local``.
    """
    from kfp import dsl, kubernetes
    from kfp.dsl import HTML, Metrics

    from components.build_features import build_features
    from components.deploy_model import deploy_model
    from components.evaluate_model import evaluate_model
    from components.ingest_data import ingest_data
    from components.register_model import register_model
    from components.spark_operator.settings import SETTINGS_DIR
    from components.train_model import train_model
    from components.validate_data import validate_data

    def wire(task: Any, display_name: str) -> Any:
        task.set_container_image(image)
        task.set_caching_options(enable_caching=task.name in CACHED_TASKS)
        task.set_display_name(display_name)
        task.set_cpu_request(CPU_REQUEST).set_memory_request(MEMORY_REQUEST).set_memory_limit(MEMORY_LIMIT)
        if config_map_name:
            keys = {key: key for key in CONFIG_MAP_KEYS}
            kubernetes.use_config_map_as_env(task, config_map_name, keys, optional=True)
        if secret_name and task.name in STORE_TASKS:
            # Optional: on AKS the tasks reach Blob storage through workload identity and the Secret holds no keys.
            kubernetes.use_secret_as_env(task, secret_name, SECRET_KEYS, optional=True)
        if secret_name and task.name in OPTIONAL_SECRET_KEYS:
            kubernetes.use_secret_as_env(task, secret_name, OPTIONAL_SECRET_KEYS[task.name], optional=True)
        if spark_operator and task.name == "build-features":
            if secret_name:
                kubernetes.use_secret_as_env(task, secret_name, SECRET_KEYS, optional=True)
            kubernetes.use_config_map_as_volume(task, SPARK_CONFIG_MAP_NAME, SETTINGS_DIR, optional=True)
        if node_pool and task.name in POOL_TASKS:
            kubernetes.add_node_selector(task, node_pool.label_key, node_pool.label_value)
            if node_pool.taint_key:
                kubernetes.add_toleration(
                    task,
                    key=node_pool.taint_key,
                    operator="Equal" if node_pool.taint_value else "Exists",
                    value=node_pool.taint_value,
                    effect=node_pool.taint_effect,
                )
        return task

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)
    def fraud_training(
        data_source: str = "",
        source_version: str = "",
        column_map: str = "",
        n_customers: int = 5_000,
        n_terminals: int = 10_000,
        n_days: int = 183,
        sim_start_date: str = "2018-04-01",
        seed: int = 0,
        window_end: str = "",
        window_days: int = 0,
        min_rows: int = 1_000,
        train_days: int = TRAINING_SPLIT.train,
        test_days: int = TRAINING_SPLIT.test,
        delay_days: int = TRAINING_SPLIT.delay,
        model_type: str = "rf",
        max_iter: int = 300,
        learning_rate: float = 0.03,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 0,
        review_cost: float = 10.0,
        min_ap_gain: float = 0.0,
        max_cp_loss: float = 0.0,
        store_uri: str = "",
        model_name: str = "",
        serving_namespace: str = "",
        inference_service: str = "",
        canary_traffic_percent: int = 10,
        materialize_online: bool = False,
        feature_engine: str = "memory",
        sample_legit: float = 1.0,
        max_rows: int = 0,
        max_frauds: int = 0,
        params_json: str = "",
    ) -> NamedTuple("Outputs", [("promoted", bool), ("metrics", Metrics), ("report", HTML)]):  # type: ignore[valid-type]
        """Train a fraud model and promote it only when it beats production.

        Args:
            data_source: Raw transactions: empty to simulate, else a CSV/Parquet file or Parquet directory, local
                or ``s3://``.
            source_version: Identity of the data behind ``data_source`` (snapshot id, digest); change it when the
                data at the same URI changes, since it keys the cache of the data steps.
            column_map: Source-to-contract column renames, ``SRC=DST`` pairs separated by commas.
            n_customers: Simulated customers.
            n_terminals: Simulated terminals.
            n_days: Simulated days.
            sim_start_date: First simulated day.
            seed: Simulation seed.
            window_end: Exclusive end of the data window (ISO date, UTC); empty for the day after the last event.
            window_days: Days of data before ``window_end`` to use; 0 for all.
            min_rows: Fewest transactions accepted in the window.
            train_days: Most recent days before the delay window to train on; 0 for all of them.
            test_days: Held-out test days.
            delay_days: Label delay: days between training and test never trained on, and the age before a
                label feeds the terminal risk features.
            model_type: ``rf`` (the default), ``hgb`` or ``logreg``.
            max_iter: Boosting iterations (hgb).
            learning_rate: Boosting learning rate (hgb).
            max_leaf_nodes: Leaves per tree (hgb).
            min_samples_leaf: Minimum rows per leaf; 0 for the model type's default (20 for hgb, 5 for rf).
            review_cost: Cost of reviewing one false alert (threshold choice, expected cost).
            min_ap_gain: Average-precision gain over production required to promote.
            max_cp_loss: Card precision@100 loss tolerated against production.
            store_uri: Model store (directory or ``s3://bucket/prefix``); empty for ``FRAUD_STORE_URI``.
            model_name: Model name; empty for ``FRAUD_MODEL_NAME`` (fraud-detector).
            serving_namespace: InferenceService namespace; empty for ``FRAUD_SERVING_NAMESPACE``.
            inference_service: InferenceService name; empty for ``FRAUD_INFERENCE_SERVICE`` (the model name).
            canary_traffic_percent: Traffic share of the new version while the canary is analysed.
            materialize_online: Backfill the online feature store (``FRAUD_ONLINE_STORE``) from the validated data
                in the deploy step, so raw transactions are scored with the history the model was trained on.
            feature_engine: ``memory`` (numpy, in the step), ``spark`` (Spark ``local[*]`` in the step) or
                ``spark-operator`` (a SparkApplication on the Kubeflow Spark Operator; compile with
                ``spark_operator=True``); the Spark engines pass day partitions on to training.
            sample_legit: Share of the legitimate training rows kept (every fraud is, weighted by the inverse
                share), read partition by partition so the train step's memory is bounded; 1 for all.
            max_rows: Cap on the legitimate training rows (the share follows from it); 0 for none.
            max_frauds: Cap on the training frauds (sampled and weighted like the legitimate rows); 0 keeps all.
            params_json: Hyperparameters chosen by ``fraud backtest --select --params-out FILE`` (the file's
                JSON text); they override the model parameters above. Empty for none.

        Returns:
            Whether the candidate passed the promotion gate, its metrics (with production's on the same rows),
            and the evaluation report.
        """
        ingest = wire(
            ingest_data(
                data_source=data_source,
                source_version=source_version,
                n_customers=n_customers,
                n_terminals=n_terminals,
                n_days=n_days,
                start_date=sim_start_date,
                seed=seed,
            ),
            "ingest data",
        )
        validate = wire(
            validate_data(
                raw=ingest.outputs["raw"],
                column_map=column_map,
                window_end=window_end,
                window_days=window_days,
                train_days=train_days,
                test_days=test_days,
                delay_days=delay_days,
                min_rows=min_rows,
            ),
            "validate data",
        )
        features = wire(
            build_features(
                validated=validate.outputs["validated"], label_delay_days=delay_days, feature_engine=feature_engine
            ),
            "build features",
        )
        train = wire(
            train_model(
                features=features.outputs["features"],
                source=ingest.outputs["Output"],
                model_name=model_name,
                model_type=model_type,
                max_iter=max_iter,
                learning_rate=learning_rate,
                max_leaf_nodes=max_leaf_nodes,
                min_samples_leaf=min_samples_leaf,
                review_cost=review_cost,
                train_days=train_days,
                test_days=test_days,
                delay_days=delay_days,
                sample_legit=sample_legit,
                max_rows=max_rows,
                max_frauds=max_frauds,
                params_json=params_json,
            ),
            "train model",
        )
        gate_args = {
            "store_uri": store_uri,
            "model_name": model_name,
            "min_ap_gain": min_ap_gain,
            "max_cp_loss": max_cp_loss,
        }
        evaluate = wire(
            evaluate_model(
                bundle=train.outputs["bundle"],
                test_set=train.outputs["test_set"],
                **gate_args,
            ),
            "evaluate model",
        )
        # kfp.local resolves a condition only on a task's single "Output" (not a named NamedTuple field).
        with dsl.If(evaluate.outputs["Output"] == True, name="candidate-beats-production"):  # noqa: E712
            register = wire(
                register_model(
                    bundle=train.outputs["bundle"],
                    test_set=train.outputs["test_set"],
                    **gate_args,
                ),
                "register model",
            )
            wire(
                deploy_model(
                    model_version=register.outputs["version"],
                    storage_uri=register.outputs["storage_uri"],
                    store_uri=store_uri,
                    model_name=model_name,
                    namespace=serving_namespace,
                    inference_service=inference_service,
                    canary_traffic_percent=canary_traffic_percent,
                    history=validate.outputs["validated"],
                    materialize_online=materialize_online,
                ),
                "deploy canary",
            )
        Outputs = namedtuple("Outputs", ["promoted", "metrics", "report"])
        return Outputs(evaluate.outputs["Output"], evaluate.outputs["metrics"], evaluate.outputs["report"])

    return fraud_training


def compile_pipeline(output: Path, *, defaults: dict[str, Any] | None = None, **options: Any) -> Path:
    """Compile the pipeline to a YAML file (Kubeflow Pipelines IR plus the Kubernetes platform spec).

    Args:
        output: Destination ``.yaml``; parent directories are created.
        **options: Passed to :func:`build_pipeline` (``image``, ``secret_name``, ``config_map_name``,
            ``node_pool``, ``spark_operator``).
        defaults: New default values of run parameters, e.g. ``{"feature_engine": "spark-operator"}`` (a run may
            still override them).

    Returns:
        The written path.
    """
    from kfp import compiler

    from fraud_detection.store.files import atomic_file

    output = Path(output)
    with atomic_file(output) as tmp:
        compiler.Compiler().compile(build_pipeline(**options), str(tmp), pipeline_parameters=defaults or None)
    LOG.info("compiled %s to %s", PIPELINE_NAME, output)
    return output
