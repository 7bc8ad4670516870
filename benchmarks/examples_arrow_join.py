"""The tf.Example writer ``features/examples.py`` had before issue 19: Arrow joins, one per level.

Kept, unchanged but for this docstring, as the "today" row of ``benchmarks/encode.py`` and
as one more reference in ``tests/unit/test_features_examples.py``; production serializes
with :mod:`records.columnar_wire`. It assembles the wire format column-wise: varints in
numpy, and each message level (list → Feature → map entry → Features → Example) is a length
prefix joined to its body by Arrow's ``binary_join_element_wise``, so every level copies
every row's bytes once more (about 131k posts a second per core; see BENCHMARKS.md).
The output equals ``encode_example(...)`` of each row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Values", "serialize_examples"]

_EMPTY = pa.scalar(b"", pa.large_binary())
_LIST_TAG = {"bytes": 0x0A, "float32": 0x12, "int64": 0x1A}  # Feature's oneof fields


def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of uint64 values: (bytes, size of each)."""
    v = values.astype(np.uint64, copy=False)
    most = int(v.max()) if len(v) else 0
    if most < 1 << 14:  # token ids and lengths: one or two bytes, on 16-bit lanes
        v16 = v.astype(np.uint16)
        two = v16 >= 128
        pairs = np.empty((len(v), 2), dtype=np.uint8)
        pairs[:, 0] = (v16 & 0x7F).astype(np.uint8) | (two.astype(np.uint8) << 7)
        pairs[:, 1] = (v16 >> 7).astype(np.uint8)
        keep = np.empty((len(v), 2), dtype=bool)
        keep[:, 0] = True
        keep[:, 1] = two
        return pairs[keep], 1 + two.astype(np.int64)
    widest = -(-most.bit_length() // 7)  # bytes of the largest value: the loops stop there
    sizes = np.ones(len(v), dtype=np.int64)
    for k in range(1, widest):
        sizes += v >= np.uint64(1 << (7 * k))
    starts = np.cumsum(sizes) - sizes
    out = np.empty(int(starts[-1] + sizes[-1]), dtype=np.uint8)
    for k in range(widest):
        m = np.flatnonzero(sizes > k)
        byte = ((v[m] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        out[starts[m] + k] = byte | np.where(sizes[m] > k + 1, np.uint8(0x80), np.uint8(0))
    return out, sizes


def _binary(data: np.ndarray, sizes: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), len(sizes),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, _EMPTY, null_handling="replace",
                                       null_replacement="")


def _prefixed(tag: int, body: pa.Array, emit: np.ndarray | None = None) -> pa.Array:
    """``tag, varint(len(body)), body`` per row; only ``body`` where ``emit`` is False."""
    lengths = pc.binary_length(body).fill_null(0).to_numpy(zero_copy_only=False)
    data, sizes = _varints(lengths)
    per_row = np.zeros(len(lengths), dtype=np.int64)
    starts = np.cumsum(sizes) - sizes
    keep = np.ones(len(lengths), bool) if emit is None else emit
    per_row[keep] = sizes[keep] + 1
    out = np.empty(int(per_row.sum()), dtype=np.uint8)
    at = np.cumsum(per_row) - per_row
    out[at[keep]] = tag
    # Copy each kept row's varint bytes after its tag: a size-k run at a time.
    for k in range(1, 11):
        rows = keep & (sizes >= k)
        if not rows.any():
            break
        out[at[rows] + k] = data[starts[rows] + k - 1]
    return _join(_binary(out, per_row), body)


class Values:
    """One feature of a batch, ready to serialize.

    Args:
        kind: ``"int64"``, ``"float32"`` or ``"bytes"``.
        flat: all rows' values concatenated (numpy for numbers, a binary Arrow array for bytes).
        offsets: row ``i`` holds ``flat[offsets[i]:offsets[i + 1]]`` (int64, ``rows + 1``).
        present: bool per row; a row where False leaves the feature out of its Example.
    """

    def __init__(self, kind: str, flat, offsets: np.ndarray, present: np.ndarray | None = None):
        self.kind, self.flat, self.offsets, self.present = kind, flat, np.asarray(offsets), present

    def _payload(self) -> pa.Array:
        """The list message body per row."""
        counts = np.diff(self.offsets)
        if self.kind == "bytes":
            items = _prefixed(0x0A, pa.array(self.flat, pa.large_binary()))  # repeated bytes
            return _rows_of(items, self.offsets)
        if self.kind == "float32":
            data = np.ascontiguousarray(np.asarray(self.flat, dtype="<f4")).view(np.uint8)
            packed = _binary(data, counts * 4)
        else:
            ints = np.asarray(self.flat, dtype=np.int64).view(np.uint64)
            data, sizes = _varints(ints)
            ends = np.cumsum(sizes)
            starts_at = np.concatenate([[0], ends])[self.offsets]
            packed = _binary(data, np.diff(starts_at))
        return _prefixed(0x0A, packed, emit=counts > 0)  # an empty list has no field at all


def _rows_of(items: pa.Array, offsets: np.ndarray) -> pa.Array:
    """Concatenate ``items[offsets[i]:offsets[i + 1]]`` into one binary per row."""
    value_offsets = np.frombuffer(items.buffers()[1], np.int64)[items.offset:][: len(items) + 1]
    data = np.frombuffer(items.buffers()[2], np.uint8) if len(items) else np.empty(0, np.uint8)
    bounds = value_offsets[offsets] if len(items) else np.zeros(len(offsets), np.int64)
    return _binary(data[bounds[0]:bounds[-1]], np.diff(bounds))


def serialize_examples(features: dict[str, Values], rows: int) -> list[bytes]:
    """Serialized ``tf.train.Example`` per row, identical to ``encode_example``'s bytes."""
    entries = []
    for name in sorted(features):  # deterministic: map entries in key order
        values = features[name]
        key = name.encode("utf-8")
        feature = _prefixed(_LIST_TAG[values.kind], values._payload())
        head = pa.scalar(bytes([0x0A, len(key)]) + key, pa.large_binary()) if len(key) < 128 \
            else pa.scalar(b"\x0a" + bytes(_varints(np.array([len(key)]))[0]) + key,
                           pa.large_binary())
        body = _join(head, _prefixed(0x12, feature))
        entry = _prefixed(0x0A, body, emit=values.present)
        if values.present is not None:
            entry = pc.if_else(pa.array(values.present), entry, _EMPTY)
        entries.append(entry)
    body = _join(*entries) if entries else pa.array([b""] * rows, pa.large_binary())
    return _prefixed(0x0A, body).to_pylist()
