"""Strict wire checks of serving.codec: JSON problems named with their byte offset, v2 types, shapes and nesting."""

from __future__ import annotations

import numpy as np
import pytest
from kserve import InferInput, InferOutput, InferResponse
from kserve.errors import InferenceError

from fraud_detection.scoring.results import InputError
from serving import codec
from serving.codec import JsonListOutput, Tensor, _tensor_array
from serving.strict import (
    CheckedData,
    check_tensor_data,
    check_v2_body,
    mark_checked,
    number_leaf,
    parse_json,
    split_binary_body,
)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "is empty"),
        (b'{"a": 1', "not valid JSON at byte 7"),
        (b'{"a": NaN}', "at byte 6: NaN is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"a": "\xff"}', "not UTF-8: invalid byte 0xff at byte 7"),
        (b"[" * 1100 + b"]" * 1100, "nested deeper than 1024 levels"),
    ],
)
def test_parse_json_names_the_problem(body: bytes, needle: str):
    with pytest.raises(InputError, match=None) as err:
        parse_json(body)
    assert needle in str(err.value)


def _body(**inp) -> dict:
    return {"inputs": [{"name": "amount", "datatype": "FP64", "shape": [1], "data": [1.0]} | inp]}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (_body(data=[True]), "value 0 (True) is a bool"),
        (_body(data=["1.5"]), "value 0 ('1.5') is a str"),
        (_body(datatype="fp64"), "'datatype' 'fp64' is not a v2 datatype"),
        (_body(shape=[True]), "'shape' [True] must be a list of non-negative integers"),
        (_body(shape=[-1]), "must be a list of non-negative integers"),
        (_body(data=[[1.0]]), "'data' is nested deeper than shape [1]"),
        (_body(shape=[2, 1], data=[[1.0], 2.0]), "nesting does not match shape [2, 1]"),
        (_body(shape=[2]), "1 values do not fill the declared shape [2]"),
        (_body(shape=[5000]), "batch of 5000 rows exceeds the limit of 1000"),
        ({"outputs": []}, "'inputs': field required"),
        ({"inputs": "x"}, "'inputs' must be a list"),
        ({"inputs": [], "id": 3}, "'id' must be a string"),
        ({"inputs": [], "parameters": {"x": [1]}}, "'parameters.x' must be a string, number or boolean"),
    ],
)
def test_check_v2_body_names_the_field(body: dict, needle: str):
    with pytest.raises(InputError) as err:
        check_v2_body(body, max_rows=1000)
    assert needle in str(err.value)


def test_valid_bodies_pass():
    check_v2_body(_body())
    check_v2_body(_body(shape=[2, 1], data=[[1.0], [2]]))
    check_v2_body(_body(shape=[2, 1], data=[1.0, 2]))
    check_v2_body({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}], "outputs": []})


