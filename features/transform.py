"""Pure, vectorized transforms: a ``pyarrow.RecordBatch`` of clean rows → encoded columns → tf.Example bytes.

No per-row Python in the encoders (:mod:`features.encoders`: Arrow compute and numpy, FarmHash
once per distinct value) nor in serialization (:mod:`features.examples` assembles the
protobuf wire format column-wise, byte-identical to ``records.example_codec``); BPE
tokenization alone reads its ids back per row.

Bad values (a null, a NaN, text that is not a number, a category outside a closed
vocabulary, an image of the wrong size) follow the spec's ``on_error``:

- ``raise``: ``ValueError`` naming the feature, its column, the row and the row's key;
- ``quarantine``: the row comes back apart, in :attr:`Transformed.quarantined`, with the
  feature and reason, so the engine writes it to quarantine and rows in = rows out +
  rows quarantined. The first failing feature (in spec order) is the reason.

A missing or wrongly typed input column is not a row's fault and always raises.
An empty string and the integer -1 are values like any other (hashed, looked up, or out
of an identity's range), as for ``tf.strings.to_hash_bucket_fast`` and lookup tables; TF's
feature columns alone read a dense ``''`` or ``-1`` as "missing" and drop it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.artifacts import Artifacts, resolve_artifacts
from features.encoders import ENCODERS, Column, Context
from features.examples import Values, serialize_examples
from features.kinds import (
    CrossedFeature,
    ImageFeature,
    NumericFeature,
    NumericListFeature,
    TextFeature,
)
from features.spec import FeatureSpec
from features.text import byte_token_ids, pack_blocks

__all__ = [
    "Encoded",
    "Transformed",
    "byte_token_ids",
    "encode",
    "encode_batch",
    "serialize",
    "transform",
    "transform_batch",
]

QUARANTINE_COLUMNS = ("_row", "_feature", "_reason")  # appended to the quarantined input rows


@dataclass(frozen=True)
class Transformed:
    """A transformed batch: good rows encoded, bad rows apart.

    Attributes:
        encoded: the key column + one column per encoded feature (+ an image's ``_shape``).
        quarantined: the bad input rows, with ``_row`` (index in the batch), ``_feature``
            and ``_reason`` appended; empty under ``on_error: raise``.
    """

    encoded: pa.RecordBatch
    quarantined: pa.RecordBatch


@dataclass(frozen=True)
class Encoded:
    """Serialized examples + the quarantined rows; ``documents`` rows went into the examples.

    Attributes:
        keys: each example's key (the key column's type; strings when packed).
        payloads: each example's tf.Example bytes (Arrow binary, the writer's buffer as is).
        transformed: the transform these examples were serialized from (for callers that
            also need the ids, e.g. per-feature statistics, without transforming again).
    """

    keys: pa.Array
    payloads: pa.Array
    quarantined: pa.RecordBatch
    documents: int
    transformed: Transformed | None = field(default=None, repr=False, compare=False)

    @property
    def examples(self) -> list[tuple[str, bytes]]:
        """``(key, tf.Example bytes)`` per example, as Python objects (per-row: for tests)."""
        return list(zip(self.keys.to_pylist(), self.payloads.to_pylist(), strict=True))


def _columns_of(feature) -> str:
    return ", ".join(map(repr, feature.columns)) if isinstance(feature, CrossedFeature) \
        else repr(feature.source)


def _row_error(batch: pa.RecordBatch, spec: FeatureSpec, row: int, name: str, problem: str) -> ValueError:
    key = batch.column(spec.key)[row].as_py() if spec.key in batch.schema.names else "?"
    what = f"feature {name!r} (column {_columns_of(spec.features[name])})" if name in spec.features \
        else f"key column {spec.key!r}"
    return ValueError(f"{what}, row {row} ({spec.key}={key}): {problem}")


def _check_columns(batch: pa.RecordBatch, spec: FeatureSpec) -> None:
    if spec.key not in batch.schema.names:
        raise ValueError(f"key column {spec.key!r} is missing (columns: {batch.schema.names})")
    for name, feature in spec.encoded().items():
        source = getattr(feature, "source", None)
        if source is not None and source not in batch.schema.names:
            raise ValueError(f"feature {name!r}: input column {source!r} is missing "
                             f"(columns: {batch.schema.names})")


def _with_nulls(name: str, feature, batch: pa.RecordBatch, column: Column) -> Column:
    """Null inputs are bad rows (an optional image's or list's null is not)."""
    source = getattr(feature, "source", None)
    if source is None or (isinstance(feature, ImageFeature | NumericListFeature)
                          and not feature.required):
        return column
    nulls = np.asarray(batch.column(source).is_null()) if batch.column(source).null_count else None
    if nulls is None:
        return column
    why = column.why
    bad = nulls if column.bad is None else nulls | column.bad
    return Column(column.values, bad, lambda i: "value is null" if nulls[i] else why(i), column.extra)


def transform(batch: pa.RecordBatch, spec: FeatureSpec,
              artifacts: Artifacts | None = None) -> Transformed:
    """Encode one batch of clean rows; bad rows raise or come back apart (``spec.on_error``).

    Args:
        batch: rows with the key column and every feature's source column.
        spec: the feature spec.
        artifacts: from :func:`features.analyze` (or loaded); None for specs that need
            none (list/file vocabularies, explicit boundaries, bytes tokenizer).

    Raises:
        ValueError: a missing/wrongly typed column, a missing artifact, or (``on_error:
            raise``) a bad value; the message names the feature, column, row and key.
    """
    artifacts = resolve_artifacts(spec, artifacts)
    _check_columns(batch, spec)
    ctx = Context(batch, artifacts)
    features = spec.encoded()
    # Crosses read the ids of the features they name: encode those first.
    for crossed in (False, True):
        for name, feature in features.items():
            if isinstance(feature, CrossedFeature) == crossed:
                ctx.encoded[name] = _with_nulls(name, feature, batch,
                                                ENCODERS[feature.kind](name, feature, ctx))
    n = batch.num_rows
    reason_of = np.full(n, -1, dtype=np.int64)  # index into `names` of each row's first fault
    names = [spec.key, *features]
    key_nulls = np.asarray(batch.column(spec.key).is_null())
    reason_of[key_nulls] = 0
    for index, name in enumerate(names[1:], start=1):
        bad = ctx.encoded[name].bad
        if bad is not None:
            reason_of[(reason_of < 0) & bad] = index
    faulty = np.flatnonzero(reason_of >= 0)
    reasons = [ctx.encoded[names[reason_of[i]]].why(int(i)) if reason_of[i] else "key is null"
               for i in faulty]
    if len(faulty) and spec.on_error == "raise":
        first = min(range(len(faulty)), key=lambda j: (reason_of[faulty[j]], faulty[j]))
        raise _row_error(batch, spec, int(faulty[first]), names[reason_of[faulty[first]]],
                         reasons[first])
    good = pa.array(reason_of < 0)
    columns = {spec.key: batch.column(spec.key)}
    for name, column in ctx.encoded.items():
        columns[name] = column.values
        columns.update(column.extra)
    columns = {name: columns[name] for name in [spec.key, *_output_order(spec)]}
    encoded = pa.RecordBatch.from_pydict(columns)
    if len(faulty):
        encoded = encoded.filter(good)
    rows = pa.array(faulty, pa.int64())
    quarantined = batch.take(rows)
    for name, values in zip(QUARANTINE_COLUMNS, (
            rows, pa.array([names[reason_of[i]] for i in faulty], pa.string()),
            pa.array(reasons, pa.string())), strict=True):
        quarantined = quarantined.append_column(name, values)
    return Transformed(encoded, quarantined)


def _output_order(spec: FeatureSpec) -> list[str]:
    out = []
    for name, feature in spec.encoded().items():
        out += [name, f"{name}_shape"] if isinstance(feature, ImageFeature) else [name]
    return out


def _strict(result, what: str):
    if result.quarantined.num_rows:
        first = result.quarantined.slice(0, 1).to_pylist()[0]
        raise ValueError(f"{result.quarantined.num_rows} rows are quarantined (first: row "
                         f"{first['_row']}, feature {first['_feature']!r}: {first['_reason']}); "
                         f"{what} would drop them: call transform()/encode() to receive them")
    return result


def transform_batch(batch: pa.RecordBatch, spec: FeatureSpec,
                    artifacts: Artifacts | None = None) -> pa.RecordBatch:
    """:func:`transform`'s encoded rows; raises rather than drop quarantined rows.

    Returns:
        A RecordBatch with the key column and one column per encoded feature: list<int64>
        for text, int64 ids, int64/float32 numerics, binary + fixed_size_list<int64>[3]
        ``<name>_shape`` for images, large_list<int64/float32> for numeric lists.
    """
    return _strict(transform(batch, spec, artifacts), "transform_batch").encoded


def _values(column: pa.Array, feature) -> list[tuple[str, Values]]:
    """The Example values of one encoded column (an image adds its ``_shape``)."""
    rows = len(column)
    if isinstance(feature, TextFeature):
        offsets = column.offsets.to_numpy().astype(np.int64)
        return [("", Values("int64", column.values.to_numpy(), offsets))]
    if isinstance(feature, NumericListFeature):
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        offsets = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        present = np.asarray(column.is_valid()) if column.null_count else None
        return [("", Values(feature.dtype, column.flatten().to_numpy(zero_copy_only=False),
                            offsets, present))]
    if isinstance(feature, ImageFeature):
        present = np.asarray(column.is_valid())
        shape = np.tile(np.array(feature.shape, np.int64), rows)
        return [("", Values("bytes", column, np.arange(rows + 1), present)),
                ("_shape", Values("int64", shape, np.arange(rows + 1) * 3, present))]
    return [("", Values(feature.dtype if isinstance(feature, NumericFeature) else "int64",
                        column.to_numpy(zero_copy_only=False), np.arange(rows + 1)))]


def serialize(encoded: pa.RecordBatch, spec: FeatureSpec) -> list[tuple[str, bytes]]:
    """tf.Example bytes of each row of :func:`transform`'s ``encoded`` batch (document layout).

    Vectorized (:mod:`features.examples`), and byte for byte what
    ``records.example_codec.encode_example`` gives for the same row; an optional image's
    null leaves both ``<name>`` and ``<name>_shape`` out of that row's Example, an optional
    numeric list's null leaves ``<name>`` out.
    """
    examples = _serialized(encoded, spec).to_pylist()
    return list(zip(encoded.column(spec.key).to_pylist(), examples, strict=True))


def _serialized(encoded: pa.RecordBatch, spec: FeatureSpec) -> pa.Array:
    values = {name + suffix: v for name, f in spec.encoded().items()
              for suffix, v in _values(encoded.column(name), f)}
    return serialize_examples(values, encoded.num_rows)


def _packed(encoded: pa.RecordBatch, spec: FeatureSpec) -> tuple[pa.Array, pa.Array]:
    name, feature = spec.text_feature()
    ids = encoded.column(name)
    blocks, first_row = pack_blocks(ids, block_size=feature.block_size)
    keys = encoded.column(spec.key).to_pylist()
    starts = ids.offsets.to_numpy() - ids.offsets[0].as_py()
    n = len(blocks)
    examples = serialize_examples(
        {name: Values("int64", blocks.ravel(), np.arange(n + 1) * feature.block_size)}, n)
    # Key: the document whose tokens open the block, and where in it the block starts.
    offsets = np.arange(n) * feature.block_size - starts[first_row]
    return pa.array([f"{keys[row]}@{offset}" for row, offset in zip(
        first_row.tolist(), offsets.tolist(), strict=True)], pa.string()), examples


def encode(batch: pa.RecordBatch, spec: FeatureSpec, artifacts: Artifacts | None = None) -> Encoded:
    """Transform and serialize a batch: ``(key, tf.Example bytes)`` per row, in input order.

    With a packed text feature, the good rows' ids are packed into blocks instead, one
    Example per block keyed ``<key of the opening document>@<offset in it>``; split the
    rows first (:func:`features.split.split_batch`) so that no block mixes splits.
    """
    result = transform(batch, spec, artifacts)
    packed = any(isinstance(f, TextFeature) and f.layout == "packed" for f in spec.features.values())
    keys, payloads = _packed(result.encoded, spec) if packed else (
        result.encoded.column(spec.key), _serialized(result.encoded, spec))
    return Encoded(keys, payloads, result.quarantined, result.encoded.num_rows, result)


def encode_batch(batch: pa.RecordBatch, spec: FeatureSpec,
                 artifacts: Artifacts | None = None) -> list[tuple[str, bytes]]:
    """:func:`encode`'s examples; raises rather than drop quarantined rows.

    Returns:
        ``(key, example_bytes)`` per row (per block when packed), in input order.
    """
    return _strict(encode(batch, spec, artifacts), "encode_batch").examples
