"""KServe v1/v2 wire decoding: tensors and records into the scorer's feature matrix and identifiers (and outputs)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from kserve import InferOutput
from kserve.utils.numpy_codec import from_np_dtype

from fraud_detection.data import schema
from fraud_detection.features.seed import complete_seed
from fraud_detection.scoring.results import InputError
from fraud_detection.scoring.scorer import Scorer
from serving.strict import CheckedData, check_tensor_data, number_leaf

#: Datatypes a v2 input tensor may have.
FLOAT_DATATYPES: tuple[str, ...] = ("FP32", "FP64")
#: Name of the single-tensor input holding every feature in schema order.
MATRIX_INPUT = "features"
#: Optional identifier inputs/keys (never model features; logged only as configured).
IDENTIFIERS: tuple[str, ...] = (schema.TRANSACTION_ID, schema.CUSTOMER_ID, schema.TERMINAL_ID)
#: Default largest amount a request may carry (raw transactions and feature vectors; ``--max_amount``).
MAX_AMOUNT = 1e9


@dataclass(frozen=True)
class Tensor:
    """A protocol-neutral input tensor (what a v2 request carries).

    Attributes:
        name: Input name.
        datatype: v2 datatype name (``FP32``, ``FP64``, ``BYTES``, ...).
        shape: Declared shape.
        data: The values: a numpy array or a flat or nested list (a :class:`serving.strict.CheckedData` list when
            :func:`serving.strict.check_v2_body` checked it already).
    """

    name: str
    datatype: str
    shape: Sequence[int]
    data: Any


class JsonListOutput(InferOutput):
    """A KServe ``InferOutput`` whose JSON data is one ``tolist()`` of its numeric array.

    KServe converts a numeric output for a JSON response value by value (``[v.item() for v in a.flatten()]``, about
    0.4 ms per 1,000 values); ``tolist()`` gives the same Python numbers and booleans in one C call. Binary data,
    BYTES and anything KServe would refuse take KServe's own path (its checks and messages).
    """

    def set_data_from_numpy(self, output_tensor: np.ndarray, binary_data: bool = True) -> None:
        """Set the output's data from an array; see ``InferOutput.set_data_from_numpy``.

        Args:
            output_tensor: The values, of the output's datatype and shape.
            binary_data: Send them as binary data (KServe's path) rather than in the JSON.
        """
        if (
            binary_data
            or not isinstance(output_tensor, np.ndarray)
            or output_tensor.dtype.kind not in "biuf"
            or from_np_dtype(output_tensor.dtype) != self.datatype
            or list(output_tensor.shape) != list(self.shape)
            or getattr(self, "_raw_data", None) is not None  # binary data set before: KServe clears it
        ):
            super().set_data_from_numpy(output_tensor, binary_data=binary_data)
            return
        if isinstance(self.parameters, dict):
            self.parameters.pop("binary_data_size", None)
        values: Any = output_tensor.reshape(-1).tolist()  # typed Any: `data` also holds arrays (KServe's setter)
        self.data = values


def matrix_from_tensors(scorer: Scorer, tensors: Sequence[Tensor]) -> np.ndarray:
    """A feature matrix from v2 input tensors: one ``features`` [N, F] tensor, or one [N] tensor per feature.

    Identifier tensors (``transaction_id``, ``customer_id``, ``terminal_id``) are ignored here (see
    :func:`identifiers_from_tensors`).

    Args:
        scorer: Validates the matrix (its features, batch limit and ranges).
        tensors: The request's inputs.

    Returns:
        The validated matrix (N, F).

    Raises:
        InputError: Unknown, duplicate or missing input; wrong datatype or shape; bad values.
    """
    names = [t.name for t in tensors]
    if not tensors:
        raise InputError("'inputs': the request has no inputs", kind="missing_feature", field="inputs")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"input {duplicates[0]!r} appears more than once", kind="format", field=duplicates[0])
    unknown = [n for n in names if n not in scorer.feature_index and n != MATRIX_INPUT and n not in IDENTIFIERS]
    if unknown:
        raise InputError(
            f"unknown input {unknown[0]!r}: expected {MATRIX_INPUT!r} or one input per feature "
            f"({', '.join(scorer.features)})",
            kind="unknown_feature",
            field=unknown[0],
        )
    features = [t for t in tensors if t.name not in IDENTIFIERS]
    matrix = [t for t in features if t.name == MATRIX_INPUT]
    if matrix:
        if len(features) > 1:
            other = next(t.name for t in features if t.name != MATRIX_INPUT)
            raise InputError(
                f"input {other!r} cannot be combined with {MATRIX_INPUT!r}: send either one {MATRIX_INPUT!r} "
                "tensor or one tensor per feature",
                kind="format",
                field=other,
            )
        t = matrix[0]
        _check_datatype(t)
        shape = list(t.shape)
        if len(shape) != 2 or shape[1] != scorer.n_features:
            raise InputError(
                f"input {MATRIX_INPUT!r}: shape {shape}, expected [N, {scorer.n_features}] with the features in "
                f"schema order ({', '.join(scorer.features)})",
                kind="shape",
                field=MATRIX_INPUT,
            )
        X = _tensor_array(t, (shape[0], scorer.n_features))
        return scorer.validate(np.ascontiguousarray(X, dtype=np.float64))
    missing = [f for f in scorer.features if f not in names]
    if missing:
        raise InputError(
            f"missing feature(s): {', '.join(missing)} (first missing: {missing[0]!r}; send every feature as its "
            "own input, or one "
            f"{MATRIX_INPUT!r} input)",
            kind="missing_feature",
            field=missing[0],
        )
    n_rows: int | None = None
    X = np.empty((0, 0))
    for t in features:
        _check_datatype(t)
        shape = list(t.shape)
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InputError(
                f"input {t.name!r}: shape {shape}, expected [N] (one value per row)", kind="shape", field=t.name
            )
        if n_rows is None:
            n_rows = int(shape[0])
            if n_rows > scorer.max_batch_size:
                scorer.validate(np.zeros((n_rows, 0)))
            X = np.empty((n_rows, scorer.n_features), dtype=np.float64)
        elif int(shape[0]) != n_rows:
            raise InputError(
                f"input {t.name!r}: {shape[0]} rows, but the first input has {n_rows}", kind="shape", field=t.name
            )
        X[:, scorer.feature_index[t.name]] = _tensor_array(t, (n_rows,))
    return scorer.validate(X)


def matrix_from_records(
    scorer: Scorer, records: Sequence[Any], *, required: Sequence[str] | None = None
) -> tuple[np.ndarray, list[list[str]]]:
    """A feature matrix from JSON-like records (v1 ``instances`` or the seed's ``features`` object).

    Features listed in ``required`` must be present; any other feature may be omitted and is then completed from
    the five seed features (:func:`fraud_detection.features.seed.complete_seed`: the history they imply, never
    reference statistics), and reported per row (never silently).

    Args:
        scorer: Validates the matrix.
        records: One mapping of feature name to number per row.
        required: Features that must be present (default: all of them).

    Returns:
        (matrix (N, F), per row the names of the features that were filled in).

    Raises:
        InputError: A record is not an object, has an unknown key, lacks a required feature, or holds a value
            that is not a finite number in the schema's range.
    """
    need = tuple(scorer.features if required is None else required)
    n = len(records)
    if n == 0:
        raise InputError("'instances': the request holds no rows", kind="empty", field="instances")
    if n > scorer.max_batch_size:
        scorer.validate(np.zeros((n, 0)))
    X = np.empty((n, scorer.n_features), dtype=np.float64)
    X[:] = 0.0
    first_absent: tuple[int, str] | None = None
    imputed: list[list[str]] = []
    for row, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise InputError(
                f"'instances' row {row}: expected an object of feature name to number, got {type(record).__name__}",
                kind="format",
            )
        for name in need:
            if name not in record:
                raise InputError(f"row {row}: missing feature {name!r}", kind="missing_feature", field=name)
        for key, value in record.items():
            col = scorer.feature_index.get(key)
            if col is None:
                if key in IDENTIFIERS:
                    continue
                raise InputError(
                    f"row {row}: unknown feature {key!r} (known: {', '.join(scorer.features)})",
                    kind="unknown_feature",
                    field=str(key),
                )
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(
                    f"feature {key!r}: expected a number in row {row}, got {type(value).__name__} {value!r:.40}",
                    kind="datatype",
                    field=key,
                )
            try:
                X[row, col] = float(value)
            except OverflowError as exc:
                raise InputError(
                    f"feature {key!r}: {str(value)[:20]}... in row {row} is not a finite number",
                    kind="not_finite",
                    field=key,
                ) from exc
        missing = [f for f in scorer.features if f not in record]
        absent = [f for f in schema.SEED_FEATURES if f not in record]
        if absent:
            # Placeholders inside the schema's ranges, so only the values sent can fail validation first.
            first_absent = first_absent or (row, absent[0])
            for f in missing:
                X[row, scorer.feature_index[f]] = scorer.placeholder(f)
        elif missing:
            completion = complete_seed({f: X[row, scorer.feature_index[f]] for f in schema.SEED_FEATURES})
            for f in missing:
                X[row, scorer.feature_index[f]] = completion[f]
        imputed.append(missing)
    X = scorer.validate_values(X) if first_absent is not None else scorer.validate(X)
    if first_absent is not None:  # reported after the values sent (their errors name what the client did send)
        row, name = first_absent
        raise InputError(
            f"row {row}: missing feature {name!r} (send every feature, or at least the five of the seed API: "
            f"{', '.join(schema.SEED_FEATURES)})",
            kind="missing_feature",
            field=name,
        )
    return X, imputed


def identifiers_from_tensors(tensors: Sequence[Tensor], n_rows: int) -> dict[str, list[str]]:
    """Identifier columns carried as BYTES tensors (``transaction_id``, ``customer_id``, ``terminal_id``).

    Args:
        tensors: The request's inputs.
        n_rows: Rows in the request.

    Returns:
        Identifier name to one string per row.

    Raises:
        InputError: An identifier tensor has the wrong number of values.
    """
    out: dict[str, list[str]] = {}
    for t in tensors:
        if t.name not in IDENTIFIERS:
            continue
        try:
            values = list(np.asarray(t.data, dtype=object).reshape(-1))
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"input {t.name!r}: not a flat list of strings ({exc})", kind="shape", field=t.name
            ) from exc
        if len(values) != n_rows:
            raise InputError(f"input {t.name!r}: {len(values)} values for {n_rows} rows", kind="shape", field=t.name)
        out[t.name] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
    return out


def identifiers_from_records(records: Sequence[Any]) -> dict[str, list[str | None]]:
    """Identifier keys of JSON records (absent keys give None).

    Args:
        records: The request's records (already validated as mappings).

    Returns:
        Identifier name to one value (or None) per row, only for identifiers present in some row.
    """
    out: dict[str, list[str | None]] = {}
    for name in IDENTIFIERS:
        if any(isinstance(r, Mapping) and name in r for r in records):
            out[name] = [None if r.get(name) is None else str(r.get(name)) for r in records]
    return out


def _check_datatype(t: Tensor) -> None:
    if str(t.datatype) not in FLOAT_DATATYPES:
        raise InputError(
            f"input {t.name!r}: datatype {t.datatype}, expected FP32 or FP64", kind="datatype", field=t.name
        )


def _tensor_array(t: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """A float64 array of a FP32/FP64 tensor's values in ``shape``.

    JSON data is checked strictly (:func:`serving.strict.check_tensor_data`) unless it is
    :class:`serving.strict.CheckedData`, which :func:`serving.strict.check_v2_body` checked already.

    Args:
        t: The tensor.
        shape: The shape wanted (its size must be the data's).

    Returns:
        The array.

    Raises:
        InputError: Data that is not numeric or does not fill ``shape``.
    """
    if isinstance(t.data, np.ndarray):
        if t.data.dtype.kind not in "fiu":
            raise InputError(
                f"input {t.name!r}: data of dtype {t.data.dtype} is not numeric", kind="datatype", field=t.name
            )
    elif not isinstance(t.data, CheckedData):  # the strict REST decode checked it already
        check_tensor_data(t.name, t.data, list(t.shape), number_leaf)
    try:
        arr = _checked_floats(t.data, t.shape) if isinstance(t.data, CheckedData) else np.asarray(t.data, np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"input {t.name!r}: data is not numeric ({exc})", kind="datatype", field=t.name) from exc
    size = math.prod(shape)
    if arr.size != size:
        raise InputError(
            f"input {t.name!r}: {arr.size} values do not fill the declared shape {list(t.shape)}",
            kind="shape",
            field=t.name,
        )
    return arr.reshape(shape)


def _checked_floats(data: CheckedData, shape: Sequence[int]) -> np.ndarray:
    """The float64 values of checked JSON data, flat, read in one C pass without numpy's nesting discovery.

    Checked data is flat or nested exactly as ``shape`` (:func:`serving.strict.check_tensor_data`), so a flat list or
    a list of rows (two dimensions, the feature matrix) flattens with ``chain``; deeper nestings go through numpy.

    Args:
        data: The checked data.
        shape: The shape it was checked against.

    Returns:
        The values (flat, or as numpy nests them).
    """
    nested = bool(data) and isinstance(data[0], list)
    if not nested:
        return np.fromiter(data, np.float64, count=len(data))
    if len(shape) == 2:
        return np.fromiter(chain.from_iterable(data), np.float64, count=math.prod(shape))
    return np.asarray(data, dtype=np.float64)
