"""Serialized ``tf.train.Example``s of a whole batch of columns: all lengths first, then one buffer.

:func:`records.example_codec.encode_example` builds one protobuf message per row; here the
wire format is written for every row of a batch at once, byte for byte the same
(deterministic serialization: map entries in key order, numeric lists packed, an empty
numeric list as a Feature holding an empty list, an empty bytes list likewise). Two passes:

1. **Lengths**, column-wise: each list's body (a packed int64 list: the varint sizes of its
   values), then each enclosing message (list → Feature → map entry → Features → Example)
   is its body plus a tag and a varint length. Each row's size gives its offset in one
   preallocated buffer.
2. **Bytes**: the Example's head at each row's offset, then feature by feature in key order
   one map entry per row, each written at that row's cursor, which then moves past it.

Both passes are compiled loops (:mod:`records.wire_kernels`) where numba is installed, and
numpy steps otherwise (a host without numba: slower, the same bytes); no per-row Python
either way. The result is Arrow's binary layout, ``(offsets, data)``, which a caller wraps
without copying (``pa.Array.from_buffers``) or slices per row.

Wire shapes (field numbers of ``tensorflow/core/example/{example,feature}.proto``)::

    Example  { 1: Features { 1: repeated MapEntry { 1: string key, 2: Feature value } } }
    Feature  { 1: BytesList { 1: repeated bytes } | 2: FloatList { 1: packed fixed32 }
             | 3: Int64List { 1: packed varint } }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

try:
    from records import wire_kernels as _kernels
except ModuleNotFoundError as err:  # no numba here (a GPU host): the numpy path below
    if err.name not in ("numba", "llvmlite"):
        raise
    _kernels = None

__all__ = ["COMPILED", "KINDS", "Column", "serialize_columns"]

COMPILED = _kernels is not None  # whether the numba kernels are available
KINDS = ("int64", "float32", "bytes")
_KIND_TAG = {"bytes": 0x0A, "float32": 0x12, "int64": 0x1A}  # Feature's oneof fields
_LONG_RANGE = 64  # mean bytes per range above which numpy copies range by range (images)


@dataclass(frozen=True)
class Column:
    """One feature of a batch, column-wise (Arrow's list and binary layouts).

    Attributes:
        kind: ``"int64"``, ``"float32"`` or ``"bytes"``.
        values: every row's values, concatenated: integers (widened to int64; a uint64
            above int64's range is an error), floats (narrowed to float32, as protobuf's
            ``float`` field does), or for bytes the items' data (uint8, or any buffer).
        offsets: ``rows + 1`` integers: row ``i`` holds ``values[offsets[i]:offsets[i + 1]]``
            (for bytes: items ``offsets[i]`` to ``offsets[i + 1]``). Need not start at 0.
        item_offsets: bytes only: item ``j`` is ``values[item_offsets[j]:item_offsets[j + 1]]``.
        present: a bool per row, or None for all; a row where False leaves the feature out
            of its Example (its values are not read).
    """

    kind: str
    values: object
    offsets: object
    item_offsets: object = None
    present: object = None


@dataclass
class _Feature:
    """A column checked and normalized for the kernels, with its per-row lengths."""

    kind: str
    head: np.ndarray      # the entry's key field and its value's tag (0x12), as bytes
    values: np.ndarray    # uint64 view of the int64s | float32 bytes (uint8) | bytes data
    offsets: np.ndarray   # int64, rows + 1
    items: np.ndarray     # bytes: item offsets (int64); int64 on the numpy path: the values'
    #                       varints back to back (uint8); else empty
    present: np.ndarray   # bool per row
    body_len: np.ndarray  # a numeric list's packed field: bytes of the values
    list_len: np.ndarray  # the XxxList message
    feature_len: np.ndarray  # the Feature message
    entry_len: np.ndarray    # the map entry message
    total: np.ndarray        # the entry with its tag and length; 0 where absent


def _vsize(a: np.ndarray) -> np.ndarray:
    """Varint sizes (int64) of non-negative int64s or of uint64s."""
    sizes = np.ones(len(a), dtype=np.int64)
    if len(a):
        top = int(a.max())
        for k in range(1, 10):
            if top < 1 << (7 * k):
                break
            sizes += a >= (np.uint64(1 << (7 * k)) if a.dtype == np.uint64 else 1 << (7 * k))
    return sizes


def _framed(body: np.ndarray) -> np.ndarray:
    """Bytes of a length-delimited field holding ``body`` bytes: tag, varint, body."""
    return 1 + _vsize(body) + body


def _integers(name: str, what: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in "biu":
        raise TypeError(f"feature {name!r}: {what} must be a 1-d integer array, got "
                        f"{a.dtype} of shape {a.shape}")
    if a.dtype == np.uint64 and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"feature {name!r}: {what} holds a value above int64's range")
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_offsets(name: str, what: str, offsets: np.ndarray, entries: int, size: int) -> None:
    if len(offsets) != entries + 1 or not len(offsets):
        raise ValueError(f"feature {name!r}: {what} has {len(offsets)} entries, expected "
                         f"{entries + 1}")
    if offsets[0] < 0 or offsets[-1] > size or (np.diff(offsets) < 0).any():
        raise ValueError(f"feature {name!r}: {what} must rise from >= 0 to <= {size} "
                         f"(got {offsets[0]} .. {offsets[-1]}, or a decrease)")


def _prepare(name: str, column: Column, rows: int, compiled: bool) -> _Feature:
    """Checks ``column`` (errors name the feature) and computes its lengths."""
    if column.kind not in KINDS:
        raise ValueError(f"feature {name!r}: kind must be one of {KINDS}, got {column.kind!r}")
    offsets = _integers(name, "offsets", column.offsets)
    if column.kind == "bytes":
        values = np.zeros(0, np.uint8) if column.values is None else \
            np.frombuffer(column.values, np.uint8) if not isinstance(column.values, np.ndarray) \
            else np.ascontiguousarray(column.values).view(np.uint8).reshape(-1)
        items = _integers(name, "item_offsets", column.item_offsets if column.item_offsets
                          is not None else np.zeros(1, np.int64))
        _check_offsets(name, "item_offsets", items, len(items) - 1, len(values))
        _check_offsets(name, "offsets", offsets, rows, len(items) - 1)
        framed = np.zeros(len(items), dtype=np.int64)  # [0, cumulative framed item sizes]
        np.cumsum(_framed(np.diff(items)), out=framed[1:])
        list_len = framed[offsets[1:]] - framed[offsets[:-1]]
        body_len = list_len
    else:
        if column.kind == "int64":
            values = _integers(name, "values", column.values)
        else:
            with np.errstate(over="ignore"):  # beyond float32's range: inf, as protobuf
                values = np.ascontiguousarray(column.values, dtype="<f4")
            if values.ndim != 1:
                raise TypeError(f"feature {name!r}: values must be 1-d, got {values.shape}")
        _check_offsets(name, "offsets", offsets, rows, len(values))
        items = np.zeros(0, dtype=np.int64)
        if column.kind == "int64":
            values = values.view(np.uint64)  # protobuf's int64 varint: two's complement
            if compiled:
                body_len = np.empty(rows, dtype=np.int64)
                _kernels.packed_varint_sizes(values, offsets, body_len)
            else:  # every value's varint now; the writer copies each row's run of them
                items, body_len = _packed_varints(values, offsets)
        else:
            values = values.view(np.uint8)
            body_len = 4 * np.diff(offsets)
        list_len = np.where(np.diff(offsets) > 0, _framed(body_len), 0)
    key = name.encode("utf-8")
    head = np.frombuffer(b"\x0a" + _varint(len(key)) + key + b"\x12", np.uint8)
    feature_len = _framed(list_len)
    entry_len = len(head) + _vsize(feature_len) + feature_len
    present = np.ones(rows, dtype=bool) if column.present is None else \
        np.ascontiguousarray(column.present, dtype=bool)
    if present.shape != (rows,):
        raise ValueError(f"feature {name!r}: present has shape {present.shape}, expected ({rows},)")
    total = np.where(present, _framed(entry_len), 0)
    return _Feature(column.kind, head, values, offsets, items, present, body_len, list_len,
                    feature_len, entry_len, total)


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _packed_varints(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The varints of ``values[offsets[0]:offsets[-1]]`` (uint64) back to back, and the bytes
    of each row's run of them."""
    stream, sizes = _varint_stream(values[offsets[0]:offsets[-1]])
    ends = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=ends[1:])
    return stream, np.diff(ends[offsets - offsets[0]])


