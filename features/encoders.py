"""One small encoder per feature kind, looked up by kind: a column of a batch → encoded values.

Each encoder is vectorized (Arrow compute and numpy over the whole column) and returns a
:class:`Column`: the encoded values (placeholders at bad rows) plus a mask of bad rows and
a function that says what is wrong with one of them, so the caller can raise or quarantine.
A column of the wrong Arrow type (strings where an id is hashed from floats, say) is a
schema error and raises at once; numbers arriving as text are parsed, and text that is not
a number is a bad row.

TF semantics, kind by kind (the parity tests hold them to TensorFlow itself):

- numeric: as is (int64 or float32), or ``(x - mean) / std`` / ``(x - min) / (max - min)``.
- bucketized: ``Bucketize``: the number of boundaries <= x, both compared as float32 (what
  ``bucketized_column`` over a float32 ``numeric_column`` computes).
- categorical: index in the vocabulary; else ``len(vocab) + Fingerprint64(x) % oov``; else
  ``default_value``; else a bad row. Integers are looked up as decimal text.
- hashed: ``Fingerprint64(x) % hash_bucket_size`` (integers as decimal text).
- identity: x in ``[0, num_buckets)``; else ``default_value``; else a bad row.
- crossed: ``sparse_cross_hashed`` of the components (ids of features, raw columns).
- numeric_list: the row's numbers as an int64 / float32 list (``VarLenFeature``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.artifacts import Artifacts
from features.hashing import (
    DEFAULT_HASH_KEY,
    cross_hashed,
    cross_inputs,
    fingerprint64,
    hash_buckets,
)
from features.kinds import (
    BucketizedFeature,
    CategoricalFeature,
    CrossedFeature,
    HashedFeature,
    IdentityFeature,
    ImageFeature,
    NumericFeature,
    NumericListFeature,
    TextFeature,
)
from features.text import bpe_token_ids, byte_token_ids, load_bpe

__all__ = ["ENCODERS", "NUMBER_PATTERN", "Column", "Context"]

NUMBER_PATTERN = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"  # numbers sent as text
_INTEGER = r"^\s*[-+]?\d+\s*$"


@dataclass
class Column:
    """One encoded feature over a batch.

    Attributes:
        values: the encoded Arrow array (any value at a bad row).
        bad: bool per row, or None when every row is good.
        why: what is wrong with bad row ``i`` (called for bad rows only).
        extra: companion output columns (an image's ``<name>_shape``).
    """

    values: pa.Array
    bad: np.ndarray | None = None
    why: Callable[[int], str] | None = None
    extra: dict[str, pa.Array] = field(default_factory=dict)


@dataclass
class Context:
    """What encoders see: the batch, the artifacts, and the features encoded so far."""

    batch: pa.RecordBatch
    artifacts: Artifacts
    encoded: dict[str, Column] = field(default_factory=dict)

    def column(self, name: str) -> pa.Array:
        """An input column as a plain array (Parquet may hand over dictionary-encoded ones)."""
        column = self.batch.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def _either(*masks: np.ndarray | None) -> np.ndarray | None:
    present = [m for m in masks if m is not None and m.any()]
    return np.logical_or.reduce(present) if present else None


def _type_error(name: str, feature, column: pa.Array, expected: str) -> ValueError:
    return ValueError(f"feature {name!r} (column {feature.source!r}): expected {expected}, "
                      f"got Arrow type {column.type}")


def _numbers(name: str, feature, column: pa.Array, *, integral: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Column → (int64 or float64 values, bad mask of text that does not parse)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        ok = pc.fill_null(pc.match_substring_regex(column, _INTEGER if integral else NUMBER_PATTERN), False)
        bad = ~np.asarray(ok)
        parsed = pc.cast(pc.utf8_trim_whitespace(pc.if_else(ok, column, "0")),
                         pa.int64() if integral else pa.float64())
        return parsed.to_numpy(zero_copy_only=False), (bad if bad.any() else None)
    if pa.types.is_integer(column.type) or pa.types.is_boolean(column.type):
        return pc.cast(column.fill_null(0), pa.int64()).to_numpy(zero_copy_only=False), None
    if pa.types.is_floating(column.type) and not integral:
        return pc.cast(column.fill_null(0), pa.float64()).to_numpy(zero_copy_only=False), None
    raise _type_error(name, feature, column, "integers or text of integers" if integral
                      else "numbers or text of numbers")


def _show(column: pa.Array, row: int) -> str:
    return repr(column[row].as_py())


def encode_numeric(name: str, f: NumericFeature, ctx: Context) -> Column:
    column = ctx.column(f.source)
    values, bad = _numbers(name, f, column, integral=False)
    nan = np.isnan(values) if values.dtype.kind == "f" else None
    fraction = None
    if f.dtype == "int64" and values.dtype.kind == "f":
        fraction = ~np.isnan(values) & (values != np.floor(values))

    def why(i: int) -> str:
        if nan is not None and nan[i]:
            return "value is NaN"
        if fraction is not None and fraction[i]:
            return f"{_show(column, i)} is not an integer"
        return f"{_show(column, i)} is not a number"

    if f.dtype == "int64":
        out = pa.array(np.nan_to_num(values).astype(np.int64) if values.dtype.kind == "f" else values)
    elif f.normalize == "none":
        out = pa.array(values.astype(np.float32))
    else:
        stats = ctx.artifacts.stats[name]
        x = values.astype(np.float64)
        if f.normalize == "z_score":
            scaled = (x - stats["mean"]) / stats["std"] if stats["std"] > 0 else x - stats["mean"]
        else:
            span = stats["max"] - stats["min"]
            scaled = (x - stats["min"]) / span if span > 0 else np.full_like(x, 0.5)
        out = pa.array(scaled.astype(np.float32))
    return Column(out, _either(bad, nan, fraction), why)


def encode_bucketized(name: str, f: BucketizedFeature, ctx: Context) -> Column:
    column = ctx.column(f.source)
    values, bad = _numbers(name, f, column, integral=False)
    nan = np.isnan(values) if values.dtype.kind == "f" else None
    boundaries = np.asarray(ctx.artifacts.boundaries[name], dtype=np.float32)
    # TF feeds bucketized_column a float32 numeric_column and float32 boundaries.
    ids = np.searchsorted(boundaries, values.astype(np.float32), side="right").astype(np.int64)
    return Column(pa.array(ids), _either(bad, nan),
                  lambda i: "value is NaN" if nan is not None and nan[i]
                  else f"{_show(column, i)} is not a number")


def _text_or_ints(name: str, f, column: pa.Array) -> pa.Array:
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.string())  # TF looks integers up and hashes them as text
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.cast(pa.string())  # the vocabulary's type, for index_in
    raise _type_error(name, f, column, "strings or integers")


def encode_categorical(name: str, f: CategoricalFeature, ctx: Context) -> Column:
    values = _text_or_ints(name, f, ctx.column(f.source))
    vocab = ctx.artifacts.vocabularies[name]
    value_set = ctx.artifacts.cached(("vocab", name), lambda: pa.array(vocab, pa.string()))
    found = pc.index_in(values, value_set=value_set)
    missing = np.asarray(found.is_null()) & np.asarray(values.is_valid())
    ids = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    if not missing.any():
        return Column(pa.array(ids))
    if f.num_oov_buckets:
        rows = np.flatnonzero(missing)
        oov = fingerprint64(values.take(pa.array(rows))) % np.uint64(f.num_oov_buckets)
        ids[rows] = len(vocab) + oov.astype(np.int64)
        return Column(pa.array(ids))
    if f.default_value is not None:
        ids[missing] = f.default_value
        return Column(pa.array(ids))
    shown = vocab if len(vocab) <= 20 else f"of {len(vocab)} values"
    return Column(pa.array(ids), missing,
                  lambda i: f"{_show(values, i)} is not in the closed vocabulary {shown}")


def encode_hashed(name: str, f: HashedFeature, ctx: Context) -> Column:
    values = _text_or_ints(name, f, ctx.column(f.source))
    return Column(pa.array(hash_buckets(values, f.hash_bucket_size)))


def encode_identity(name: str, f: IdentityFeature, ctx: Context) -> Column:
    column = ctx.column(f.source)
    values, bad = _numbers(name, f, column, integral=True)
    outside = (values < 0) | (values >= f.num_buckets)
    if bad is not None:
        outside &= ~bad
    if outside.any() and f.default_value is not None:
        values = np.where(outside, f.default_value, values)
        outside = None
    return Column(pa.array(values.astype(np.int64)), _either(bad, outside),
                  lambda i: f"{_show(column, i)} is not an integer" if bad is not None and bad[i]
                  else f"{_show(column, i)} is outside [0, {f.num_buckets}) and there is no "
                       "default_value")


def encode_crossed(name: str, f: CrossedFeature, ctx: Context) -> Column:
    parts, masks = [], []
    for ref in f.columns:
        if ref in ctx.encoded:  # a feature: cross its id, as crossed_column does
            parts.append(cross_inputs(ctx.encoded[ref].values))
            continue
        if ref not in ctx.batch.schema.names:
            raise ValueError(f"feature {name!r}: crossed column {ref!r} is neither a feature nor "
                             f"an input column (columns: {ctx.batch.schema.names})")
        column = ctx.column(ref)
        if not (pa.types.is_integer(column.type) or pa.types.is_string(column.type)
                or pa.types.is_large_string(column.type)):
            raise ValueError(f"feature {name!r} (column {ref!r}): expected strings or integers to "
                             f"cross, got Arrow type {column.type}")
        masks.append(np.asarray(column.is_null()))
        parts.append(cross_inputs(column))
    nulls = _either(*masks)
    key = f.hash_key or DEFAULT_HASH_KEY  # TF: hash_key or _DEFAULT_HASH_KEY
    raw = [r for r in f.columns if r not in ctx.encoded]
    return Column(pa.array(cross_hashed(parts, f.hash_bucket_size, key)), nulls,
                  lambda i: "value is null in crossed column "
                            f"{next(r for r in raw if ctx.column(r)[i].as_py() is None)!r}")


def encode_text(name: str, f: TextFeature, ctx: Context) -> Column:
    column = ctx.column(f.source)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise _type_error(name, f, column, "strings")
    column = column.fill_null("")  # null rows are bad already; keep offsets simple
    if f.tokenizer == "bytes":
        ids = byte_token_ids(column, max_tokens=f.max_tokens, append_eos=f.append_eos)
    else:
        tokenizer = ctx.artifacts.cached(("bpe", name), lambda: load_bpe(ctx.artifacts.tokenizers[name]))
        ids = bpe_token_ids(column, tokenizer, max_tokens=f.max_tokens, append_eos=f.append_eos)
    return Column(ids)


def encode_image(name: str, f: ImageFeature, ctx: Context) -> Column:
    column = ctx.column(f.source)
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        raise _type_error(name, f, column, "raw uint8 HWC bytes (binary)")
    expected = f.height * f.width * f.channels
    lengths = pc.binary_length(column).fill_null(expected).to_numpy(zero_copy_only=False)
    wrong = lengths != expected
    shape = pa.FixedSizeListArray.from_arrays(
        pa.array(np.tile(np.array(f.shape, np.int64), len(column))), 3)
    shape = pc.if_else(column.is_valid(), shape, pa.scalar(None, shape.type))
    return Column(column, wrong if wrong.any() else None,
                  lambda i: f"has {lengths[i]} bytes, expected {f.height}x{f.width}x{f.channels} "
                            f"= {expected}", extra={f"{name}_shape": shape})


def encode_numeric_list(name: str, f: NumericListFeature, ctx: Context) -> Column:
    column = ctx.column(f.source)
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)) or not (
            pa.types.is_integer(column.type.value_type)
            or pa.types.is_floating(column.type.value_type)):
        raise _type_error(name, f, column, "a list of numbers")
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    lengths = lengths.astype(np.int64)
    offsets = np.zeros(len(column) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = column.flatten()  # the values of the non-null rows, in row order
    parents = np.repeat(np.arange(len(column)), lengths)
    holes = np.zeros(len(column), dtype=bool)
    holes[parents[np.asarray(flat.is_null())]] = True
    flat = flat.fill_null(0)
    values = flat.to_numpy(zero_copy_only=False)
    fraction = np.zeros(len(column), dtype=bool)
    if f.dtype == "int64":
        if values.dtype.kind == "f":
            off = ~np.isfinite(values) | (values != np.floor(values))
            fraction[parents[off]] = True
            values = np.where(off, 0, values)
        values = values.astype(np.int64)
    else:
        values = values.astype(np.float32)
    ragged = (lengths % f.group) != 0

    def why(i: int) -> str:
        if holes[i]:
            return "the list holds a null"
        if fraction[i]:
            return f"{_show(column, i)} holds a value that is not an integer"
        return f"has {lengths[i]} values, not a multiple of group {f.group}"

    out = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values),
                                        mask=column.is_null() if column.null_count else None)
    return Column(out, _either(holes, fraction, ragged), why)


ENCODERS: dict[str, Callable[[str, object, Context], Column]] = {
    "numeric": encode_numeric,
    "bucketized": encode_bucketized,
    "categorical": encode_categorical,
    "hashed": encode_hashed,
    "identity": encode_identity,
    "crossed": encode_crossed,
    "text": encode_text,
    "image": encode_image,
    "numeric_list": encode_numeric_list,
}
