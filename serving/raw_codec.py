"""KServe v1/v2 wire decoding of raw transactions: ids, event times, amounts into the online executor's rows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from fraud_detection.data import schema
from fraud_detection.features.online import RawTransaction
from fraud_detection.scoring.results import InputError
from serving.codec import FLOAT_DATATYPES, MAX_AMOUNT, Tensor, _tensor_array

#: The inputs of a raw-transaction request (each shape [N]); ``customer_since`` is optional.
RAW_INPUTS: tuple[str, ...] = (
    schema.TRANSACTION_ID,
    schema.EVENT_TIME,
    schema.CUSTOMER_ID,
    schema.TERMINAL_ID,
    schema.AMOUNT,
)
RAW_OPTIONAL: tuple[str, ...] = (schema.CUSTOMER_SINCE,)
_ID_MAX_CHARS = 256
#: The value types of a flat text tensor as JSON (str) and gRPC (bytes) decode it.
_TEXT_TYPES = frozenset({str, bytes})


def is_raw_request(names: Sequence[str]) -> bool:
    """Whether a request carries raw transactions (it has ``event_time``) rather than features.

    Args:
        names: Input names (v2) or the keys of the first record (v1).

    Returns:
        True for a raw-transaction request.
    """
    return schema.EVENT_TIME in names


def _flat_values(name: str, data: Any) -> list[Any]:
    """A tensor's values as a flat list; a flat list of text (JSON, gRPC) as it is, without a numpy round trip."""
    if type(data) is list and set(map(type, data)) <= _TEXT_TYPES:
        return data
    try:
        return list(np.asarray(data, dtype=object).reshape(-1))
    except (TypeError, ValueError) as exc:
        raise InputError(f"input {name!r}: not a flat list ({exc})", kind="shape", field=name) from exc


def _text_values(name: str, data: Any, n_rows: int | None) -> list[str]:
    values = _flat_values(name, data)
    if n_rows is not None and len(values) != n_rows:
        raise InputError(f"input {name!r}: {len(values)} values for {n_rows} rows", kind="shape", field=name)
    out = []
    for row, v in enumerate(values):
        if isinstance(v, bytes | bytearray):
            v = bytes(v).decode("utf-8", "replace")
        if not isinstance(v, str) or not v.strip():
            raise InputError(f"input {name!r}: row {row} is not a non-empty string", kind="datatype", field=name)
        if len(v) > _ID_MAX_CHARS:
            raise InputError(f"input {name!r}: row {row} is longer than {_ID_MAX_CHARS} characters", field=name)
        out.append(v)
    return out


def parse_time(name: str, value: Any, row: int) -> int:
    """Epoch seconds from an ISO 8601 string with an offset (or ``Z``), or from epoch milliseconds.

    Args:
        name: The field (for messages).
        value: The value.
        row: The row (for messages).

    Returns:
        Epoch seconds (floored).

    Raises:
        InputError: Not a time, or a time without an offset.
    """
    if isinstance(value, bool):
        raise InputError(f"{name!r}: row {row} is a boolean, not a time", kind="datatype", field=name)
    if isinstance(value, int | np.integer):
        return int(value) // 1000
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        raise InputError(
            f"{name!r}: row {row} must be an ISO 8601 time with an offset or epoch milliseconds",
            kind="datatype",
            field=name,
        )
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{name!r}: row {row}: {value[:40]!r} is not an ISO 8601 time", field=name) from exc
    if parsed.tzinfo is None:
        raise InputError(
            f"{name!r}: row {row}: {value[:40]!r} has no UTC offset (add Z or +hh:mm)", kind="format", field=name
        )
    return math.floor(parsed.timestamp())


def _date_seconds(name: str, value: str, row: int) -> int:
    try:
        return parse_time(name, value, row)
    except InputError:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise InputError(
                f"{name!r}: row {row}: {value[:40]!r} is not an ISO 8601 date or time", field=name
            ) from exc
        return math.floor(parsed.replace(tzinfo=UTC).timestamp())


def _amounts(values: Sequence[Any], name: str = schema.AMOUNT, max_amount: float = MAX_AMOUNT) -> list[float]:
    out = []
    for row, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise InputError(f"{name!r}: row {row} is not a number", kind="datatype", field=name)
        x = float(v)
        if not math.isfinite(x):
            raise InputError(f"{name!r}: {x} in row {row} is not a finite number", kind="not_finite", field=name)
        if x < 0:
            raise InputError(f"{name!r}: negative value {x:g} in row {row}", kind="out_of_range", field=name)
        if x > max_amount:
            raise InputError(
                f"{name!r}: {x:g} in row {row} is above the maximum {max_amount:g}", kind="out_of_range", field=name
            )
        out.append(x)
    return out


