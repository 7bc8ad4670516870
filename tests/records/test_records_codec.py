import numpy as np
import pytest

from records.example_codec import (
    decode_example,
    decode_sequence_example,
    encode_example,
    encode_sequence_example,
)
from records.spec import FixedLenFeature, VarLenFeature, spec_from_dict, spec_to_dict

ROUNDTRIP = [
    # (value given, decoded)
    ([1, -2, 2**63 - 1], np.array([1, -2, 2**63 - 1], np.int64)),
    (np.arange(3, dtype=np.int32), np.array([0, 1, 2], np.int64)),
    (np.array([[1, 2], [3, 4]]), np.array([1, 2, 3, 4], np.int64)),
    (7, np.array([7], np.int64)),
    (True, np.array([1], np.int64)),
    ([0.5, 1], np.array([0.5, 1.0], np.float32)),
    (np.float64(2.25), np.array([2.25], np.float32)),
    (np.array([1.5, -0.0], np.float32), np.array([1.5, -0.0], np.float32)),
    ("héllo", [b"h\xc3\xa9llo"]),
    ([b"a", "b", b""], [b"a", b"b", b""]),
    (np.array([b"x", b"yz"]), [b"x", b"yz"]),
    (("int64", []), np.array([], np.int64)),
    (("float32", [1, 2]), np.array([1, 2], np.float32)),
    (("bytes", []), []),
]


def _same(a, b):
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("value, decoded", ROUNDTRIP)
def test_example_roundtrip(value, decoded):
    assert _same(decode_example(encode_example({"f": value}))["f"], decoded)


def test_encoding_is_deterministic_and_sorted():
    a = encode_example({"b": [1], "a": [2.0], "c": "x"})
    b = encode_example({"c": "x", "a": [2.0], "b": [1]})
    assert a == b
    assert a.index(b"\x0a\x01a") < a.index(b"\x0a\x01b") < a.index(b"\x0a\x01c")


@pytest.mark.parametrize("value, error, words", [
    ([], ValueError, ["'f'", "explicit kind"]),
    ([1, "a"], TypeError, ["'f'", "int", "str"]),
    ([2**63], ValueError, ["'f'", "int64"]),
    (None, TypeError, ["'f'"]),
    ([[1, 2]], TypeError, ["'f'"]),
    (("int64", [1.5]), TypeError, ["'f'", "int"]),
    (np.array([1 + 2j]), TypeError, ["'f'", "complex"]),
])
def test_encode_errors_name_the_feature(value, error, words):
    with pytest.raises(error) as info:
        encode_example({"f": value})
    for w in words:
        assert w in str(info.value)


def test_decode_rejects_garbage():
    with pytest.raises(ValueError, match="tf.Example"):
        decode_example(b"\xff\xff\xff")


def test_sequence_example_roundtrip():
    data = encode_sequence_example(
        {"id": 3, "name": "s"},
        {"tok": [[1, 2], [], [3]], "w": [[0.5], [1.5]], "empty": ("bytes", [])})
    ctx, lists = decode_sequence_example(data)
    assert ctx["id"].tolist() == [3] and ctx["name"] == [b"s"]
    assert [v.tolist() for v in lists["tok"]] == [[1, 2], [], [3]]
    assert lists["tok"][1].dtype == np.int64
    assert [v.tolist() for v in lists["w"]] == [[0.5], [1.5]]
    assert lists["empty"] == []


def test_sequence_example_needs_kind_when_all_steps_empty():
    with pytest.raises(ValueError, match="'x'"):
        encode_sequence_example({}, {"x": [[], []]})


SPECS = [
    FixedLenFeature((), "int64"),
    FixedLenFeature((2, 3), "float32", default=0.5),
    FixedLenFeature((2,), "float32", default=[1.0, 2.0]),
    FixedLenFeature((), "bytes", default=b"\x00\xff"),
    FixedLenFeature((2,), "bytes", default=["a", "b"]),
    VarLenFeature("int64", max_len=8, pad_value=-1),
    VarLenFeature("bytes"),
]


@pytest.mark.parametrize("feature", SPECS)
def test_spec_json_roundtrip(feature):
    import json

    d = json.loads(json.dumps(spec_to_dict({"f": feature})))
    assert spec_from_dict(d) == {"f": feature}


@pytest.mark.parametrize("make, error", [
    (lambda: FixedLenFeature((-1,), "int64"), ValueError),
    (lambda: FixedLenFeature((), "int32"), ValueError),
    (lambda: FixedLenFeature((2,), "int64", default=[1, 2, 3]), ValueError),
    (lambda: FixedLenFeature((2, 2), "bytes"), ValueError),
    (lambda: VarLenFeature("float32", max_len=-3), ValueError),
    (lambda: VarLenFeature("int64", pad_value="x"), TypeError),
    (lambda: spec_from_dict({"f": {"kind": "sparse"}}), ValueError),
    (lambda: spec_to_dict({"f": "int64"}), TypeError),
])
def test_spec_validation(make, error):
    with pytest.raises(error):
        make()
