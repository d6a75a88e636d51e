"""Kubeflow Pipelines components: one ``@dsl.component`` per module, each a thin adapter over ``fraud_detection``.

Every component runs on the one pipeline image (Dockerfile target ``pipeline``), which already contains the
``fraud_detection`` wheel and kfp, so no component installs anything at run time (``install_kfp_package=False``,
no ``packages_to_install``). A component's body is shipped as source to the executor, so it imports what it
needs inside the function and calls ``fraud_detection`` for the logic.
"""

from fraud_detection import __version__

#: Default image of every component, tagged with the package version: the chart's ``FRAUD_PIPELINE_IMAGE``
#: (``image.registry`` plus ``pipeline.image.repository`` at the chart's appVersion).
#: ``pipelines.training.build_pipeline(image=...)`` (``fraud pipeline compile --image``) points every task elsewhere.
PIPELINE_IMAGE = f"ghcr.io/fraud-detection/fraud-detection-pipeline:{__version__}"
