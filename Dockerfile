# syntax=docker/dockerfile:1.7
#
# One Dockerfile, four images, one wheel:
#
#   docker build --target pipeline -t <registry>/fraud-detection-pipeline:<version> .
#   docker build --target serve    -t <registry>/fraud-detection-serve:<version> .
#   docker build --target drift    -t <registry>/fraud-detection-drift:<version> .
#   docker build --target spark    -t <registry>/fraud-detection-spark:<version> .
#
# The builder stage turns the source tree into the fraud_detection wheel plus a wheelhouse of its
# [platform] dependencies (the union of the three images' extras, so the three builds share that layer). Each
# image installs the same wheel with only its own extra, from that wheelhouse (no index, no source tree):
#
#   pipeline: fraud-detection[pipeline]   kfp, kfp-kubernetes, kubernetes, matplotlib
#   serve:    fraud-detection[serve]      kserve, orjson            (no kfp, Evidently or matplotlib)
#   drift:    fraud-detection[monitor]    evidently, kfp + kfp-kubernetes (retrain trigger)
#   (serve and drift also get [appinsights]: OpenTelemetry to Application Insights, used only when configured)
#   spark:    fraud-detection             the Spark Operator's driver and executors: the base dependencies only;
#                                         pyspark is the Spark distribution's own (the [spark] extra is pyspark alone)
#
# PYTHON_IMAGE may name another Debian bookworm image with python/pip on the PATH: `make images-local` builds these
# targets with podman on one made from Debian's packages by mmdebstrap (tools/images_local.py), no registry needed.
#
# All run as uid 1000. Runtime contract: docs/METRICS.md; extras: pyproject.toml.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The official Apache Spark image of the version pyproject.toml pins pyspark to (and the chart's spark.sparkVersion).
ARG SPARK_IMAGE=apache/spark:4.3.0-scala2.13-java17-ubuntu

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
    XDG_CACHE_HOME=/tmp/.cache \
    OMP_WAIT_POLICY=PASSIVE
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

# ---------------------------------------------------------------------------------------------------------
# Hadoop's S3A connector for the Spark image, fetched from Maven Central at pinned versions and checked against
# pinned SHA-1 digests (Maven Central publishes SHA-1). hadoop-aws matches the Hadoop client of Spark 4.3.0
# (hadoop-client-api/-runtime 3.5.0); the AWS SDK v2 bundle and the analytics accelerator are the versions hadoop-aws
# 3.5.0 is built against.
FROM ${PYTHON_IMAGE} AS s3a-jars
ARG HADOOP_VERSION=3.5.0
ARG HADOOP_AWS_SHA1=9e594525d264c0db653c7f68da98b245f7d61ea5
ARG AWS_SDK_VERSION=2.35.4
ARG AWS_SDK_SHA1=7252265e3970b214708e68a8b74a8fa8c875af1e
ARG ANALYTICS_ACCELERATOR_VERSION=1.3.1
ARG ANALYTICS_ACCELERATOR_SHA1=6c9bd0f6c440c9a78e82d272f5f0252d942419f6
ARG MAVEN=https://repo1.maven.org/maven2
RUN python - \
      "$MAVEN/org/apache/hadoop/hadoop-aws/$HADOOP_VERSION/hadoop-aws-$HADOOP_VERSION.jar=$HADOOP_AWS_SHA1" \
      "$MAVEN/software/amazon/awssdk/bundle/$AWS_SDK_VERSION/bundle-$AWS_SDK_VERSION.jar=$AWS_SDK_SHA1" \
      "$MAVEN/software/amazon/s3/analyticsaccelerator/analyticsaccelerator-s3/$ANALYTICS_ACCELERATOR_VERSION/analyticsaccelerator-s3-$ANALYTICS_ACCELERATOR_VERSION.jar=$ANALYTICS_ACCELERATOR_SHA1" \
      <<'PY'
