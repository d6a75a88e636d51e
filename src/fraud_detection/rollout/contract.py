"""What the rollout reads and writes on an InferenceService: API coordinates, container, env and annotation names.

Every annotation the platform writes has the one prefix ``fraud-detection.io/``.
"""

from __future__ import annotations

GROUP = "serving.kserve.io"
API_VERSION = "v1beta1"
PLURAL = "inferenceservices"
CONTAINER_NAME = "kserve-container"
ENV_STORAGE_URI = "STORAGE_URI"
ENV_MODEL_VERSION = "FRAUD_MODEL_VERSION"

ANNOTATION_PREFIX = "fraud-detection.io/"
ANNOTATION_DECISION = ANNOTATION_PREFIX + "rollout-decision"
ANNOTATION_REASONS = ANNOTATION_PREFIX + "rollout-reasons"
ANNOTATION_TIME = ANNOTATION_PREFIX + "rollout-time"
ANNOTATION_RECORD = ANNOTATION_PREFIX + "rollout-record"
ANNOTATION_STABLE = ANNOTATION_PREFIX + "rollout-stable-version"
ANNOTATION_CANARY = ANNOTATION_PREFIX + "rollout-canary-version"

#: Annotation recording the model version the InferenceService's spec serves (also written by the rollout).
VERSION_ANNOTATION = ANNOTATION_PREFIX + "model-version"

#: Serving image used only when the InferenceService does not exist yet.
SERVE_IMAGE = "ghcr.io/fraud-detection/fraud-detection-serve:0.1.0"

DEFAULT_CANARY_PERCENT = 10
