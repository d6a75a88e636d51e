"""Strict wire checks of serving.codec: JSON problems named with their byte offset, v2 types, shapes and nesting."""

from __future__ import annotations

import pytest

from fraud_detection.scoring.results import InputError
from serving.strict import check_tensor_data, check_v2_body, number_leaf, parse_json, split_binary_body


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
