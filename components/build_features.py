"""Component ``build_features``: point-in-time features of the validated transactions (in memory or on Spark)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def build_features(
    validated: Input[Dataset], features: Output[Dataset], label_delay_days: int = 7, feature_engine: str = "memory"
) -> None:
    """Compute the feature frame of the validated transactions with the chosen executor.

    Args:
        validated: Output of ``validate_data``.
        features: Feature frame: keys, every feature of the schema, and the label; one Parquet file (``memory``) or
            a directory of day partitions ``day=YYYY-MM-DD/*.parquet`` (the Spark engines).
        label_delay_days: Labels younger than this are unknown at scoring time and never used.
        feature_engine: ``memory`` (``fraud_detection.features.offline``), ``spark`` (Spark ``local[*]`` in this
            step: its image needs Java and pyspark) or ``spark-operator`` (a SparkApplication on the Kubeflow Spark
            Operator, ``components.spark_operator``; docs/KUBERNETES.md).
    """
    from pathlib import Path

    import pandas as pd

    from fraud_detection.data import schema
    from fraud_detection.features.offline import FeatureConfig
    from fraud_detection.features.offline import build_features as compute_features

    config = FeatureConfig(label_delay_days=label_delay_days)
    if feature_engine == "memory":
        frame = compute_features(pd.read_parquet(validated.path), config)
        schema.validate_feature_frame(frame)
        schema.write_frame(frame, features.path)
        rows = len(frame)
    elif feature_engine == "spark":
        import tempfile

        from fraud_detection.features.spark import run_spark_features

        with tempfile.TemporaryDirectory() as tmp:  # Spark tells Parquet from CSV by the suffix the artifact lacks
            source = Path(tmp) / "validated.parquet"
            source.symlink_to(Path(validated.path).resolve())
            rows = run_spark_features(source, features.path, config=config, master="local[*]")
    elif feature_engine == "spark-operator":
        import pyarrow.dataset as ds

        from components.spark_operator.features_job import run_feature_job

        output = run_feature_job(Path(validated.path), Path(features.path), features.uri, label_delay_days)
        features.metadata["spark_output"] = output
        rows = ds.dataset(features.path, format="parquet", partitioning="hive").count_rows()
    else:
        raise ValueError(f"feature_engine {feature_engine!r}: use memory, spark or spark-operator")
    features.metadata.update({"rows": rows, "features": len(schema.FEATURES)})
    if feature_engine != "memory":
        features.metadata.update({"engine": feature_engine, "layout": "day-partitions"})
