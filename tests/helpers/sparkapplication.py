"""Strict validation of SparkApplication manifests against the Spark Operator's CRD (tests/schemas/, SOURCES.txt).

Strict as for the KServe objects (tests/k8s.py): the CRD's openAPIV3Schema closed with ``additionalProperties:
false`` wherever it lists properties, so an unknown or misspelt field fails instead of being pruned by the API
server, and ``metadata`` against the strict ObjectMeta schema.
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
import yaml

from tests import k8s

CRD = k8s.SCHEMAS_DIR / "spark-operator_sparkoperator.k8s.io_sparkapplications.yaml"


@functools.cache
def validator(api_version: str = "sparkoperator.k8s.io/v1beta2") -> jsonschema.protocols.Validator:
    """The closed schema of one served version of the SparkApplication CRD."""
    with CRD.open() as fh:
        crd = yaml.load(fh, Loader=yaml.CSafeLoader)
    assert crd["spec"]["names"]["kind"] == "SparkApplication"
    (version,) = [v for v in crd["spec"]["versions"] if f"{crd['spec']['group']}/{v['name']}" == api_version]
    assert version.get("served", True)
    return jsonschema.Draft7Validator(k8s.close_schema(version["schema"]["openAPIV3Schema"]))


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Every violation of the CRD schema and of the strict ObjectMeta schema, as ``path: message`` lines."""
    found = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(obj["apiVersion"]).iter_errors(obj)
    ]
    meta = k8s._object_meta_validator().iter_errors(obj.get("metadata", {}))
    return found + [f"metadata.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in meta]
