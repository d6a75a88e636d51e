"""Each component's body, called through ``.python_func`` on small real data (no kfp runner involved).

Also the deploy helpers behind ``deploy_model`` (``fraud_detection.deploy``), with a fake Kubernetes API.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import jsonpatch
import jsonschema
import pandas as pd
import pytest
import yaml
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Metrics, Model

from components.build_features import build_features
from components.deploy_model import deploy_model
from components.evaluate_model import evaluate_model
from components.ingest_data import ingest_data
from components.register_model import register_model
from components.train_model import train_model
from components.validate_data import validate_data
from fraud_detection.data import schema
from fraud_detection.model.bundle import MANIFEST_FILE, load_bundle
from fraud_detection.model.registry import ModelRegistry
from fraud_detection.rollout import canary, contract, errors, patches
from fraud_detection.store.local import LocalStore

REPO = Path(__file__).resolve().parents[3]
TRAIN = {"max_iter": 40, "test_days": 10, "delay_days": 7}


def art(kind: type, path: Path) -> Any:
    return kind(name=path.name, uri=str(path))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One OpenMP/BLAS thread: on shared cores per-core threads spin at barriers and slow training several-fold."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, small_features: pd.DataFrame) -> dict[str, Any]:
    """train_model's body on the small feature set: the bundle and test-set artifacts and the returned version."""
    root = tmp_path_factory.mktemp("train")
    features = art(Dataset, root / "features")
    schema.write_frame(small_features, features.path)
    bundle, test_set = art(Model, root / "bundle"), art(Dataset, root / "test_set")
    version = train_model.python_func(
        features=features, bundle=bundle, test_set=test_set, source="unit test", model_name="fraud-detector", **TRAIN
    )
    return {"bundle": bundle, "test_set": test_set, "version": version}


# ingest_data -----------------------------------------------------------------------------------------------------


def test_ingest_simulates_when_no_source(tmp_path: Path):
    raw = art(Dataset, tmp_path / "raw")
    source = ingest_data.python_func(raw=raw, n_customers=50, n_terminals=100, n_days=5, seed=1)
    files = list(Path(raw.path).iterdir())
    assert [f.name for f in files] == ["tx.parquet"]
    frame = pd.read_parquet(files[0])
    assert len(frame) > 0
    assert set(schema.RAW_REQUIRED) <= set(frame.columns)
    assert source.startswith("simulator(customers=50, terminals=100, days=5")
    assert raw.metadata["source"] == source


def test_ingest_copies_a_local_file_unchanged(tmp_path: Path):
    src = tmp_path / "input.csv"
    src.write_text("TRANSACTION_ID,TX_AMOUNT\nt1,-5\n")  # invalid on purpose: ingest never validates
    raw = art(Dataset, tmp_path / "raw")
    source = ingest_data.python_func(raw=raw, data_source=str(src), source_version="v7")
    assert (Path(raw.path) / "input.csv").read_bytes() == src.read_bytes()
    assert source == f"{src.resolve()}@v7"
    assert raw.metadata == {"source": str(src.resolve()), "source_version": "v7"}


def test_ingest_copies_a_parquet_directory(tmp_path: Path, small_raw: pd.DataFrame):
    src = tmp_path / "parts"
    schema.write_frame(small_raw.iloc[:100], src / "part-0.parquet")
    schema.write_frame(small_raw.iloc[100:200], src / "part-1.parquet")
    raw = art(Dataset, tmp_path / "raw")
    ingest_data.python_func(raw=raw, data_source=str(src))
    assert sorted(p.name for p in Path(raw.path).iterdir()) == ["part-0.parquet", "part-1.parquet"]


def test_ingest_names_a_missing_source(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"data source .*nope\.csv: no such file"):
        ingest_data.python_func(raw=art(Dataset, tmp_path / "raw"), data_source=str(tmp_path / "nope.csv"))


# validate_data ---------------------------------------------------------------------------------------------------


