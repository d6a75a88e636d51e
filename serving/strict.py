"""Strict v2 request checks before decoding: JSON syntax and depth, the binary header, datatypes, shapes, leaves."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import orjson

from fraud_detection.data import schema
from fraud_detection.scoring.results import InputError

#: Deepest JSON nesting orjson parses.
MAX_JSON_DEPTH = 1024


# -- strict wire checks (before KServe's decoding) --------------------------------------------------------------


#: The v2 datatype names (exact, upper case).
V2_DATATYPES: frozenset[str] = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"}
)


def number_leaf(value: Any) -> bool:
    """Whether a JSON value is a number (booleans and strings are not)."""
    return type(value) in (int, float)


def _string_leaf(value: Any) -> bool:
    return isinstance(value, str | bytes)


def _bool_leaf(value: Any) -> bool:
    return type(value) is bool


def _int_leaf(value: Any) -> bool:
    return type(value) is int


_LEAVES: dict[str, Callable[[Any], bool]] = {
    "BOOL": _bool_leaf,
    "BYTES": _string_leaf,
    "FP16": number_leaf,
    "FP32": number_leaf,
    "FP64": number_leaf,
}
#: The exact JSON types each leaf check accepts (the fast path of :func:`_check_leaves`).
_LEAF_TYPES: dict[Callable[[Any], bool], frozenset[type]] = {
    number_leaf: frozenset({int, float}),
    _bool_leaf: frozenset({bool}),
    _string_leaf: frozenset({str, bytes}),
    _int_leaf: frozenset({int}),
}
#: Datatypes whose checked JSON data :func:`mark_checked` marks (the float tensors the codec decodes).
_CHECKED_DATATYPES = frozenset({"FP32", "FP64"})
_LEAF_NAMES = {"BOOL": "true or false", "BYTES": "a string", "FP16": "a number", "FP32": "a number", "FP64": "a number"}


class CheckedData(list[Any]):
    """A JSON tensor's ``data`` that :func:`check_v2_body` has already checked against its datatype and shape.

    Only the strict REST decode wraps data in it (after :func:`check_v2_body`, never from the wire), so that the
    codec does not check the same values twice; data of any other origin (gRPC, tests) is a plain list and checked.
    """


def mark_checked(inputs: Iterable[Any]) -> None:
    """Wrap the float tensors' JSON data in :class:`CheckedData`, for inputs whose body :func:`check_v2_body` passed.

    Call it only on inputs decoded from the very object :func:`check_v2_body` checked (the REST JSON body), never on
    inputs of another origin.

    Args:
        inputs: KServe ``InferInput`` objects; their ``data`` is replaced in place (a shallow copy of the list).
    """
    for inp in inputs:
        if inp.datatype in _CHECKED_DATATYPES and type(inp.data) is list:
            inp.data = CheckedData(inp.data)


def check_tensor_data(name: str, data: Any, shape: Sequence[int], leaf: Callable[[Any], bool]) -> None:
    """Check a JSON tensor's data against its shape and datatype.

    The data must be a flat list of prod(shape) values, or lists nested exactly as the shape, every value passing
    ``leaf``. The values are looked at in C-speed passes (``map``, ``set``); Python loops run only to name the first
    offending value.

    Args:
        name: The input (for messages).
        data: Its ``data``.
        shape: Its declared shape.
        leaf: Accepts one value.

    Raises:
        InputError: Not a list, nesting inconsistent with the shape, wrong count, or a value ``leaf`` refuses.
    """
    if not isinstance(data, list):
        raise InputError(f"input {name!r}: 'data' must be a list, got {type(data).__name__}", kind="format", field=name)
    size = math.prod(shape)  # exact, and 1 for a scalar's []; np.prod costs microseconds per call
    types = set(map(type, data))
    if not _has_list(types):  # flat
        if len(data) != size:
            raise InputError(
                f"input {name!r}: {len(data)} values do not fill the declared shape {list(shape)}",
                kind="shape",
                field=name,
            )
        _check_leaves(name, data, leaf, types)
        return
    level: list[Any] = [data]
    for depth, dim in enumerate(shape):
        if depth:
            level = list(chain.from_iterable(level))
        _check_nesting(name, level, shape, depth, dim)
    types = set(map(type, chain.from_iterable(level)))  # the leaves' types, without building a list of the leaves
    if _has_list(types):
        raise InputError(f"input {name!r}: 'data' is nested deeper than shape {list(shape)}", kind="shape", field=name)
    _check_leaves(name, chain.from_iterable(level), leaf, types)


def _has_list(types: set[type]) -> bool:
    """Whether any of the types is a list (what ``isinstance(value, list)`` accepts)."""
    return any(issubclass(t, list) for t in types)


def _check_nesting(name: str, level: list[Any], shape: Sequence[int], depth: int, dim: int) -> None:
    """Check that every item of one nesting level is a list of ``dim`` values.

    Raises:
        InputError: An item is not a list or has another length (the first such item is named).
    """
    if set(map(type, level)) <= {list} and set(map(len, level)) <= {dim}:  # the common case, in C
        return
    for item in level:
        if not isinstance(item, list) or len(item) != dim:
            got = f"{len(item)} values" if isinstance(item, list) else type(item).__name__
            raise InputError(
                f"input {name!r}: 'data' nesting does not match shape {list(shape)} at depth {depth} "
                f"(expected {dim} values, got {got})",
                kind="shape",
                field=name,
            )


def _check_leaves(name: str, values: Iterable[Any], leaf: Callable[[Any], bool], types: set[type]) -> None:
    """Check every value with ``leaf``, given the set of the values' types (that set decides the common case)."""
    accepted = _LEAF_TYPES.get(leaf)
    if accepted is not None and types <= accepted:
        return
    for i, v in enumerate(values):
        if not leaf(v):
            raise InputError(
                f"input {name!r}: value {i} ({v!r:.30}) is a {type(v).__name__}, not of the tensor's datatype",
                kind="datatype",
                field=name,
            )