def raw_from_tensors(tensors: Sequence[Tensor], max_rows: int, max_amount: float = MAX_AMOUNT) -> list[RawTransaction]:
    """Raw transactions from v2 tensors (one [N] tensor per field).

    Args:
        tensors: The request's inputs.
        max_rows: Largest accepted batch.
        max_amount: Largest accepted amount.

    Returns:
        One transaction per row, in request order.

    Raises:
        InputError: A field is missing, unknown, repeated, of the wrong datatype or shape, or holds a bad value.
    """
    by_name: dict[str, Tensor] = {}
    for t in tensors:
        if t.name in by_name:
            raise InputError(f"input {t.name!r} appears more than once", kind="format", field=t.name)
        if t.name not in RAW_INPUTS and t.name not in RAW_OPTIONAL:
            raise InputError(
                f"unknown input {t.name!r} in a raw-transaction request (inputs: {', '.join(RAW_INPUTS)}, "
                f"optional {', '.join(RAW_OPTIONAL)})",
                kind="unknown_feature",
                field=t.name,
            )
        by_name[t.name] = t
    missing = [n for n in RAW_INPUTS if n not in by_name]
    if missing:
        raise InputError(
            f"missing input(s) {', '.join(missing)} of a raw transaction (first missing: {missing[0]!r})",
            kind="missing_feature",
            field=missing[0],
        )
    first = by_name[schema.TRANSACTION_ID]
    shape = list(first.shape)
    if len(shape) != 1:
        raise InputError(f"input {first.name!r}: shape {shape}, expected [N]", kind="shape", field=first.name)
    n = int(shape[0])
    if n == 0:
        raise InputError(f"input {first.name!r}: the request holds no rows", kind="empty", field=first.name)
    if n > max_rows:
        raise InputError(f"batch of {n} rows exceeds the limit of {max_rows} rows per request", kind="batch_too_large")
    for t in by_name.values():
        if list(t.shape) != [n]:
            raise InputError(f"input {t.name!r}: shape {list(t.shape)}, expected [{n}]", kind="shape", field=t.name)
    for name in (schema.TRANSACTION_ID, schema.CUSTOMER_ID, schema.TERMINAL_ID, schema.CUSTOMER_SINCE):
        if name in by_name and str(by_name[name].datatype) != "BYTES":
            raise InputError(
                f"input {name!r}: datatype {by_name[name].datatype}, expected BYTES", kind="datatype", field=name
            )
    ids = {
        name: _text_values(name, by_name[name].data, n)
        for name in (schema.TRANSACTION_ID, schema.CUSTOMER_ID, schema.TERMINAL_ID)
    }
    time_t = by_name[schema.EVENT_TIME]
    kind = str(time_t.datatype)
    if kind == "INT64":
        raw_times: list[Any] = [int(v) for v in np.asarray(time_t.data).reshape(-1)]
    elif kind == "BYTES":
        raw_times = _text_values(schema.EVENT_TIME, time_t.data, n)
    else:
        raise InputError(
            f"input 'event_time': datatype {time_t.datatype}, expected BYTES (ISO 8601) or INT64 (epoch ms)",
            kind="datatype",
            field=schema.EVENT_TIME,
        )
    if len(raw_times) != n:
        raise InputError(
            f"input 'event_time': {len(raw_times)} values for {n} rows", kind="shape", field=schema.EVENT_TIME
        )
    times = [parse_time(schema.EVENT_TIME, v, i) for i, v in enumerate(raw_times)]
    amount_t = by_name[schema.AMOUNT]
    if str(amount_t.datatype) not in FLOAT_DATATYPES:
        raise InputError(
            f"input 'amount': datatype {amount_t.datatype}, expected FP32 or FP64", kind="datatype", field=schema.AMOUNT
        )
    amounts = _amounts(list(_tensor_array(amount_t, (n,)).tolist()), max_amount=max_amount)
    since: list[int | None] = [None] * n
    if schema.CUSTOMER_SINCE in by_name:
        texts = _text_values(schema.CUSTOMER_SINCE, by_name[schema.CUSTOMER_SINCE].data, n)
        since = [_date_seconds(schema.CUSTOMER_SINCE, v, i) for i, v in enumerate(texts)]
    return [
        RawTransaction(
            ids[schema.TRANSACTION_ID][i],
            times[i],
            ids[schema.CUSTOMER_ID][i],
            ids[schema.TERMINAL_ID][i],
            amounts[i],
            since[i],
        )
        for i in range(n)
    ]


def raw_from_records(records: Sequence[Any], max_rows: int, max_amount: float = MAX_AMOUNT) -> list[RawTransaction]:
    """Raw transactions from v1 ``instances`` objects with the raw fields.

    Args:
        records: One object per row.
        max_rows: Largest accepted batch.
        max_amount: Largest accepted amount.

    Returns:
        One transaction per row, in request order.

    Raises:
        InputError: A record is not an object, lacks a field, has an unknown one, or holds a bad value.
    """
    n = len(records)
    if n == 0:
        raise InputError("'instances': the request holds no rows", kind="empty", field="instances")
    if n > max_rows:
        raise InputError(f"batch of {n} rows exceeds the limit of {max_rows} rows per request", kind="batch_too_large")
    out = []
    for row, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise InputError(
                f"'instances' row {row}: expected an object with the raw transaction fields", kind="format"
            )
        unknown = sorted(set(record) - set(RAW_INPUTS) - set(RAW_OPTIONAL))
        if unknown:
            raise InputError(
                f"row {row}: unknown field {unknown[0]!r} of a raw transaction",
                kind="unknown_feature",
                field=str(unknown[0]),
            )
        missing = [f for f in RAW_INPUTS if f not in record]
        if missing:
            raise InputError(f"row {row}: missing field {missing[0]!r}", kind="missing_feature", field=missing[0])
        ids = [
            _text_values(name, [record[name]], 1)[0]
            for name in (schema.TRANSACTION_ID, schema.CUSTOMER_ID, schema.TERMINAL_ID)
        ]
        seconds = parse_time(schema.EVENT_TIME, record[schema.EVENT_TIME], row)
        (amount,) = _amounts([record[schema.AMOUNT]], max_amount=max_amount)
        since = record.get(schema.CUSTOMER_SINCE)
        since_s = (
            None
            if since is None
            else _date_seconds(schema.CUSTOMER_SINCE, _text_values(schema.CUSTOMER_SINCE, [since], 1)[0], row)
        )
        out.append(RawTransaction(ids[0], seconds, ids[1], ids[2], amount, since_s))
    return out