def _raw_dir(tmp_path: Path, frame: pd.DataFrame, name: str = "tx.parquet") -> Dataset:
    raw = art(Dataset, tmp_path / "raw")
    schema.write_frame(frame, Path(raw.path) / name)
    return raw


def test_validate_writes_the_normalised_window(tmp_path: Path, small_raw: pd.DataFrame):
    shuffled = small_raw.sample(frac=1.0, random_state=0)
    validated = art(Dataset, tmp_path / "validated")
    validate_data.python_func(raw=_raw_dir(tmp_path, shuffled), validated=validated, test_days=10)
    out = pd.read_parquet(validated.path)
    assert len(out) == len(small_raw)
    assert out[schema.EVENT_TIME].is_monotonic_increasing
    assert str(out[schema.EVENT_TIME].dt.tz) == "UTC"
    assert validated.metadata["rows"] == len(small_raw)
    assert 0 < validated.metadata["fraud_rate"] < 0.5


def test_validate_cuts_the_data_window(tmp_path: Path, small_raw: pd.DataFrame):
    validated = art(Dataset, tmp_path / "validated")
    end = small_raw[schema.EVENT_TIME].min().floor("D") + pd.Timedelta(days=40)
    validate_data.python_func(
        raw=_raw_dir(tmp_path, small_raw),
        validated=validated,
        window_end=end.strftime("%Y-%m-%d"),
        window_days=30,
        test_days=10,
    )
    times = pd.read_parquet(validated.path)[schema.EVENT_TIME]
    assert times.min() >= end - pd.Timedelta(days=30)
    assert times.max() < end


def test_validate_reads_csv_with_a_column_map(tmp_path: Path, small_raw: pd.DataFrame):
    renamed = small_raw.rename(columns={"amount": "amt", "customer_id": "card"})
    raw = art(Dataset, tmp_path / "raw")
    Path(raw.path).mkdir()
    renamed.to_csv(Path(raw.path) / "tx.csv", index=False)
    validated = art(Dataset, tmp_path / "validated")
    validate_data.python_func(raw=raw, validated=validated, column_map="amt=amount, card=customer_id", test_days=10)
    assert {"amount", "customer_id"} <= set(pd.read_parquet(validated.path).columns)


def _negative(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index[:3], "amount"] = -1.0
    return out


@pytest.mark.parametrize(
    ("mutate", "kwargs", "message"),
    [
        (_negative, {}, r"column 'amount': 3 negative amount\(s\)"),
        (lambda df: df.drop(columns=["terminal_id"]), {}, r"missing column\(s\): terminal_id"),
        (lambda df: df.drop(columns=["is_fraud"]), {}, r"missing column\(s\): is_fraud"),
        (lambda df: df.assign(is_fraud=0), {}, r"'is_fraud': the training window needs both fraud and legitimate"),
        (lambda df: df, {"window_days": 15}, r"spans 15 day\(s\); training needs at least 19"),
        (lambda df: df, {"min_rows": 10**7}, r"holds \d+ transaction\(s\); min_rows is 10000000"),
    ],
    ids=["negative-amount", "missing-column", "no-label", "no-fraud", "too-few-days", "too-few-rows"],
)
def test_validate_rejects_bad_data_with_a_message_naming_the_problem(
    tmp_path: Path, small_raw: pd.DataFrame, mutate: Any, kwargs: dict[str, Any], message: str
):
    validated = art(Dataset, tmp_path / "validated")
    with pytest.raises(schema.SchemaError, match=message):
        validate_data.python_func(
            raw=_raw_dir(tmp_path, mutate(small_raw)), validated=validated, test_days=10, **kwargs
        )
    assert not Path(validated.path).exists()


# build_features --------------------------------------------------------------------------------------------------


