"""Pure, vectorized transforms: a ``pyarrow.RecordBatch`` of clean rows → encoded columns → tf.Example bytes.

No per-row Python in the tokenizer or the lookups: text is tokenized straight off
the Arrow string buffers with numpy, categoricals with ``pyarrow.compute.index_in``.
Only the final protobuf serialization walks rows (``records.example_codec``).

Bad values raise ``ValueError`` naming the feature, the column and the row (the
row's key value too), never a silent default.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.spec import RESERVED_IDS, CategoricalFeature, FeatureSpec, NumericFeature, TextFeature
from records.example_codec import encode_example

__all__ = ["byte_token_ids", "encode_batch", "transform_batch"]


def _row_error(batch: pa.RecordBatch, spec: FeatureSpec, row: int, name: str, problem: str) -> ValueError:
    key = batch.column(spec.key)[row].as_py() if spec.key in batch.schema.names else "?"
    return ValueError(f"feature {name!r} (column {spec.features[name].source!r}), row {row} ({spec.key}={key}): {problem}")


def byte_token_ids(texts: pa.Array, *, max_tokens: int, append_eos: bool) -> pa.ListArray:
    """UTF-8 bytes → ids (byte + 3), cut to ``max_tokens`` (eos included), as a list<int64> array."""
    budget = max_tokens - 1 if append_eos else max_tokens
    binary = pc.binary_slice(texts.cast(pa.binary()), 0, budget)
    binary = pa.concat_arrays([binary]) if binary.offset else binary  # offsets start at 0
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int32, count=len(binary) + 1)
    data = binary.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8, count=int(offsets[-1])) if data is not None else np.empty(0, np.uint8)
    ids = raw.astype(np.int64) + len(RESERVED_IDS)
    if not append_eos:
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(ids))
    lengths = np.diff(offsets) + 1
    out_offsets = np.zeros(len(binary) + 1, dtype=np.int32)
    np.cumsum(lengths, out=out_offsets[1:])
    out = np.full(int(out_offsets[-1]), RESERVED_IDS["eos"], dtype=np.int64)
    # Every position except each row's last one takes the next byte id, in order.
    is_byte = np.ones(len(out), dtype=bool)
    is_byte[out_offsets[1:] - 1] = False
    out[is_byte] = ids
    return pa.ListArray.from_arrays(pa.array(out_offsets, pa.int32()), pa.array(out))


def _first_null(array: pa.Array) -> int | None:
    if array.null_count == 0:
        return None
    return int(np.flatnonzero(np.asarray(array.is_null()))[0])


def transform_batch(batch: pa.RecordBatch, spec: FeatureSpec) -> pa.RecordBatch:
    """Encode one batch of clean rows into feature columns (plus the key column).

    Returns:
        A RecordBatch with the key column and one column per feature: list<int64> for
        text, int64 for categorical and int64 numerics, float32 for float numerics.

    Raises:
        ValueError: a missing column, a null, a NaN, or a category outside a closed
            vocabulary; the message names the feature, column and row.
    """
    columns = {spec.key: batch.column(spec.key)}
    for name, feature in spec.features.items():
        if feature.source not in batch.schema.names:
            raise ValueError(f"feature {name!r}: input column {feature.source!r} is missing "
                             f"(columns: {batch.schema.names})")
        column = batch.column(feature.source)
        row = _first_null(column)
        if row is not None:
            raise _row_error(batch, spec, row, name, "value is null")
        if isinstance(feature, TextFeature):
            columns[name] = byte_token_ids(column, max_tokens=feature.max_tokens, append_eos=feature.append_eos)
        elif isinstance(feature, CategoricalFeature):
            ids = pc.index_in(column, value_set=pa.array(feature.vocabulary, pa.string()))
            row = _first_null(ids)
            if row is not None:
                raise _row_error(batch, spec, row, name,
                                 f"{column[row].as_py()!r} is not in the closed vocabulary {feature.vocabulary}")
            columns[name] = ids.cast(pa.int64())
        elif isinstance(feature, NumericFeature):
            values = column.cast(pa.int64() if feature.dtype == "int64" else pa.float32())
            if feature.dtype == "float32":
                nan = np.flatnonzero(np.isnan(values.to_numpy(zero_copy_only=False)))
                if len(nan):
                    raise _row_error(batch, spec, int(nan[0]), name, "value is NaN")
            columns[name] = values
    return pa.RecordBatch.from_pydict(columns)


def encode_batch(batch: pa.RecordBatch, spec: FeatureSpec) -> list[tuple[str, bytes]]:
    """Transform a batch and serialize each row as a tf.Example.

    Returns:
        ``(key, example_bytes)`` per row, in input order.
    """
    encoded = transform_batch(batch, spec)
    keys = encoded.column(spec.key).to_pylist()
    features = {}
    for name, feature in spec.features.items():
        column = encoded.column(name)
        if isinstance(feature, TextFeature):
            offsets = column.offsets.to_numpy()
            flat = column.values.to_numpy()
            features[name] = [flat[offsets[i]:offsets[i + 1]] for i in range(len(column))]
        else:
            features[name] = column.to_numpy(zero_copy_only=False).reshape(-1, 1)
    return [(key, encode_example({name: values[i] for name, values in features.items()}))
            for i, key in enumerate(keys)]
