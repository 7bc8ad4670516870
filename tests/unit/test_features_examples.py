"""features.examples: the columnar writer's bytes equal every other tf.Example writer's.

A property test over seeded random batches holding every kind of feature (int64, float and
bytes lists, empty lists, absent rows, multi-byte varints, negative int64s, NaN and inf,
multi-byte UTF-8 in keys and values): the columnar writer (numba kernels and numpy path)
== the Arrow-join writer it replaced (``benchmarks/examples_arrow_join.py``) ==
``records.example_codec.encode_example`` == TensorFlow's ``SerializeToString``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import records.columnar_wire as columnar_wire
from benchmarks import examples_arrow_join
from features.examples import Values, serialize_examples
from records.example_codec import encode_example

SEEDS = range(12)
NAMES = ["ids", "score", "blob", "名前", "é", "f" * 200, "a", "Z", "ids2"]
TEXT = ["", "a", "关于", "é", "🙂", "RoPE 的位置编码", "x" * 130]  # 1- to 4-byte UTF-8
WIDE_INTS = [0, 1, 127, 128, 16383, 16384, 2**21, 2**35 + 5, 2**62, 2**63 - 1, -1, -(2**63), -300]
ODD_FLOATS = [np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4028235e38, 0.1]


def _random_feature(rng: np.random.Generator, rows: int) -> dict:
    """One feature: kind, per-row value lists, presence. Lists may be empty; rows absent."""
    kind = rng.choice(["int64", "float32", "bytes"])
    lengths = rng.integers(0, rng.choice([2, 6, 40]), rows)
    present = rng.random(rows) < 0.75 if rng.random() < 0.5 else None
    per_row = []
    for n in lengths:
        if kind == "int64":
            small = rng.integers(0, 400, n)
            wide = rng.choice(WIDE_INTS, n)
            full = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
            pick = rng.integers(0, 3, n)
            per_row.append(np.where(pick == 0, small, np.where(pick == 1, wide, full)).astype(np.int64))
        elif kind == "float32":
            values = rng.normal(size=n).astype(np.float32)
            odd = rng.random(n) < 0.2
            values[odd] = rng.choice(ODD_FLOATS, int(odd.sum()))
            per_row.append(values)
        else:
            items = [rng.choice(TEXT).encode("utf-8") * int(rng.integers(1, 3)) for _ in range(n)]
            if n and rng.random() < 0.1:  # a length past two varint bytes
                items[0] = bytes(rng.integers(0, 256, 17_000, dtype=np.uint8))
            per_row.append(items)
    return {"kind": str(kind), "rows": per_row, "present": present}


def _random_batch(seed: int) -> tuple[int, dict[str, dict]]:
    rng = np.random.default_rng(seed)
    rows = int(rng.choice([0, 1, 7, 150]))
    names = rng.choice(NAMES, int(rng.integers(1, 6)), replace=False)
    return rows, {str(name): _random_feature(rng, rows) for name in names}


def _flat(feature: dict, *, skip: int = 0):
    """(flat values, row offsets): numbers as numpy, bytes as one Arrow item array.

    ``skip`` leading values no row uses: offsets that do not start at 0, as a slice has.
    """
    rows = feature["rows"]
    offsets = skip + np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    if feature["kind"] == "bytes":
        items = [b"skipped"] * skip + [item for row in rows for item in row]
        return pa.array(items, pa.binary()), offsets
    dtype = np.int64 if feature["kind"] == "int64" else np.float32
    values = [np.full(skip, 7, dtype)] + [np.asarray(r, dtype) for r in rows]
    return np.concatenate(values).astype(dtype), offsets


def _expected(rows: int, features: dict[str, dict]) -> list[bytes]:
    out = []
    for i in range(rows):
        row = {name: (f["kind"], f["rows"][i]) for name, f in features.items()
               if f["present"] is None or f["present"][i]}
        out.append(encode_example(row))
    return out


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "numpy"])
@pytest.mark.parametrize("seed", SEEDS)
def test_random_batches_equal_encode_example_and_the_arrow_join_writer(seed, compiled, monkeypatch):
    rows, features = _random_batch(seed)
    real = columnar_wire.serialize_columns
    monkeypatch.setattr("features.examples.serialize_columns",
                        lambda c, r: real(c, r, compiled=compiled))
    values = {}
    for name, f in features.items():
        flat, offsets = _flat(f, skip=seed % 3)
        values[name] = Values(f["kind"], flat, offsets, f["present"])
    ours = serialize_examples(values, rows)
    assert ours.type == pa.binary() and len(ours) == rows
    expected = _expected(rows, features)
    assert ours.to_pylist() == expected
    before = {name: examples_arrow_join.Values(f["kind"], *_flat(f), f["present"])
              for name, f in features.items()}
    assert examples_arrow_join.serialize_examples(before, rows) == expected


@pytest.mark.tf
@pytest.mark.parametrize("seed", SEEDS)
def test_random_batches_equal_tensorflows_serialization(seed):
    import tensorflow as tf

    rows, features = _random_batch(seed)
    ours = serialize_examples({name: Values(f["kind"], *_flat(f), f["present"])
                               for name, f in features.items()}, rows).to_pylist()
    lists = {"int64": ("int64_list", tf.train.Int64List), "float32": ("float_list", tf.train.FloatList),
             "bytes": ("bytes_list", tf.train.BytesList)}
    for i in range(rows):
        example = tf.train.Example(features=tf.train.Features(feature={
            name: tf.train.Feature(**{lists[f["kind"]][0]: lists[f["kind"]][1](
                value=list(f["rows"][i]))})
            for name, f in features.items() if f["present"] is None or f["present"][i]}))
        # Without deterministic=True, protobuf orders map entries by hash, not by key.
        assert ours[i] == example.SerializeToString(deterministic=True), (seed, i)
        if len(example.features.feature) <= 1:
            assert ours[i] == example.SerializeToString()


@pytest.mark.parametrize("make", [
    lambda items: pa.array(items, pa.binary()),
    lambda items: pa.array(items, pa.large_binary()),
    lambda items: pa.array([None if i is None else i.decode() for i in items], pa.string()),
    lambda items: pa.array([b"pad"] + items, pa.binary()).slice(1),
    lambda items: pa.chunked_array([pa.array(items[:2], pa.binary()), pa.array(items[2:], pa.binary())]),
], ids=["binary", "large_binary", "string", "sliced", "chunked"])
def test_bytes_values_from_every_arrow_layout(make):
    items = [b"ab", None, "关于".encode(), b""]
    ours = serialize_examples({"b": Values("bytes", make(items), np.arange(5))}, 4).to_pylist()
    assert ours == [encode_example({"b": ("bytes", [b"" if i is None else i])}) for i in items]


def test_a_null_item_is_empty_even_where_its_slot_spans_bytes():
    # Arrow allows a null slot to span data; the Example must hold b"" there.
    items = pa.Array.from_buffers(pa.binary(), 2, [pa.py_buffer(np.packbits([1, 0], bitorder="little")),
                                                   pa.py_buffer(np.array([0, 2, 5], np.int32)),
                                                   pa.py_buffer(b"abXYZ")])
    ours = serialize_examples({"b": Values("bytes", items, np.array([0, 2]))}, 1).to_pylist()
    assert ours == [encode_example({"b": ("bytes", [b"ab", b""])})]


def test_no_features_is_an_empty_example():
    assert serialize_examples({}, 2).to_pylist() == [encode_example({})] * 2


def test_batches_past_two_gib_of_offsets_use_large_binary(monkeypatch):
    monkeypatch.setattr("features.examples._INT32_MAX", 10)  # stands in for 2**31 - 1
    ours = serialize_examples({"i": Values("int64", np.arange(4), np.arange(5))}, 4)
    assert ours.type == pa.large_binary()
    assert ours.to_pylist() == [encode_example({"i": [i]}) for i in range(4)]


def test_errors_name_the_feature():
    with pytest.raises(ValueError, match="feature 'ids'.*offsets"):
        serialize_examples({"ids": Values("int64", np.arange(3), np.array([0, 5]))}, 1)
    with pytest.raises(TypeError, match="feature 'img'.*binary or string"):
        serialize_examples({"img": Values("bytes", pa.array([1, 2]), np.arange(3))}, 2)