import hashlib, pathlib, sys, urllib.request
out = pathlib.Path("/jars")
out.mkdir()
for arg in sys.argv[1:]:
    url, _, expected = arg.rpartition("=")
    target = out / url.rsplit("/", 1)[1]
    urllib.request.urlretrieve(url, target)
    digest = hashlib.sha1(target.read_bytes()).hexdigest()
    if digest != expected:
        sys.exit(f"{target.name}: sha1 {digest}, expected {expected}")
PY
# ABFS (abfss://, the az:// store on AKS: docs/KUBERNETES.md "On AKS"): hadoop-azure of the same Hadoop as hadoop-aws,
# which brings WorkloadIdentityTokenProvider (Hadoop >= 3.4.1). Opt-in until its checksum is pinned here: TODO(issue
# 12) set HADOOP_AZURE_SHA1 to the sha1 of hadoop-azure-$HADOOP_VERSION.jar from a source you trust (Maven Central's
# .sha1 checked against the ASF release signature); with it empty the image has no ABFS and says so in the build log.
ARG HADOOP_AZURE_SHA1=
RUN if [ -z "$HADOOP_AZURE_SHA1" ]; then echo "HADOOP_AZURE_SHA1 unset: no hadoop-azure, no abfss://"; exit 0; fi \
 && python - \
      "$MAVEN/org/apache/hadoop/hadoop-azure/$HADOOP_VERSION/hadoop-azure-$HADOOP_VERSION.jar=$HADOOP_AZURE_SHA1" \
      <<'PY'
import hashlib, pathlib, sys, urllib.request
for arg in sys.argv[1:]:
    url, _, expected = arg.rpartition("=")
    target = pathlib.Path("/jars") / url.rsplit("/", 1)[1]
    urllib.request.urlretrieve(url, target)
    digest = hashlib.sha1(target.read_bytes()).hexdigest()
    if digest != expected:
        sys.exit(f"{target.name}: sha1 {digest}, expected {expected}")
PY

# ---------------------------------------------------------------------------------------------------------
# The Spark distribution (Spark, its Hadoop client, pyspark, the Kubernetes entry point) from the official image.
FROM ${SPARK_IMAGE} AS spark-dist

# ---------------------------------------------------------------------------------------------------------
# Driver and executors of the feature SparkApplication (components/spark_operator; docs/KUBERNETES.md). The official
# image's Python is Ubuntu's (not 3.11, which the wheel requires), so its Spark distribution runs here on the
# project's Python 3.11 with Debian's Java 17: Spark and pyspark are the official image's, not a second pyspark.
FROM runtime AS spark
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=spark-dist /opt/spark /opt/spark
COPY --from=spark-dist /opt/entrypoint.sh /opt/decom.sh /opt/
COPY --from=s3a-jars /jars/ /opt/spark/jars/
# The wheel with its base dependencies (pandas, pyarrow, numpy: what pyspark's DataFrame API needs) and no extra:
# the Spark distribution's python/ and py4j go on the path through a .pth file.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "fraud-detection" \
 && python -c "import glob, site; open(site.getsitepackages()[0] + '/spark.pth', 'w').write('\\n'.join(['/opt/spark/python', *glob.glob('/opt/spark/python/lib/py4j-*-src.zip')]) + '\\n')" \
 && python -c "import pyspark, py4j; assert pyspark.__file__.startswith('/opt/spark/')" \
 && pip check \
 && mkdir -p /opt/spark/work-dir /opt/fraud-detection \
 && chown 1000:1000 /opt/spark/work-dir
# The SparkApplication's mainApplicationFile (the chart's spark.mainApplicationFile).
COPY --from=builder /build/components/spark_operator/driver.py /opt/fraud-detection/spark_features.py
ENV SPARK_HOME=/opt/spark \
    PATH=/opt/spark/bin:$PATH \
    PYSPARK_PYTHON=python \
    PYSPARK_DRIVER_PYTHON=python
WORKDIR /opt/spark/work-dir
USER 1000:1000
HEALTHCHECK NONE
ENTRYPOINT ["/opt/entrypoint.sh"]
