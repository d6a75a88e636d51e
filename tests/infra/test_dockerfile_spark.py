"""The Dockerfile's ``spark`` target (the Spark Operator's driver and executors), checked statically like the others:
the official Spark image of pyspark's pinned version, pinned and checksummed S3A jars matching its Hadoop, the wheel
without a second pyspark, a numeric non-root user, and the driver where the chart's ``mainApplicationFile`` says."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from tests.infra.test_dockerfile import DOCKERFILE, REPO, Stage, chain, effective, exec_form, parse, source_copies

CHART = REPO / "helm" / "fraud-detection"


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def spark_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())["spark"]


def pyspark_pin() -> str:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["spark"]
    (pin,) = [r for r in extra if r.startswith("pyspark")]
    match = re.fullmatch(r"pyspark==(\d+\.\d+\.\d+)", pin)
    assert match, f"pyspark must be pinned exactly: {pin}"
    return match.group(1)


def stage_args(stage: Stage) -> dict[str, str]:
    return dict(i.args.partition("=")[::2] for i in stage.all("ARG"))


def test_the_spark_distribution_is_the_official_image_of_pysparks_version(stages, spark_values) -> None:
    version = pyspark_pin()
    dist = stages["spark-dist"].base
    assert re.fullmatch(rf"apache/spark:{re.escape(version)}(-[\w.]+)*", dist), dist
    assert "latest" not in dist
    assert spark_values["sparkVersion"] == version  # the SparkApplication's sparkVersion is the image's
    # The image runs on the project's runtime (Python 3.11, user 1000), with the distribution copied in.
    assert stages["spark"].base == "runtime"
    copies = [i.args for i in stages["spark"].all("COPY")]
    assert "--from=spark-dist /opt/spark /opt/spark" in copies


def test_s3a_jars_are_pinned_and_checksummed_and_match_the_hadoop_client(stages) -> None:
    jars = stages["s3a-jars"]
    args = stage_args(jars)
    assert args["HADOOP_VERSION"] == "3.5.0"  # pyspark 4.3.0 ships hadoop-client-api/-runtime 3.5.0
    for name in ("HADOOP_AWS_SHA1", "AWS_SDK_SHA1", "ANALYTICS_ACCELERATOR_SHA1"):
        assert re.fullmatch(r"[0-9a-f]{40}", args[name]), name
    for name in ("HADOOP_VERSION", "AWS_SDK_VERSION", "ANALYTICS_ACCELERATOR_VERSION"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", args[name]), name
    (fetch,) = [r for r in jars.all("RUN") if "hadoop-aws-" in r.args]
    assert "hadoop-aws-$HADOOP_VERSION.jar=$HADOOP_AWS_SHA1" in fetch.args
    assert "bundle-$AWS_SDK_VERSION.jar=$AWS_SDK_SHA1" in fetch.args
    assert args["MAVEN"] == "https://repo1.maven.org/maven2"
    text = DOCKERFILE.read_text()
    assert "hashlib.sha1(" in text and "sys.exit(" in text  # a mismatch fails the build
    assert "--from=s3a-jars /jars/ /opt/spark/jars/" in [i.args for i in stages["spark"].all("COPY")]


def test_the_abfs_jar_is_hadoops_own_version_and_checksummed_when_pinned(stages) -> None:
    """hadoop-azure (ABFS for az:// on AKS) follows HADOOP_VERSION like hadoop-aws; it is fetched only with a sha1
    to check it against (the pin is a TODO: no trustworthy checksum source was at hand), and a mismatch fails."""
    jars = stages["s3a-jars"]
    args = stage_args(jars)
    sha1 = args["HADOOP_AZURE_SHA1"]
    assert sha1 == "" or re.fullmatch(r"[0-9a-f]{40}", sha1), sha1
    (fetch,) = [r for r in jars.all("RUN") if "hadoop-azure" in r.args]
    assert (
        "$MAVEN/org/apache/hadoop/hadoop-azure/$HADOOP_VERSION/hadoop-azure-$HADOOP_VERSION.jar=$HADOOP_AZURE_SHA1"
        in (fetch.args)
    )
    assert 'if [ -z "$HADOOP_AZURE_SHA1" ]' in fetch.args  # never fetched unchecked
    text = DOCKERFILE.read_text()
    assert text.count("if digest != expected:") == 2 and text.count('sys.exit(f"{target.name}: sha1') == 2
    # Both jar sets land in the distribution's jars directory.
    assert "--from=s3a-jars /jars/ /opt/spark/jars/" in [i.args for i in stages["spark"].all("COPY")]


def test_the_installed_hadoop_client_is_the_version_the_jars_match(stages) -> None:
    """The pinned hadoop-aws follows the Hadoop client bundled with the pinned pyspark, when it is installed here."""
    pyspark = pytest.importorskip("pyspark")
    from pathlib import Path

    jars = {p.name for p in (Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar")}
    assert jars == {f"hadoop-client-api-{stage_args(stages['s3a-jars'])['HADOOP_VERSION']}.jar"}


def test_the_wheel_goes_in_without_a_second_pyspark(stages) -> None:
    installs = [i.args for i in stages["spark"].all("RUN") if "pip install" in i.args]
    assert len(installs) == 1
    (install,) = installs
    assert re.search(r'pip install --no-index --find-links=/wheels "fraud-detection"(\s|$)', install), install
    assert "pyspark" not in install.split("&&")[0] and "[spark]" not in install
    assert "from=builder" in install and re.search(r"&&\s*pip check\b", install)
    assert "pyspark.__file__.startswith('/opt/spark/')" in install  # the distribution's pyspark is the one found
    base = {
        re.split(r"[\s<>=\[;]", r)[0].lower()
        for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    assert "pyspark" not in base and {"pandas", "pyarrow", "numpy"} <= base


def test_runs_as_a_numeric_non_root_user_with_sparks_entrypoint(stages) -> None:
    user = effective(stages, "spark", "USER")
    assert user is not None and user.args.split(":")[0] == "1000"
    keywords = [i.keyword for i in stages["spark"].instructions]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k in ("RUN", "COPY"))
    assert exec_form(effective(stages, "spark", "ENTRYPOINT")) == ["/opt/entrypoint.sh"]
    assert "--from=spark-dist /opt/entrypoint.sh /opt/decom.sh /opt/" in [i.args for i in stages["spark"].all("COPY")]


def test_the_driver_is_where_the_charts_main_application_file_points(stages, spark_values) -> None:
    main = spark_values["mainApplicationFile"]
    assert main.startswith("local://")
    copies = [i.args.split() for i in stages["spark"].all("COPY")]
    assert ["--from=builder", "/build/components/spark_operator/driver.py", main.removeprefix("local://")] in copies
    # The builder copies components/ to /build/components/ (so that source exists in that stage).
    assert any(i.args.split()[:2] == ["components/", "components/"] for i in stages["builder"].all("COPY"))


def test_no_source_tree_and_the_chart_names_the_image(stages, spark_values) -> None:
    assert source_copies(stages, "spark") == []
    assert [s.name for s in chain(stages, "spark")][:2] == ["spark", "runtime"]
    assert spark_values["image"]["repository"] == "fraud-detection-spark"
    assert spark_values["image"]["tag"] == ""  # image.tag, then the chart's appVersion, like the other images