def test_build_features_writes_every_feature(tmp_path: Path, small_raw: pd.DataFrame):
    validated = art(Dataset, tmp_path / "validated")
    schema.write_frame(schema.validate_transactions(small_raw), validated.path)
    features = art(Dataset, tmp_path / "features")
    build_features.python_func(validated=validated, features=features, label_delay_days=7)
    frame = pd.read_parquet(features.path)
    schema.validate_feature_frame(frame)
    assert len(frame) == len(small_raw)
    assert schema.LABEL in frame.columns
    assert features.metadata == {"rows": len(small_raw), "features": len(schema.FEATURES)}


# train_model -----------------------------------------------------------------------------------------------------


def test_train_writes_a_verified_bundle_and_the_test_rows(trained: dict[str, Any]):
    bundle = load_bundle(trained["bundle"].path)
    assert (Path(trained["bundle"].path) / MANIFEST_FILE).exists()
    assert bundle.metadata.version == trained["version"] == trained["bundle"].metadata["version"]
    assert bundle.metadata.training.source == "unit test"
    assert bundle.metadata.params["max_iter"] == 40
    test = pd.read_parquet(trained["test_set"].path)
    assert test[schema.EVENT_TIME].dt.floor("D").nunique() == 10
    assert trained["test_set"].metadata["n_fraud"] == int(test[schema.LABEL].sum()) > 0


def test_train_days_zero_trains_on_everything_before_the_delay_window(tmp_path: Path, small_features: pd.DataFrame):
    features = art(Dataset, tmp_path / "features")
    schema.write_frame(small_features, features.path)
    bundle = art(Model, tmp_path / "bundle")
    train_model.python_func(
        features=features, bundle=bundle, test_set=art(Dataset, tmp_path / "t"), **{**TRAIN, "train_days": 0}
    )
    lineage = load_bundle(bundle.path).metadata.training
    first = small_features[schema.EVENT_TIME].min().floor("D")
    assert pd.Timestamp(lineage.start).floor("D") == first
    assert lineage.n_rows > 28 * len(small_features) / 60


def test_train_rejects_an_unknown_model_type(tmp_path: Path, small_features: pd.DataFrame):
    features = art(Dataset, tmp_path / "features")
    schema.write_frame(small_features.head(10), features.path)
    with pytest.raises(ValueError, match="model_type must be one of"):
        train_model.python_func(
            features=features,
            bundle=art(Model, tmp_path / "b"),
            test_set=art(Dataset, tmp_path / "t"),
            model_type="xgb",
        )


# evaluate_model and register_model -------------------------------------------------------------------------------


def _evaluate(trained: dict[str, Any], tmp_path: Path, store: Path, **kwargs: Any) -> tuple[bool, Metrics, Any, HTML]:
    metrics = art(Metrics, tmp_path / "metrics")
    curves = art(ClassificationMetrics, tmp_path / "curves")
    report = art(HTML, tmp_path / "report")
    promote = evaluate_model.python_func(
        bundle=trained["bundle"],
        test_set=trained["test_set"],
        metrics=metrics,
        curves=curves,
        report=report,
        store_uri=str(store),
        model_name="fraud-detector",
        **kwargs,
    )
    return promote, metrics, curves, report


def test_evaluate_without_production_promotes_and_logs_metrics_curves_and_report(
    trained: dict[str, Any], tmp_path: Path
):
    promote, metrics, curves, report = _evaluate(trained, tmp_path, tmp_path / "empty-store")
    assert promote is True
    assert 0 < metrics.metadata["average_precision"] <= 1
    assert 0 <= metrics.metadata["card_precision_at_100"] <= 1
    assert not any(k.startswith("production_") for k in metrics.metadata)
    roc = curves.metadata["confidenceMetrics"]
    assert 2 <= len(roc) <= 200
    assert all(0 <= p["confidenceThreshold"] <= 1 for p in roc)
    assert roc[-1]["recall"] == pytest.approx(1.0)
    matrix = curves.metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["legitimate", "fraud"]
    test = pd.read_parquet(trained["test_set"].path)
    assert sum(map(sum, (row["row"] for row in matrix["rows"]))) == len(test)
    page = Path(report.path).read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "promote to production" in page
    assert "no production model" in page
    assert report.metadata["version"] == trained["version"]