def test_binary_header_must_lie_within_the_body():
    assert split_binary_body(b"0123456789", "4") == 4
    for header, needle in (("x", "is not a byte count"), ("11", "does not lie within the body of 10 bytes"), ("0", "")):
        with pytest.raises(InputError, match="Inference-Header-Content-Length") as err:
            split_binary_body(b"0123456789", header)
        assert needle in str(err.value)
    binary = {"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}}]}
    check_v2_body(binary, binary_size=8)
    with pytest.raises(InputError, match="add up to 8 bytes but 16 bytes follow"):
        check_v2_body(binary, binary_size=16)


def test_number_leaf_refuses_booleans_and_strings():
    assert number_leaf(1) and number_leaf(1.5)
    assert not number_leaf(True) and not number_leaf("1") and not number_leaf(None)
    check_tensor_data("a", [[1, 2.0]], [1, 2], number_leaf)


class _Row(list):  # a list subclass is nesting like a list (isinstance), as before the C-speed passes
    pass


@pytest.mark.parametrize(
    ("data", "shape", "kind", "needle"),
    [
        ([[1.0, 2.0]] * 500 + [[1.0]] + [[1.0, 2.0, 3.0]], [502, 2], "shape", "at depth 1 (expected 2 values, got 1"),
        ([[1.0, 2.0]] * 3 + [(1.0, 2.0)], [4, 2], "shape", "at depth 1 (expected 2 values, got tuple)"),
        ([[1.0, 2.0], 3.0], [2, 2], "shape", "at depth 1 (expected 2 values, got float)"),
        ([[1.0, [2.0]], [3.0, 4.0]], [2, 2], "shape", "'data' is nested deeper than shape [2, 2]"),
        ([[1.0, 2.0], [3.0, True]], [2, 2], "datatype", "value 3 (True) is a bool"),
        ([[1.0, 2.0], [None, "x"]], [2, 2], "datatype", "value 2 (None) is a NoneType"),
        ([1.0, 2.0, "3"], [3], "datatype", "value 2 ('3') is a str"),
        ([1.0, 2.0], [3], "shape", "2 values do not fill the declared shape [3]"),
        ((1.0, 2.0), [2], "format", "'data' must be a list, got tuple"),
    ],
)
def test_check_tensor_data_names_the_first_problem(data, shape, kind: str, needle: str):
    with pytest.raises(InputError) as err:
        check_tensor_data("x", data, shape, number_leaf)
    assert err.value.kind == kind and needle in str(err.value)


def test_check_tensor_data_accepts_list_subclasses_and_empty_tensors():
    check_tensor_data("x", _Row([_Row([1, 2.0]), [3, 4]]), [2, 2], number_leaf)
    check_tensor_data("x", [], [0, 27], number_leaf)
    check_tensor_data("x", [[], []], [2, 0], number_leaf)


@pytest.mark.parametrize(
    ("data", "shape", "want"),
    [
        ([[1.0, 2], [3, 0.1]], [2, 2], (2, 2)),  # the feature matrix: rows
        ([1.0, 2, 3, 0.1], [2, 2], (2, 2)),  # flat
        ([[[1.0, 2], [3, 0.1]]], [1, 2, 2], (2, 2)),  # deeper: through numpy
        ([[2**63 + 1, 1e-300]], [1, 2], (1, 2)),  # ints rounded as numpy rounds them
        ([], [0, 3], (0, 3)),
    ],
)
def test_checked_data_skips_the_codec_check_and_converts_as_plain_lists_do(
    monkeypatch: pytest.MonkeyPatch, data: list, shape: list[int], want: tuple[int, ...]
):
    calls: list[str] = []
    monkeypatch.setattr(codec, "check_tensor_data", lambda name, *_: calls.append(name))
    checked = _tensor_array(Tensor("features", "FP64", shape, CheckedData(data)), want)
    assert calls == []
    plain = _tensor_array(Tensor("features", "FP64", shape, data), want)
    assert calls == ["features"]
    assert checked.dtype == plain.dtype == np.float64 and checked.shape == plain.shape == want
    np.testing.assert_array_equal(checked, plain)


def test_mark_checked_marks_only_float_tensors_with_list_data():
    floats = InferInput("features", [1, 2], "FP64", [[1.0, 2.0]])
    ids = InferInput("transaction_id", [1], "BYTES", ["t1"])
    raw = InferInput("amount", [1], "FP32", np.asarray([1.0], dtype=np.float32))
    mark_checked([floats, ids, raw])
    assert isinstance(floats.data, CheckedData) and floats.data == [[1.0, 2.0]]
    assert type(ids.data) is list and isinstance(raw.data, np.ndarray)


def _outputs(cls: type[InferOutput]) -> list[InferOutput]:
    rng = np.random.default_rng(3)
    arrays = {
        "score": (rng.random(50).astype(np.float32), "FP32"),
        "decision": (rng.random(50) > 0.5, "BOOL"),
        "features": (rng.random((50, 3)) * 1e6, "FP64"),
        "reason_codes": (np.array([b'{"a": 1}'] * 50, dtype=np.object_), "BYTES"),
        "count": (np.arange(50, dtype=np.int64) - 25, "INT64"),
    }
    outputs = []
    for name, (data, datatype) in arrays.items():
        out = cls(name, list(data.shape), datatype)
        out.data = data
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("binary", [False, True])
def test_json_list_outputs_encode_exactly_as_kserves(binary: bool):
    def rest(cls: type[InferOutput]) -> tuple:
        return InferResponse("r", "m", _outputs(cls), use_binary_outputs=binary).to_rest()

    ours, kserves = rest(JsonListOutput), rest(InferOutput)
    assert ours == kserves
    if not binary:
        assert [type(v) for out in ours[0]["outputs"] for v in out["data"][:1]] == [float, bool, float, str, int]


def test_json_list_outputs_refuse_what_kserve_refuses():
    for data, needle in ((np.zeros(3, dtype=np.float64), "unexpected datatype"), (np.zeros(4, np.float32), "shape")):
        with pytest.raises(InferenceError, match=needle):
            JsonListOutput("score", [3], "FP32").set_data_from_numpy(data, binary_data=False)
