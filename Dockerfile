# syntax=docker/dockerfile:1.7
#
# One Dockerfile, three images, one wheel:
#
#   docker build --target pipeline -t <registry>/fraud-detection-pipeline:<version> .
#   docker build --target serve    -t <registry>/fraud-detection-serve:<version> .
#   docker build --target drift    -t <registry>/fraud-detection-drift:<version> .
#
# The builder stage turns the source tree into the fraud_detection wheel plus a wheelhouse of its
# [platform] dependencies (the union of the three images' extras, so the three builds share that layer). Each
# image installs the same wheel with only its own extra, from that wheelhouse (no index, no source tree):
#
#   pipeline: fraud-detection[pipeline]   kfp, kfp-kubernetes, kubernetes, matplotlib
#   serve:    fraud-detection[serve]      kserve, orjson            (no kfp, Evidently or matplotlib)
#   drift:    fraud-detection[monitor]    evidently, kfp + kfp-kubernetes (retrain trigger)
#   (serve and drift also get [appinsights]: OpenTelemetry to Application Insights, used only when configured)
#
# PYTHON_IMAGE may name another Debian bookworm image with python/pip on the PATH: `make images-local` builds these
# targets with podman on one made from Debian's packages by mmdebstrap (tools/images_local.py), no registry needed.
#
# All run as uid 1000. Runtime contract: docs/METRICS.md; extras: pyproject.toml.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
# Only what the wheel is built from (.dockerignore also keeps everything else out of the context).
# README* is a glob so the build does not depend on the file existing.
COPY pyproject.toml README* ./
COPY src/ src/
COPY serving/ serving/
COPY components/ components/
COPY pipelines/ pipelines/
COPY monitoring/ monitoring/
COPY cli/ cli/
# 1. the project wheel alone; 2. a wheelhouse with it and every [platform] dependency, so the image stages
# install offline and never need a compiler.
RUN pip wheel --no-deps --wheel-dir /dist . \
 && pip wheel --wheel-dir /wheels "$(ls /dist/fraud_detection-*.whl)[platform]"

# ---------------------------------------------------------------------------------------------------------
# What the three images share: the user, the environment. No Python package yet: each image installs its extra.
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="fraud-detection" \
      org.opencontainers.image.description="Payment fraud detection: pipeline, model server and drift job" \
      org.opencontainers.image.licenses="Apache-2.0"
# Read-only root filesystem friendly: caches go to /tmp (an emptyDir in the chart).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/fraud \
    XDG_CACHE_HOME=/tmp/.cache
RUN groupadd --gid 1000 fraud \
 && useradd --uid 1000 --gid 1000 --no-log-init --create-home --home-dir /home/fraud \
      --shell /usr/sbin/nologin fraud
WORKDIR /home/fraud
# Still root here: each image's pip install below writes to the system site-packages, then the image switches to
# the numeric uid 1000 (numeric so that Kubernetes' runAsNonRoot can verify it).

# ---------------------------------------------------------------------------------------------------------
# Kubeflow Pipelines components: KFP sets the command (python -m kfp.dsl.executor_main ...).
FROM runtime AS pipeline
# The wheelhouse is bind-mounted from the builder: no wheel file and no source file lands in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "fraud-detection[pipeline]" \
 && pip check
# The evaluation step's ROC/PR curves: matplotlib's config and font cache go to /tmp.
ENV MPLCONFIGDIR=/tmp/matplotlib
USER 1000:1000
HEALTHCHECK NONE
CMD ["python"]

# ---------------------------------------------------------------------------------------------------------
# Drift CronJob: one run per container start; non-zero exit on failure.
FROM runtime AS drift
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "fraud-detection[monitor]" \
 && pip check
USER 1000:1000
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "monitoring.drift_job"]

# ---------------------------------------------------------------------------------------------------------
# KServe predictor: HTTP 8080 (v1, v2 REST, /metrics), gRPC 8081. The model directory is filled by KServe's
# storage initializer (STORAGE_URI) or mounted by `docker run -v`.
FROM runtime AS serve
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "fraud-detection[serve]" \
 && pip check
USER 1000:1000
EXPOSE 8080 8081
# Listen on all interfaces in a container (outside a pod the server defaults to 127.0.0.1).
ENV FRAUD_SERVING_HOST=0.0.0.0
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=2)"]
ENTRYPOINT ["python", "-m", "serving"]
CMD ["--model_name", "fraud-detector", "--model_dir", "/mnt/models", "--http_port", "8080", "--grpc_port", "8081"]
