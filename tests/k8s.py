"""Shared helpers of the Kubernetes tests: render the Helm chart and the kustomize overlays, validate objects.

Validation has three layers, chosen per object:

* core kinds (Deployment, CronJob, NetworkPolicy, RBAC, ...) go through ``kubernetes_validate`` with the strict
  Kubernetes 1.30 schemas, which reject unknown fields;
* custom resources with a CRD under ``tests/schemas/`` (KServe InferenceService, Prometheus Operator PodMonitor,
  ServiceMonitor, PrometheusRule, the CSI driver's SecretProviderClass) are validated with ``jsonschema`` against
  the CRD's ``openAPIV3Schema``, closed with ``additionalProperties: false`` wherever the schema lists
  ``properties`` (CRD schemas leave that open, and the API server would silently prune an unknown field); their
  ``metadata`` is checked against the strict ObjectMeta schema;
* Istio kinds have no schema here: they are checked structurally (apiVersion, kind, name, a ``spec`` mapping).

Anything else is an error, so no rendered object escapes validation.

The chart links its alert rules and dashboards from ``monitoring/`` through symlinks. Helm follows them, but
writes a warning on stderr, which makes checkov skip the chart silently; the tests therefore work on a
dereferenced copy (:func:`materialize_chart`). ``FRAUD_TEST_MONITORING_DIR`` may point the copy at another
monitoring tree (a directory with ``alerts/`` and ``dashboards/``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART_DIR = REPO / "helm" / "fraud-detection"
MANIFESTS_DIR = REPO / "manifests"
SCHEMAS_DIR = REPO / "tests" / "schemas"
KUBERNETES_VERSION = "1.30"
NAMESPACE = "fraud-detection"
RELEASE = "fraud-detection"
BIN = REPO / ".venv" / "bin"

CRD_FILES = {
    "serving.kserve.io": ["kserve_serving.kserve.io_inferenceservices.yaml"],
    "monitoring.coreos.com": [
        "prometheus-operator_monitoring.coreos.com_podmonitors.yaml",
        "prometheus-operator_monitoring.coreos.com_servicemonitors.yaml",
        "prometheus-operator_monitoring.coreos.com_prometheusrules.yaml",
    ],
    "secrets-store.csi.x-k8s.io": ["secrets-store-csi-driver_secretproviderclasses.yaml"],
}
# Azure Monitor managed Prometheus ships the Prometheus Operator CRDs under another group, unchanged otherwise.
CRD_GROUP_ALIASES = {"azmonitoring.coreos.com": "monitoring.coreos.com"}
ISTIO_KINDS = {
    "security.istio.io/v1": {"RequestAuthentication", "AuthorizationPolicy"},
    "networking.istio.io/v1alpha3": {"EnvoyFilter"},
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}


class ToolError(RuntimeError):
    """A helm/kubectl invocation failed; the message carries its stderr."""


def tool(name: str) -> str:
    """Return the path of a command-line tool, preferring the project's venv.

    Args:
        name: Executable name, e.g. ``helm``.

    Returns:
        The absolute path of the executable.

    Raises:
        FileNotFoundError: When the tool is neither in ``.venv/bin`` nor on PATH.
    """
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found in {BIN} or on PATH; run `python3 tools/bootstrap.py`")
    return found


def run_tool(args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
    """Run a tool and return its stdout.

    Args:
        args: Command line; ``args[0]`` is resolved with :func:`tool`.
        env: Extra environment variables.
        timeout: Seconds before the command is killed.

    Returns:
        The command's standard output.

    Raises:
        ToolError: When the command exits non-zero.
    """
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [tool(args[0]), *args[1:]], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise ToolError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr}\n{proc.stdout[-2000:]}")
    return proc.stdout


def load_documents(text: str) -> list[dict[str, Any]]:
    """Parse a multi-document YAML stream, dropping empty documents.

    Args:
        text: YAML text.

    Returns:
        The non-empty documents.
    """
    return [doc for doc in yaml.safe_load_all(text) if doc]


# --------------------------------------------------------------------------------------------------- chart


def monitoring_dir() -> Path:
    """Return the monitoring tree whose alerts and dashboards the chart ships.

    Returns:
        ``$FRAUD_TEST_MONITORING_DIR`` when set, else the repository's ``monitoring/``.
    """
    override = os.environ.get("FRAUD_TEST_MONITORING_DIR")
    return Path(override) if override else REPO / "monitoring"


def materialize_chart(dest: Path, source: Path = CHART_DIR) -> Path:
    """Copy the chart to ``dest`` with its symlinks replaced by the files they point to.

    Args:
        dest: Target directory (must not exist).
        source: Chart directory.

    Returns:
        ``dest``.
    """
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    mon = monitoring_dir()
    for link in ("alerts", "dashboards"):
        target = dest / "files" / link
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        src = mon / link
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.py", "*.pyc"))
        else:
            target.mkdir(parents=True)
    return dest


def helm_template(
    chart: Path,
    values_files: Sequence[Path] = (),
    set_values: Sequence[str] = (),
    *,
    namespace: str = NAMESPACE,
    release: str = RELEASE,
) -> list[dict[str, Any]]:
    """Render the chart with ``helm template`` (which also validates the values against values.schema.json).

    Args:
        chart: Chart directory.
        values_files: Values files, applied in order.
        set_values: ``--set`` expressions.
        namespace: Release namespace.
        release: Release name.

    Returns:
        The rendered objects.
    """
    args = ["helm", "template", release, str(chart), "--namespace", namespace]
    for values in values_files:
        args += ["--values", str(values)]
    for expr in set_values:
        args += ["--set", expr]
    return load_documents(run_tool(args))


# ------------------------------------------------------------------------------------------------ kustomize


def kustomize(overlay: Path) -> list[dict[str, Any]]:
    """Render a kustomize directory with ``kubectl kustomize``.

    Args:
        overlay: Directory holding a kustomization.yaml.

    Returns:
        The rendered objects.
    """
    return load_documents(run_tool(["kubectl", "kustomize", str(overlay)]))


def overlays() -> list[Path]:
    """Return the kustomize overlays under manifests/overlays, sorted by name.

    Returns:
        The overlay directories.
    """
    return sorted(p.parent for p in (MANIFESTS_DIR / "overlays").glob("*/kustomization.yaml"))


# ----------------------------------------------------------------------------------------------- validation


def close_schema(schema: Any) -> Any:
    """Return a copy of an OpenAPI v3 schema with unknown fields rejected.

    ``additionalProperties: false`` is added to every object schema that lists ``properties``, has no
    ``additionalProperties`` of its own and does not set ``x-kubernetes-preserve-unknown-fields``.

    Args:
        schema: A (CRD) OpenAPI v3 schema.

    Returns:
        The closed copy.
    """
    if isinstance(schema, list):
        return [close_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "definitions") and isinstance(value, dict):
            # A mapping of names to schemas: close each schema, never the mapping itself.
            closed[key] = {name: close_schema(sub) for name, sub in value.items()}
        else:
            closed[key] = close_schema(value)
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """Build (and cache) a validator per (apiVersion, kind) from the CRDs under tests/schemas/.

    Returns:
        Validators keyed by ``("group/version", "Kind")``; aliased groups map to the same validator.
    """
    validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for group, files in CRD_FILES.items():
        for name in files:
            with (SCHEMAS_DIR / name).open() as fh:
                crd = yaml.load(fh, Loader=yaml.CSafeLoader)
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                schema = close_schema(version["schema"]["openAPIV3Schema"])
                validator = jsonschema.Draft7Validator(schema)
                validators[(f"{group}/{version['name']}", kind)] = validator
                for alias, target in CRD_GROUP_ALIASES.items():
                    if target == group:
                        validators[(f"{alias}/{version['name']}", kind)] = validator
    return validators


@functools.cache
def _object_meta_validator() -> jsonschema.protocols.Validator:
    """Validator of ObjectMeta from kubernetes-validate's strict definitions (for custom resources' metadata)."""
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    version_dir = next(
        d
        for d in sorted(root.iterdir(), reverse=True)
        if d.name.startswith(f"v{KUBERNETES_VERSION}.") and d.name.endswith("-local-strict")
    )
    definitions = json.loads((version_dir / "_definitions.json").read_text())["$defs"]
    schema = {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "$defs": definitions}
    return jsonschema.Draft202012Validator(schema)


def describe(obj: Mapping[str, Any]) -> str:
    """Short identity of an object for messages: ``Kind/namespace/name``."""
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')}"


def validate_object(obj: dict[str, Any]) -> list[str]:
    """Validate one object; see the module docstring for the layers.

    Args:
        obj: A rendered Kubernetes object.

    Returns:
        Error messages (empty when the object is valid).
    """
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    who = describe(obj)
    if (api_version, kind) in crd_validators():
        errors = [
            f"{who}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in crd_validators()[(api_version, kind)].iter_errors(obj)
        ]
        errors += [
            f"{who}: metadata.{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in _object_meta_validator().iter_errors(obj.get("metadata", {}))
        ]
        return errors
    if kind in ISTIO_KINDS.get(api_version, set()):
        errors = []
        extra = sorted(set(obj) - {"apiVersion", "kind", "metadata", "spec"})
        if extra:
            errors.append(f"{who}: unexpected top-level fields {extra}")
        if not isinstance(obj.get("spec"), dict) or not obj["spec"]:
            errors.append(f"{who}: spec must be a non-empty mapping")
        errors += [
            f"{who}: metadata.{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in _object_meta_validator().iter_errors(obj.get("metadata", {}))
        ]
        return errors
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{who}: {'.'.join(map(str, exc.path))}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{who}: no schema to validate against ({exc.message})"]
    return []


def validate_all(objects: Sequence[dict[str, Any]]) -> list[str]:
    """Validate every object and check (apiVersion, kind, namespace, name) is unique.

    Args:
        objects: Rendered objects.

    Returns:
        All error messages.
    """
    errors: list[str] = []
    seen: set[tuple[str, str, str | None, str]] = set()
    for obj in objects:
        errors += validate_object(obj)
        key = identity(obj)
        if key in seen:
            errors.append(f"duplicate object {key}")
        seen.add(key)
    return errors


def identity(obj: Mapping[str, Any]) -> tuple[str, str, str | None, str]:
    """Identity of an object: (API group, kind, namespace, name); the group ignores the version."""
    meta = obj.get("metadata") or {}
    group = obj.get("apiVersion", "").rpartition("/")[0]
    return (group, obj.get("kind", ""), meta.get("namespace"), meta.get("name", ""))


# ---------------------------------------------------------------------------------------------- inspection


@dataclass(frozen=True)
class PodTemplate:
    """A pod spec found in a rendered object."""

    owner: str
    spec: dict[str, Any]
    # Whether the pod-level securityContext is expected (not for Knative-based InferenceServices).
    pod_security_expected: bool


def pod_templates(objects: Sequence[dict[str, Any]]) -> Iterator[PodTemplate]:
    """Yield every pod spec of the rendered objects, including the InferenceService predictor.

    Args:
        objects: Rendered objects.

    Yields:
        One :class:`PodTemplate` per pod spec.
    """
    for obj in objects:
        kind = obj.get("kind")
        if kind == "Pod":
            yield PodTemplate(describe(obj), obj["spec"], True)
        elif kind == "CronJob":
            yield PodTemplate(describe(obj), obj["spec"]["jobTemplate"]["spec"]["template"]["spec"], True)
        elif kind in POD_TEMPLATE_KINDS:
            yield PodTemplate(describe(obj), obj["spec"]["template"]["spec"], True)
        elif kind == "InferenceService":
            for component in ("predictor", "transformer", "explainer"):
                spec = obj["spec"].get(component)
                if spec is not None:
                    mode = (obj["metadata"].get("annotations") or {}).get("serving.kserve.io/deploymentMode")
                    # Knative mode (legacy name Serverless) takes no pod-level securityContext by default.
                    yield PodTemplate(f"{describe(obj)}:{component}", spec, mode not in ("Knative", "Serverless"))


def find(objects: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Return the objects of a kind (and name).

    Args:
        objects: Rendered objects.
        kind: Kind to select.
        name: Optional name to select.

    Returns:
        The matching objects.
    """
    return [o for o in objects if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """Return the single object of a kind (and name), failing when there is not exactly one.

    Args:
        objects: Rendered objects.
        kind: Kind to select.
        name: Optional name to select.

    Returns:
        The object.
    """
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[describe(o) for o in found]}"
    return found[0]


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    """Map a container's env var names to their ``value`` or ``valueFrom``.

    Args:
        container: A container spec.

    Returns:
        ``{name: value or valueFrom}``.
    """
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