def parse_json(body: bytes, what: str = "request body") -> Any:
    """Parse JSON, with a message naming the byte offset and the problem.

    Args:
        body: The bytes.
        what: What they are (for messages).

    Returns:
        The value.

    Raises:
        InputError: Not UTF-8, not JSON (NaN/Infinity literals named), or nested deeper than orjson allows.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        pos = int(getattr(exc, "pos", 0))
        raise InputError(_json_problem(body, pos, exc.msg, what), kind="format") from exc


def _json_problem(body: bytes, pos: int, msg: str, what: str) -> str:
    if not body.strip():
        return f"{what} is empty (expected a JSON object)"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"{what} is not UTF-8: invalid byte 0x{body[err.start]:02x} at byte {err.start}"
    if "depth" in msg or "recursion" in msg.lower():
        return f"{what} is nested deeper than {MAX_JSON_DEPTH} levels (at byte {pos})"
    for literal in (b"-Infinity", b"-NaN", b"NaN", b"Infinity"):
        start = max(pos - 1, 0)
        if body[pos : pos + len(literal)] == literal or body[start : start + len(literal)] == literal:
            return (
                f"{what} is not valid JSON at byte {pos}: {literal.decode()} is not a JSON number (send finite numbers)"
            )
    return f"{what} is not valid JSON at byte {pos}: {msg}"


def split_binary_body(body: bytes, header: str) -> int:
    """Check the binary tensor extension's ``Inference-Header-Content-Length`` against the body.

    Args:
        body: The whole body.
        header: The header's value.

    Returns:
        The length of the JSON part.

    Raises:
        InputError: The header is not a length inside the body.
    """
    name = "Inference-Header-Content-Length"
    try:
        length = int(header.strip())
    except ValueError:
        raise InputError(f"header {name}: {header[:30]!r} is not a byte count", kind="format", field=name) from None
    if length <= 0 or length > len(body):
        raise InputError(
            f"header {name}: {length} does not lie within the body of {len(body)} bytes", kind="format", field=name
        )
    return length


def check_v2_body(obj: Any, *, binary_size: int | None = None, max_rows: int | None = None) -> None:
    """Check a parsed v2 JSON inference request strictly (before KServe's lenient schema sees it).

    Args:
        obj: The parsed JSON part.
        binary_size: Bytes following the JSON part (binary tensor extension), or None for a JSON-only body.
        max_rows: Largest batch: a first dimension above it is refused before the data is looked at.

    Raises:
        InputError: A field has the wrong type, an unknown datatype, a bad shape or data inconsistent with its
            datatype and shape; the message names the field.
    """
    if not isinstance(obj, dict):
        raise InputError(f"request body must be a JSON object, got {_json_type(obj)}", kind="format")
    if "id" in obj and not isinstance(obj["id"], str):
        raise InputError(f"'id' must be a string, got {_json_type(obj['id'])}", kind="format", field="id")
    _check_parameters(obj, "parameters")
    inputs = obj.get("inputs")
    if "inputs" not in obj:
        raise InputError("'inputs': field required", kind="missing_feature", field="inputs")
    if not isinstance(inputs, list):
        raise InputError(f"'inputs' must be a list, got {_json_type(inputs)}", kind="format", field="inputs")
    claimed = 0
    for i, inp in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(inp, dict):
            raise InputError(f"'{where}' must be an object, got {_json_type(inp)}", kind="format", field=where)
        for key in ("name", "datatype", "shape"):
            if key not in inp:
                raise InputError(f"'{where}.{key}': field required", kind="format", field=f"{where}.{key}")
        name, datatype, shape = inp["name"], inp["datatype"], inp["shape"]
        if not isinstance(name, str) or not name:
            raise InputError(f"'{where}.name' must be a non-empty string", kind="format", field=f"{where}.name")
        if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
            raise InputError(
                f"input {name!r}: 'datatype' {datatype!r:.30} is not a v2 datatype ({', '.join(sorted(V2_DATATYPES))})",
                kind="datatype",
                field=name,
            )
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise InputError(
                f"input {name!r}: 'shape' {shape!r:.40} must be a list of non-negative integers",
                kind="shape",
                field=name,
            )
        if max_rows is not None and shape and shape[0] > max_rows:
            raise InputError(
                f"input {name!r}: batch of {shape[0]} rows exceeds the limit of {max_rows} rows per request",
                kind="batch_too_large",
                field=name,
            )
        _check_parameters(inp, f"{where}.parameters")
        params = inp.get("parameters") or {}
        if "data" in inp:
            leaf = _LEAVES.get(datatype, _int_leaf)
            try:
                check_tensor_data(name, inp["data"], shape, leaf)
            except InputError as exc:
                if exc.kind == "datatype":
                    raise InputError(
                        f"{exc} (datatype {datatype} takes {_LEAF_NAMES.get(datatype, 'integers')})",
                        kind="datatype",
                        field=name,
                    ) from None
                raise
        elif binary_size is not None and "binary_data_size" in params:
            size = params["binary_data_size"]
            if type(size) is not int or size < 0:
                raise InputError(
                    f"input {name!r}: 'parameters.binary_data_size' must be a non-negative integer",
                    kind="format",
                    field=name,
                )
            claimed += size
        else:
            raise InputError(f"input {name!r}: 'data' field is missing", kind="format", field=name)
    if binary_size is not None and claimed != binary_size:
        raise InputError(
            f"header Inference-Header-Content-Length: the inputs' binary_data_size add up to {claimed} bytes but "
            f"{binary_size} bytes follow the JSON header",
            kind="format",
            field="Inference-Header-Content-Length",
        )
    outputs = obj.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise InputError(f"'outputs' must be a list, got {_json_type(outputs)}", kind="format", field="outputs")
        for i, out in enumerate(outputs):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise InputError(
                    f"'outputs[{i}]' must be an object with a string 'name'", kind="format", field=f"outputs[{i}]"
                )
            _check_parameters(out, f"outputs[{i}].parameters")


def _check_parameters(obj: Mapping[str, Any], where: str) -> None:
    key = where.rsplit(".", 1)[-1]
    value = obj.get(key)
    if value is None:
        return
    if not isinstance(value, dict):
        raise InputError(f"'{where}' must be an object, got {_json_type(value)}", kind="format", field=where)
    for k, v in value.items():
        if not (isinstance(v, str | bool) or number_leaf(v)):
            raise InputError(
                f"'{where}.{k}' must be a string, number or boolean, got {_json_type(v)}", kind="format", field=where
            )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def check_max_amount(X: np.ndarray, column: int, max_amount: float) -> None:
    """Refuse feature rows whose ``amount`` exceeds the configured maximum.

    Args:
        X: Validated feature matrix.
        column: The amount's column.
        max_amount: The maximum.

    Raises:
        InputError: Naming the first offending row.
    """
    above = np.flatnonzero(X[:, column] > max_amount)
    if above.size:
        row = int(above[0])
        raise InputError(
            f"feature 'amount': {X[row, column]:g} in row {row} is above the maximum {max_amount:g}",
            kind="out_of_range",
            field=schema.AMOUNT,
        )
