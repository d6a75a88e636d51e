"""Component ``build_features``: point-in-time features of the validated transactions."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def build_features(validated: Input[Dataset], features: Output[Dataset], label_delay_days: int = 7) -> None:
    """Compute the feature frame (``fraud_detection.features.offline.build_features``) and write it as Parquet.

    Args:
        validated: Output of ``validate_data``.
        features: Feature frame: keys, every feature of the schema, and the label.
        label_delay_days: Labels younger than this are unknown at scoring time and never used.
    """
    import pandas as pd

    from fraud_detection.data import schema
    from fraud_detection.features.offline import FeatureConfig
    from fraud_detection.features.offline import build_features as compute_features

    frame = compute_features(pd.read_parquet(validated.path), FeatureConfig(label_delay_days=label_delay_days))
    schema.validate_feature_frame(frame)
    schema.write_frame(frame, features.path)
    features.metadata.update({"rows": len(frame), "features": len(schema.FEATURES)})