def serialize_columns(columns: Mapping[str, Column], rows: int, *,
                      compiled: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Serialized ``tf.train.Example`` of every row, as ``(offsets, data)``.

    Row ``i``'s Example is ``data[offsets[i]:offsets[i + 1]]``, byte for byte what
    ``encode_example({name: (kind, row i's values) for each present feature})`` returns.

    Args:
        columns: feature name -> :class:`Column`, each of ``rows`` rows.
        rows: rows in the batch (an Example per row, even one with no feature present).
        compiled: True for the numba kernels, False for numpy; None: numba if installed.

    Returns:
        ``offsets`` (int64, ``rows + 1``, from 0) and ``data`` (uint8).

    Raises:
        TypeError: values or offsets of the wrong type; the message names the feature.
        ValueError: an unknown kind, offsets out of range or decreasing, a uint64 beyond
            int64; the message names the feature.
        RuntimeError: ``compiled=True`` where numba is not installed.
    """
    if compiled is None:
        compiled = COMPILED
    elif compiled and not COMPILED:
        raise RuntimeError("compiled=True, but numba is not installed")
    bad = [name for name in columns if not isinstance(name, str)]
    if bad:
        raise TypeError(f"feature names must be str, got {bad[0]!r}")
    # Deterministic serialization orders map entries by their keys' bytes.
    features = [_prepare(name, columns[name], rows, compiled)
                for name in sorted(columns, key=lambda n: n.encode("utf-8"))]
    features_len = np.zeros(rows, dtype=np.int64)
    for feature in features:
        features_len += feature.total
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(_framed(features_len), out=offsets[1:])
    buf = np.empty(int(offsets[-1]), dtype=np.uint8)
    cursor = offsets[:-1].copy()
    if compiled:
        _kernels.write_example_heads(buf, cursor, features_len)
        for f in features:
            _write_compiled(buf, cursor, f)
    else:
        buf[cursor] = 0x0A
        cursor += 1
        cursor += _put_varints(buf, cursor, features_len)
        for f in features:
            _write_numpy(buf, cursor, f)
    if not np.array_equal(cursor, offsets[1:]):  # a sizing bug, never bad input
        raise RuntimeError("columnar_wire: bytes written differ from the lengths computed")
    return offsets, buf


def _write_compiled(buf: np.ndarray, cursor: np.ndarray, f: _Feature) -> None:
    common = (buf, cursor, f.present, f.head, f.entry_len, f.feature_len, f.list_len)
    if f.kind == "int64":
        _kernels.write_int64_entries(*common, f.body_len, f.values, f.offsets)
    elif f.kind == "float32":
        _kernels.write_float_entries(*common, f.values, f.offsets)
    else:
        _kernels.write_bytes_entries(*common, f.values, f.items, f.offsets)


def _put_varints(buf: np.ndarray, at: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Writes each of ``values`` (non-negative int64 or uint64) at ``at``; returns sizes."""
    v = values.astype(np.uint64, copy=False)
    sizes = _vsize(v)
    for k in range(int(sizes.max(initial=0))):
        rows = np.flatnonzero(sizes > k)
        byte = ((v[rows] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        byte[sizes[rows] > k + 1] |= 0x80
        buf[at[rows] + k] = byte
    return sizes


def _varint_stream(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The varints of uint64 ``values`` back to back, and each one's size (uint8).

    A (values, widest) matrix of 7-bit groups with their continuation bits, each row's bytes
    past its size dropped: one pass per byte of the widest value, on the narrowest lanes
    that hold the values (token ids: 16 bits, two groups).
    """
    top = int(values.max(initial=0))
    widest = max(1, -(-top.bit_length() // 7))
    lanes = values.astype(np.uint16 if top < 1 << 16 else np.uint32 if top < 1 << 32 else np.uint64)
    groups = np.empty((len(values), widest), dtype=np.uint8)
    keep = np.ones((len(values), widest), dtype=bool)
    sizes = np.ones(len(values), dtype=np.uint8)
    for k in range(widest):
        groups[:, k] = (lanes >> lanes.dtype.type(7 * k)).astype(np.uint8) & 0x7F
        if k + 1 < widest:  # a byte follows: the continuation bit here, and keep the next
            more = lanes >= lanes.dtype.type(1 << (7 * (k + 1)))
            groups[:, k] |= more.view(np.uint8) << 7
            keep[:, k + 1] = more
            sizes += more
    return groups[keep], sizes


def _copy_ranges(dst: np.ndarray, at: np.ndarray, src: np.ndarray, starts: np.ndarray,
                 lengths: np.ndarray) -> None:
    """``dst[at[i]:at[i] + lengths[i]] = src[starts[i]:starts[i] + lengths[i]]`` for all i."""
    total = int(lengths.sum())
    if total == 0:
        return
    if total > _LONG_RANGE * len(lengths):  # few long ranges: a slice copy each is cheaper
        for d, s, n in zip(at.tolist(), starts.tolist(), lengths.tolist(), strict=True):
            dst[d:d + n] = src[s:s + n]
        return
    before = np.cumsum(lengths) - lengths
    step = np.arange(total, dtype=np.int64)
    dst[np.repeat(at - before, lengths) + step] = src[np.repeat(starts - before, lengths) + step]


def _write_numpy(buf: np.ndarray, cursor: np.ndarray, f: _Feature) -> None:
    """The numpy twin of :mod:`records.wire_kernels`' writers: the same bytes, vectorized."""
    rows = np.flatnonzero(f.present)
    p = cursor[rows]
    buf[p] = 0x0A
    p += 1
    p += _put_varints(buf, p, f.entry_len[rows])
    buf[p[:, None] + np.arange(len(f.head))] = f.head
    p += len(f.head)
    p += _put_varints(buf, p, f.feature_len[rows])
    buf[p] = _KIND_TAG[f.kind]
    p += 1
    p += _put_varints(buf, p, f.list_len[rows])
    starts, counts = f.offsets[rows], np.diff(f.offsets)[rows]
    if f.kind == "bytes":
        # Item j of those rows starts at its row's cursor plus the framed items before it.
        item = np.repeat(starts - (np.cumsum(counts) - counts), counts) + \
            np.arange(int(counts.sum()), dtype=np.int64)
        lengths = np.diff(f.items)
        framed = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(_framed(lengths), out=framed[1:])
        at = np.repeat(p - framed[starts], counts) + framed[item]
        buf[at] = 0x0A
        at += 1
        at += _put_varints(buf, at, lengths[item])
        _copy_ranges(buf, at, f.values, f.items[item], lengths[item])
    else:
        filled = counts > 0
        q = p[filled]
        buf[q] = 0x0A
        q += 1
        q += _put_varints(buf, q, f.body_len[rows][filled])
        p[filled] = q
        if f.kind == "float32":
            _copy_ranges(buf, p, f.values, 4 * starts, 4 * counts)
        else:
            starts_in = np.zeros(len(f.offsets), dtype=np.int64)  # each row's run of varints
            np.cumsum(f.body_len, out=starts_in[1:])
            _copy_ranges(buf, p, f.items, starts_in[rows], f.body_len[rows])
    cursor[rows] = p + (f.list_len if f.kind == "bytes" else f.body_len)[rows]