def test_register_publishes_then_the_same_model_is_neither_promoted_nor_registered_again(
    trained: dict[str, Any], tmp_path: Path
):
    store = tmp_path / "store"
    first = register_model.python_func(
        bundle=trained["bundle"], test_set=trained["test_set"], store_uri=str(store), model_name="fraud-detector"
    )
    registry = ModelRegistry(LocalStore(store), "fraud-detector")
    assert first.version == trained["version"]
    assert (registry.get_alias("production") or {}).get("version") == first.version
    assert Path(first.storage_uri) == store / "models/fraud-detector/versions" / first.version
    assert (Path(first.storage_uri) / MANIFEST_FILE).exists()

    promote, metrics, _, report = _evaluate(trained, tmp_path, store)
    assert promote is False
    assert metrics.metadata["production_average_precision"] == metrics.metadata["average_precision"]
    assert "keep production" in Path(report.path).read_text()
    assert any("average precision" in r and r.endswith("fail") for r in report.metadata["reasons"])

    again = register_model.python_func(
        bundle=trained["bundle"], test_set=trained["test_set"], store_uri=str(store), model_name="fraud-detector"
    )
    assert (again.version, again.storage_uri) == ("", "")
    assert registry.versions() == [first.version]


def test_evaluate_honours_a_negative_margin(trained: dict[str, Any], tmp_path: Path):
    store = tmp_path / "store"
    register_model.python_func(
        bundle=trained["bundle"], test_set=trained["test_set"], store_uri=str(store), model_name="fraud-detector"
    )
    promote, *_ = _evaluate(trained, tmp_path, store, min_ap_gain=-0.01)
    assert promote is True


# deploy_model and fraud_detection.deploy -------------------------------------------------------------------------


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def test_deploy_model_skips_without_a_version():
    assert deploy_model.python_func(model_version="", storage_uri="") == "skipped"


def test_deploy_model_skips_cleanly_without_a_cluster(
    no_cluster: None, caplog: pytest.LogCaptureFixture, tmp_path: Path
):
    caplog.set_level("INFO")
    result = deploy_model.python_func(
        model_version="v1", storage_uri="s3://m/models/x/versions/v1", store_uri=str(tmp_path / "store")
    )
    assert result == "skipped"
    assert "no Kubernetes cluster configured" in caplog.text


