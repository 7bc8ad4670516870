"""tf.Example bytes for a whole batch at once, byte for byte what ``records.example_codec`` writes.

``encode_example`` builds one protobuf message per row (~60 µs for a post); here the
features' Arrow/numpy columns go to :func:`records.columnar_wire.serialize_columns`, which
computes every message's length in one pass and writes all rows' Examples into one
buffer in a second (compiled with numba where installed). That buffer and its offsets
become an Arrow binary array without a copy, which the engines move and write as is.

The output equals ``encode_example(...)`` of each row (deterministic serialization: map
entries in key order, packed numeric lists, an empty int64 list as an empty
``Int64List``); the tests hold it to that and to TensorFlow's own serializer.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from records.columnar_wire import Column, serialize_columns

__all__ = ["Values", "binary_layout", "serialize_examples"]

_INT32_MAX = 2**31 - 1  # pa.binary()'s offsets are int32: larger batches use large_binary


class Values:
    """One feature of a batch, ready to serialize.

    Args:
        kind: ``"int64"``, ``"float32"`` or ``"bytes"``.
        flat: all rows' values concatenated (numpy for numbers, a binary or string Arrow
            array for bytes: one item per element; a null item is written as empty bytes).
        offsets: row ``i`` holds ``flat[offsets[i]:offsets[i + 1]]`` (int64, ``rows + 1``).
        present: bool per row; a row where False leaves the feature out of its Example.
    """

    def __init__(self, kind: str, flat, offsets: np.ndarray, present: np.ndarray | None = None):
        self.kind, self.flat, self.offsets, self.present = kind, flat, np.asarray(offsets), present

    def column(self, name: str) -> Column:
        """The :class:`records.columnar_wire.Column` of feature ``name`` (no copy of the data)."""
        if self.kind != "bytes":
            return Column(self.kind, np.asarray(self.flat), self.offsets, present=self.present)
        items = self.flat.combine_chunks() if isinstance(self.flat, pa.ChunkedArray) else self.flat
        if not isinstance(items, pa.Array):
            items = pa.array(items, pa.large_binary())
        if not (pa.types.is_binary(items.type) or pa.types.is_large_binary(items.type)
                or pa.types.is_string(items.type) or pa.types.is_large_string(items.type)):
            raise TypeError(f"feature {name!r}: bytes values must be a binary or string array, "
                            f"got {items.type}")
        item_offsets, data = binary_layout(items)
        if items.null_count and np.diff(item_offsets)[np.asarray(items.is_null())].any():
            item_offsets, data = binary_layout(items.fill_null(pa.scalar(b"", items.type)))
        return Column("bytes", data, self.offsets, item_offsets, self.present)


def binary_layout(items: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Buffer | None]:
    """``(offsets, data)`` of a binary or string array, without a copy (Arrow's layout).

    Item ``i`` is ``data[offsets[i]:offsets[i + 1]]``; the offsets are int32 (int64 for the
    large types) and need not start at 0 (a slice). Null items are not told apart.
    """
    if isinstance(items, pa.ChunkedArray):
        items = items.combine_chunks()
    wide = pa.types.is_large_binary(items.type) or pa.types.is_large_string(items.type)
    _, offsets, data = items.buffers()
    if offsets is None:  # an empty array may come without buffers
        return np.zeros(1, np.int64), None
    offsets = np.frombuffer(offsets, np.int64 if wide else np.int32)
    return offsets[items.offset:items.offset + len(items) + 1], data


def serialize_examples(features: dict[str, Values], rows: int) -> pa.Array:
    """Serialized ``tf.train.Example`` per row, identical to ``encode_example``'s bytes.

    Args:
        features: feature name -> its values; map entries are written in key order.
        rows: rows in the batch (each gets an Example, even with no feature present).

    Returns:
        A ``pa.binary()`` array of ``rows`` Examples (``pa.large_binary()`` past 2 GiB),
        built on the writer's buffer without a copy.

    Raises:
        TypeError, ValueError: values that do not fit their kind, or offsets that do not
            fit the values; the message names the feature.
    """
    offsets, data = serialize_columns({name: v.column(name) for name, v in features.items()}, rows)
    if offsets[-1] <= _INT32_MAX:
        return pa.Array.from_buffers(pa.binary(), rows, [None, pa.py_buffer(
            offsets.astype(np.int32)), pa.py_buffer(data)])
    return pa.Array.from_buffers(pa.large_binary(), rows,
                                 [None, pa.py_buffer(offsets), pa.py_buffer(data)])
