"""The vectorized decoder must equal the protobuf path on every input."""

import numpy as np
import pytest
from records_testlib import varint

from records import tfproto
from records.batch_decode import ExampleDecoder, decode_slow
from records.columns import Ragged, to_batch
from records.spec import FixedLenFeature, VarLenFeature

pytestmark = pytest.mark.usefixtures("read_path")  # numba kernels and numpy path

SPEC = {
    "tok": FixedLenFeature((5,), "int64"),
    "big": FixedLenFeature((3,), "int64"),
    "s": FixedLenFeature((), "int64"),
    "f": FixedLenFeature((2,), "float32"),
    "fs": FixedLenFeature((), "float32", default=-1.0),
    "d": FixedLenFeature((2,), "int64", default=[7, 8]),
    "v": VarLenFeature("int64"),
    "vf": VarLenFeature("float32", max_len=3, pad_value=9),
    "b": FixedLenFeature((), "bytes"),
    "vb": VarLenFeature("bytes"),
    "bb": FixedLenFeature((2,), "bytes", default=[b"p", b"q"]),
}


def _ld(field: int, payload: bytes) -> bytes:
    return bytes([field << 3 | 2]) + varint(len(payload)) + payload


def _feature(kind: str, values) -> bytes:
    f = tfproto.Feature()
    getattr(f, kind).SetInParent()
    getattr(f, kind).value.extend(values)
    return f.SerializeToString()


def _example(entries) -> bytes:
    """Example from (key, feature bytes) pairs, in the given order."""
    body = b"".join(_ld(1, _ld(1, k.encode()) + _ld(2, fb)) for k, fb in entries)
    return _ld(1, body)


def _random_record(rng) -> bytes:
    entries = [
        ("tok", _feature("int64_list", rng.integers(0, 300_000, 5).tolist())),
        ("big", _feature("int64_list", [-1, 2**62 + int(rng.integers(0, 9)), -(2**63)])),
        ("s", _feature("int64_list", [int(rng.integers(-5, 2**40))])),
        ("f", _feature("float_list", rng.standard_normal(2).astype(np.float32).tolist())),
        ("v", _feature("int64_list", rng.integers(0, 200, rng.integers(0, 5)).tolist())),
        ("vf", _feature("float_list", rng.random(rng.integers(0, 6)).tolist())),
        ("b", _feature("bytes_list", [rng.bytes(int(rng.integers(0, 4)))])),
        ("vb", _feature("bytes_list", [b"x" * int(k) for k in rng.integers(0, 3, rng.integers(0, 3))])),
        ("unrelated", _feature("bytes_list", [b"ignored"])),
    ]
    if rng.random() < 0.7:
        entries.append(("fs", _feature("float_list", [float(rng.random())])))
    if rng.random() < 0.5:
        entries.append(("d", _feature("int64_list", [1, int(rng.integers(0, 99))])))
    if rng.random() < 0.5:
        entries.append(("bb", _feature("bytes_list", [b"m", b"n"])))
    if rng.random() < 0.3:
        entries = [e for e in entries if e[0] != "v"]
    rng.shuffle(entries)  # map order is not guaranteed by other writers
    return _example(entries)


def assert_columns_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if isinstance(y, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, k
            np.testing.assert_array_equal(x, y, err_msg=k)
        elif isinstance(y, Ragged):
            assert x.values.dtype == y.values.dtype, k
            np.testing.assert_array_equal(x.values, y.values, err_msg=k)
            np.testing.assert_array_equal(x.offsets, y.offsets, err_msg=k)
        else:
            assert x == y, k


@pytest.fixture(scope="module")
def records():
    rng = np.random.default_rng(7)
    return [_random_record(rng) for _ in range(300)]


def test_fast_path_equals_protobuf_path(records):
    dec = ExampleDecoder(SPEC, chunk_records=64)
    assert_columns_equal(dec.decode_records(records), decode_slow(records, SPEC))
    assert dec.slow_chunks == 0 and dec.fast_chunks == 5


def test_permuted_offsets_keep_the_given_order(records):
    dec = ExampleDecoder(SPEC)
    buf = b"".join(records)
    lengths = np.array([len(r) for r in records])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    perm = np.random.default_rng(1).permutation(len(records))
    got = dec.decode(buf, starts[perm], lengths[perm])
    assert_columns_equal(got, decode_slow([records[i] for i in perm], SPEC))


UNUSUAL = {
    "unpacked int64": _example([("s", _ld(3, b"\x08\x05")), ("tok", _ld(3, b"".join(
        b"\x08" + varint(i) for i in range(5))))]),
    "duplicate key (last wins)": _example([("s", _feature("int64_list", [1])),
                                          ("s", _feature("int64_list", [2]))]),
    "features field twice (merged)": _example([("s", _feature("int64_list", [3]))])
    + _example([("tok", _feature("int64_list", [1, 2, 3, 4, 5]))]),
    "unknown top-level field": _example([("s", _feature("int64_list", [4]))]) + b"\x18\x01",
    "feature with no kind": _example([("s", _feature("int64_list", [5])), ("v", b"")]),
}


@pytest.mark.parametrize("name", list(UNUSUAL))
def test_unusual_encodings_fall_back_to_identical_results(name):
    spec = {"s": FixedLenFeature((), "int64"), "tok": FixedLenFeature((5,), "int64",
                                                                     default=0),
            "v": VarLenFeature("int64")}
    regular = _example([("s", _feature("int64_list", [9]))])
    recs = [regular, UNUSUAL[name], regular]
    dec = ExampleDecoder(spec)
    got = dec.decode_records(recs)
    assert_columns_equal(got, decode_slow(recs, spec))
    assert dec.slow_chunks == 1


def test_to_batch_pads_varlen_and_reports_lengths(records):
    cols = ExampleDecoder(SPEC).decode_records(records[:10])
    batch = to_batch(cols, SPEC)
    assert batch["tok"].shape == (10, 5) and batch["tok"].flags.c_contiguous
    assert batch["vf"].shape == (10, 3)
    lengths = batch["vf_lengths"]
    for i in range(10):
        row = cols["vf"].values[cols["vf"].offsets[i]:cols["vf"].offsets[i + 1]]
        assert lengths[i] == min(len(row), 3)
        np.testing.assert_array_equal(batch["vf"][i, :lengths[i]], row[:3])
        assert (batch["vf"][i, lengths[i]:] == 9).all()
    assert batch["v"].shape[1] == max(batch["v_lengths"])
    assert batch["vb_lengths"].tolist() == [len(x) for x in batch["vb"]]


@pytest.mark.parametrize("record, words", [
    (_example([("tok", _feature("int64_list", [1, 2, 3, 4, 5]))]),
     ["'s'", "required", "missing", "record 1"]),
    (_example([("s", _feature("float_list", [1.0]))]), ["'s'", "float_list", "int64_list"]),
    (_example([("s", _feature("int64_list", [1, 2]))]), ["'s'", "2 values", "expected 1"]),
    (b"\xff\x01garbage", ["record 1", "tf.Example"]),
])
def test_errors_name_feature_record_and_expectation(record, words):
    spec = {"s": FixedLenFeature((), "int64")}
    ok = _example([("s", _feature("int64_list", [1]))])
    with pytest.raises(ValueError) as info:
        ExampleDecoder(spec).decode_records([ok, record])
    for w in words:
        assert w in str(info.value)