def chart_isvc(version: str = "v1", **predictor: Any) -> dict[str, Any]:
    """An InferenceService shaped like the chart's (custom predictor container)."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "fraud-detector", "namespace": "fraud-detection", "resourceVersion": "42"},
        "spec": {
            "predictor": {
                "minReplicas": 2,
                **predictor,
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "ghcr.io/fraud-detection/fraud-detection-serve:0.1.0",
                        "env": [
                            {"name": "STORAGE_URI", "value": f"s3://b/models/fraud-detector/versions/{version}"},
                            {"name": "FRAUD_MODEL_VERSION", "value": version},
                            {"name": "FRAUD_PAYLOAD_LOG_ENABLED", "value": "true"},
                        ],
                    }
                ],
            }
        },
    }


@functools.cache
def _isvc_schema() -> dict[str, Any]:
    crd = yaml.load(
        (REPO / "tests/schemas/kserve_serving.kserve.io_inferenceservices.yaml").read_text(), Loader=yaml.CSafeLoader
    )
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    return version["schema"]["openAPIV3Schema"]


class Cluster:
    """An autospec'd CustomObjectsApi over one InferenceService (or none): get, create, JSON-patch."""

    def __init__(self, obj: dict[str, Any] | None, error_status: int = 404) -> None:
        from kubernetes.client import CustomObjectsApi
        from kubernetes.client.exceptions import ApiException

        self.obj = obj
        self.api = mock.create_autospec(CustomObjectsApi, instance=True)
        self.api.get_namespaced_custom_object.side_effect = lambda *a: (
            json.loads(json.dumps(self.obj)) if self.obj else _raise(ApiException(status=error_status, reason="x"))
        )
        self.api.create_namespaced_custom_object.side_effect = self._create
        self.api.patch_namespaced_custom_object.side_effect = self._patch

    def _create(self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        assert (group, version, namespace, plural) == (
            "serving.kserve.io",
            "v1beta1",
            "fraud-detection",
            "inferenceservices",
        )
        self.obj = body
        return body

    def _patch(self, group: str, version: str, namespace: str, plural: str, name: str, body: Any) -> dict[str, Any]:
        assert isinstance(body, list), "the canary must be a JSON patch, not a merge patch"
        self.obj = jsonpatch.apply_patch(self.obj or {}, body)
        return self.obj


def _raise(exc: Exception) -> Any:
    raise exc


def _deploy(cluster: Cluster, version: str = "v2", registry: ModelRegistry | None = None) -> canary.DeployResult:
    return canary.deploy_canary(
        name="fraud-detector",
        namespace="fraud-detection",
        model_name="fraud-detector",
        version=version,
        storage_uri=f"s3://store/models/fraud-detector/versions/{version}",
        canary_traffic_percent=10,
        registry=registry,
        api=cluster.api,
    )


def test_deploy_canary_creates_a_missing_inference_service():
    cluster = Cluster(None)
    result = _deploy(cluster)
    assert result.action == "created"
    created = cluster.obj or {}
    jsonschema.validate(created, _isvc_schema())
    assert patches.read_state(created).model_version == "v2"
    assert patches.read_state(created).storage_uri == "s3://store/models/fraud-detector/versions/v2"
    cluster.api.patch_namespaced_custom_object.assert_not_called()


def test_deploy_canary_starts_the_rollouts_canary_and_moves_the_canary_alias(trained: dict[str, Any], tmp_path: Path):
    registry = ModelRegistry(LocalStore(tmp_path / "store"), "fraud-detector")
    version = registry.publish(Path(trained["bundle"].path))
    cluster = Cluster(chart_isvc("v1"))
    result = _deploy(cluster, version, registry)
    assert (result.action, result.version) == ("canary", version)
    assert "beside v1" in result.reason
    patched = cluster.obj or {}
    jsonschema.validate(patched, _isvc_schema())
    state = patches.read_state(patched)
    assert (state.model_version, state.canary_percent) == (version, 10)
    assert state.storage_uri == f"s3://b/models/fraud-detector/versions/{version}"  # the InferenceService's root
    assert (state.stable_version, state.canary_version) == ("v1", version)
    assert patched["metadata"]["annotations"][contract.VERSION_ANNOTATION] == version
    env = {e["name"]: e["value"] for e in patched["spec"]["predictor"]["containers"][0]["env"]}
    assert env["FRAUD_PAYLOAD_LOG_ENABLED"] == "true"
    assert (registry.get_alias("canary") or {}).get("version") == version


def test_deploy_canary_leaves_an_up_to_date_service_alone():
    cluster = Cluster(chart_isvc("v2"))
    assert _deploy(cluster, "v2").action == "unchanged"
    cluster.api.patch_namespaced_custom_object.assert_not_called()


def test_deploy_canary_refuses_while_another_canary_runs():
    cluster = Cluster(chart_isvc("v2", canaryTrafficPercent=10))
    with pytest.raises(errors.RolloutError, match="runs already"):
        _deploy(cluster, "v3")
    cluster.api.patch_namespaced_custom_object.assert_not_called()


def test_deploy_canary_reports_other_api_errors():
    with pytest.raises(errors.RolloutError, match="HTTP 403"):
        _deploy(Cluster(None, error_status=403))


def test_deploy_canary_skips_without_a_cluster(no_cluster: None):
    result = canary.deploy_canary(
        name="x", namespace="y", model_name="m", version="v1", storage_uri="s3://b/v1", canary_traffic_percent=10
    )
    assert result.action == "skipped"
