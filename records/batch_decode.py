"""Decoding many serialized tf.Examples at once into columns, per a FeatureSpec.

Parsing one protobuf message per record from Python costs microseconds per record
(message construction plus per-value Python ints), which caps a reader far below
what a GPU consumes. The Example layout is fixed and shallow, so we parse its wire
format for a whole chunk of records at once with numpy:

    Example   : 0x0a len Features
    Features  : (0x0a len Entry)*                 map<string, Feature>
    Entry     : 0x0a len key  0x12 len Feature
    Feature   : 0x0a|0x12|0x1a len List           bytes | float | int64 list
    List      : 0x0a len payload (packed numbers) | (0x0a len bytes)*

Each level is walked for all records in parallel (one numpy step per map entry,
not per value); packed int64 payloads are decoded with a vectorized varint decoder
that works in place on the record buffer (the byte before a payload always ends
its length varint, so varint boundaries are found from the < 0x80 bytes alone).
Where numba is installed, one compiled pass over the payload bytes replaces it
(:mod:`records.read_kernels`).
Chunks are small enough (``CHUNK_RECORDS``) to keep the work in the CPU cache.

Anything outside this happy path (unpacked lists, duplicate keys, a Feature with
no kind, unknown fields, a missing required feature, a kind or count mismatch,
malformed bytes) sends that chunk to the protobuf reference decoder, which yields
the same columns or raises the precise error. Tests hold both paths to the same
output, and to TensorFlow's ``tf.io.parse_example``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from records.columns import ByteSpans, Ragged, concat_columns, take_rows
from records.example_codec import decode_example
from records.spec import FeatureSpec, FixedLenFeature, validate_spec
from records.wire import (
    Fallback,
    compiled_kernels,
    gather_ranges,
    packed_varints,
    read_field,
    read_varints,
)

__all__ = ["ExampleDecoder", "decode_slow", "CHUNK_RECORDS"]

CHUNK_RECORDS = 8192  # records per structure walk: numpy call overhead amortized
_KIND_TAG = {"bytes": 0x0A, "float32": 0x12, "int64": 0x1A}
_KIND_FIELD = {"bytes": "bytes_list", "float32": "float_list", "int64": "int64_list"}
_MAX_STEPS = 1 << 16


class ExampleDecoder:
    """Decodes serialized tf.Examples into columns (see :mod:`records.columns`).

    Args:
        spec: the features to extract; other features in the records are ignored.
        chunk_records: records per vectorized structure walk; a chunk the fast
            path cannot take is decoded by the protobuf path as a whole.
        spans: scalar bytes features (``FixedLenFeature((), "bytes")``) to return as
            :class:`~records.columns.ByteSpans` (where each value lies in the record
            buffer) instead of ``list[bytes]``: nothing is copied until a batch is packed.

    Call :meth:`decode` with a buffer and the data offsets/lengths of the records
    inside it (what :class:`records.framing.RecordBlock` holds), or
    :meth:`decode_records` with a list of ``bytes``.
    """

    def __init__(self, spec: FeatureSpec, *, chunk_records: int = CHUNK_RECORDS,
                 spans: Sequence[str] = ()) -> None:
        self.spec = validate_spec(spec)
        self.chunk_records = chunk_records
        for name in spans:
            f = self.spec.get(name)
            if not (isinstance(f, FixedLenFeature) and f.dtype == "bytes" and f.shape == ()):
                raise ValueError(f"spans: {name!r} is not a scalar bytes feature of the spec "
                                 f"(FixedLenFeature((), 'bytes')), got {f!r}")
        self.spans = frozenset(spans)
        self._names = list(self.spec)
        self._keys = [n.encode("utf-8") for n in self._names]
        self._key_bytes = np.frombuffer(b"".join(self._keys), dtype=np.uint8)
        self._key_off = np.cumsum([0] + [len(k) for k in self._keys], dtype=np.int64)
        self._by_len: dict[int, list[int]] = {}
        for k, key in enumerate(self._keys):
            self._by_len.setdefault(len(key), []).append(k)
        self.fast_chunks = 0  # counters, handy in tests and benchmarks
        self.slow_chunks = 0

    def decode_records(self, records: Sequence[bytes], *,
                       where: Callable[[int], str] | None = None) -> dict:
        """Decodes a list of serialized Examples."""
        lengths = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
        starts = np.zeros(len(records), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        return self.decode(b"".join(records), starts, lengths, where=where)

    def decode(self, buf: bytes, starts: np.ndarray, lengths: np.ndarray, *,
               where: Callable[[int], str] | None = None) -> dict:
        """Decodes the records ``buf[starts[i]:starts[i] + lengths[i]]``.

        Args:
            buf: buffer holding the serialized Examples.
            starts, lengths: int64 arrays, one entry per record, any order
                (ascending ``starts`` is fastest).
            where: maps a row number to a description for error messages
                (e.g. ``"record #12 of part-00003"``).

        Returns:
            Columns, one row per record, in the order given.

        Raises:
            ValueError: a record is not an Example, or does not match the spec
                (message names the feature, the record and what was expected).
        """
        return concat_columns(self.decode_chunks(buf, starts, lengths, where=where))

    def decode_chunks(self, buf: bytes, starts: np.ndarray, lengths: np.ndarray, *,
                      where: Callable[[int], str] | None = None) -> list[dict]:
        """:meth:`decode`, as the columns of consecutive chunks of rows (not concatenated).

        A reader that cuts batches out of the chunks saves copying them into one block.
        """
        a = np.frombuffer(buf, dtype=np.uint8)
        starts = np.asarray(starts, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        if len(starts) > 1 and (starts[1:] < starts[:-1]).any():
            order = np.argsort(starts, kind="stable")
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            sub = None if where is None else (lambda i: where(int(order[i])))
            return [take_rows(self.decode(buf, starts[order], lengths[order], where=sub),
                              inverse)]
        parts = []
        for lo in range(0, max(len(starts), 1), self.chunk_records):
            s = starts[lo:lo + self.chunk_records]
            e = s + lengths[lo:lo + self.chunk_records]
            try:
                parts.append(self._fast(buf, a, s, e))
                self.fast_chunks += 1
            except Fallback:
                self.slow_chunks += 1
                records = list(map(buf.__getitem__, map(slice, s.tolist(), e.tolist())))
                sub = None if where is None else (lambda i, lo=lo: where(lo + i))
                cols = decode_slow(records, self.spec, where=sub)
                for name in self.spans:
                    cols[name] = ByteSpans.from_values(cols[name])
                parts.append(cols)
        return parts

    # -- the vectorized path -------------------------------------------------------------
    def _fast(self, buf: bytes, a: np.ndarray, s: np.ndarray, e: np.ndarray) -> dict:
        n = len(s)
        if n == 0 or (e <= s).any():
            raise Fallback  # empty Examples (all features missing) are rare: slow path
        spans = self._walk_compiled(a, s, e)
        if spans is None:
            spans = self._walk(a, s, e)
        return {name: self._column(buf, a, n, name, r, vs, ve)
                for name, (r, vs, ve) in zip(self._names, spans, strict=True)}

    def _walk_compiled(self, a, s, e) -> list | None:
        """:meth:`_walk` by :func:`records.read_kernels.walk_examples`; None where numba is
        not installed or the kernel declines (then :meth:`_walk` decides)."""
        kernels = compiled_kernels()
        if kernels is None:
            return None
        vs = np.empty((len(self._names), len(s)), dtype=np.int64)
        ve = np.empty_like(vs)
        if not kernels.walk_examples(a, np.ascontiguousarray(s), np.ascontiguousarray(e),
                                     self._key_bytes, self._key_off, vs, ve):
            return None
        spans = []
        for k in range(len(self._names)):
            r = np.flatnonzero(vs[k] >= 0)
            spans.append((r, vs[k, r], ve[k, r]))
        return spans

    def _walk(self, a, s, e) -> list:
        """Each spec feature's ``(records that have it (ascending), Feature starts, ends)``."""
        fs, fe = read_field(a, s, e, 0x0A)
        if (fe != e).any():
            raise Fallback  # trailing or repeated top-level fields
        rec, es, ee = self._entries(a, fs, fe)
        ks, ke = read_field(a, es, ee, 0x0A)
        vs, ve = read_field(a, ke, ee, 0x12)
        if (ve != ee).any():
            raise Fallback
        key_id = self._match_keys(a, ks, ke - ks)
        spans = []
        for k in range(len(self._names)):
            sel = np.flatnonzero(key_id == k)
            r = rec[sel]
            if len(r) > 1 and (r[1:] <= r[:-1]).any():  # not in record order
                order = np.argsort(r, kind="stable")
                sel, r = sel[order], r[order]
                if (r[1:] == r[:-1]).any():
                    raise Fallback  # duplicate key: protobuf keeps the last one
            spans.append((r, vs[sel], ve[sel]))
        return spans

    def _entries(self, a, fs, fe):
        """Walks the Features map of every record; returns (record, start, end) per entry."""
        recs, starts, ends = [], [], []
        active = np.flatnonzero(fe > fs)
        p = fs.copy()
        steps = 0
        while active.size:
            q, end = read_field(a, p[active], fe[active], 0x0A)
            recs.append(active)
            starts.append(q)
            ends.append(end)
            p[active] = end
            active = active[end < fe[active]]
            steps += 1
            if steps > _MAX_STEPS:
                raise Fallback
        if not recs:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        return np.concatenate(recs), np.concatenate(starts), np.concatenate(ends)

    def _match_keys(self, a, ks, klen):
        """Spec index of each entry's key (-1: not in the spec), one byte column at a time."""
        key_id = np.full(len(ks), -1, dtype=np.int64)
        for m, ids in self._by_len.items():
            cand = np.flatnonzero(klen == m)
            if not cand.size:
                continue
            kc = ks[cand]
            cols = [a[kc + j] for j in range(m)]  # 1-d gathers beat one (E, m) gather
            for k in ids:
                want = self._keys[k]
                ok = np.ones(len(cand), dtype=bool)
                for j in range(m):
                    ok &= cols[j] == want[j]
                key_id[cand[ok]] = k
        return key_id

    def _column(self, buf, a, n, name, r, vs, ve):
        """One feature's column; ``r`` (ascending) are the records that have it."""
        f = self.spec[name]
        fixed = isinstance(f, FixedLenFeature)
        if len(r) < n and fixed and f.default is None:
            raise Fallback  # required feature missing: the slow path names it
        ls, le = read_field(a, vs, ve, _KIND_TAG[f.dtype])
        if (le != ve).any():
            raise Fallback
        if f.dtype == "bytes":
            return self._bytes_column(buf, a, n, f, fixed, r, ls, le, name in self.spans)
        ps, pe = ls.copy(), ls.copy()  # packed payload bounds; empty list -> empty payload
        has = le > ls
        if has.all():
            ps, pe = read_field(a, ls, le, 0x0A)
        elif has.any():
            ps[has], pe[has] = read_field(a, ls[has], le[has], 0x0A)
        if (pe != le).any():
            raise Fallback  # unpacked or split lists
        if fixed:
            vals = self._fixed_values(a, f, ps, pe)
            if len(r) == n:
                return vals
            np_dtype = np.int64 if f.dtype == "int64" else np.float32
            out = np.empty((n, *f.shape), dtype=np_dtype)
            out[...] = np.asarray(f.default_array(), dtype=np_dtype).reshape(f.shape)
            out[r] = vals
            return out
        if f.dtype == "float32":
            nbytes = pe - ps
            if (nbytes % 4).any():
                raise Fallback
            values, counts = gather_ranges(a, ps, nbytes).view("<f4"), nbytes // 4
        else:
            values, counts = packed_varints(a, ps, pe, None)
        lengths = np.zeros(n, dtype=np.int64)
        lengths[r] = counts
        return Ragged.from_lengths(values, lengths)

    @staticmethod
    def _fixed_values(a, f, ps, pe):
        size = f.size
        if f.dtype == "float32":
            if (pe - ps != 4 * size).any():
                raise Fallback
            idx = ps[:, None] + np.arange(4 * size, dtype=np.int64)
            vals = np.ascontiguousarray(a[idx]).view("<f4")
        elif size == 1:
            if (pe <= ps).any():
                raise Fallback
            vals, nxt = read_varints(a, ps, pe, 10)
            if (nxt != pe).any():
                raise Fallback
        else:
            vals = np.empty(len(ps) * size, dtype=np.int64)
            if size:
                packed_varints(a, ps, pe, size, vals)
            elif (pe != ps).any():
                raise Fallback
        return vals.reshape((len(ps), *f.shape))

    def _bytes_column(self, buf, a, n, f, fixed, r, ls, le, spans=False):
        rows, starts, ends = [], [], []
        active = np.arange(len(r))
        p = ls.copy()
        active = active[p < le]
        while active.size:
            q, end = read_field(a, p[active], le[active], 0x0A)
            rows.append(active)
            starts.append(q)
            ends.append(end)
            p[active] = end
            active = active[end < le[active]]
        counts = np.zeros(len(r), dtype=np.int64)
        if spans:
            return _spans_column(a, n, f, r, rows, starts, ends, counts)
        flat: list[bytes] = []
        if rows:
            row = np.concatenate(rows)
            np.add.at(counts, row, 1)
            order = np.argsort(row, kind="stable")  # steps were appended in order
            st = np.concatenate(starts)[order].tolist()
            en = np.concatenate(ends)[order].tolist()
            flat = list(map(buf.__getitem__, map(slice, st, en)))
        if fixed and (counts != f.size).any():
            raise Fallback
        scalar = fixed and f.shape == ()
        per_record: list = [None] * n
        pos = 0
        for i, c in zip(r.tolist(), counts.tolist(), strict=True):
            per_record[i] = flat[pos] if scalar else flat[pos:pos + c]
            pos += c
        if len(r) < n:
            default = f.default_array() if fixed else []
            for i in range(n):
                if per_record[i] is None:
                    per_record[i] = default[0] if scalar else list(default)
        return per_record


def _spans_column(a, n, f, r, rows, starts, ends, counts) -> ByteSpans:
    """A scalar bytes column as :class:`ByteSpans` over the record buffer ``a``."""
    row = np.concatenate(rows) if rows else np.empty(0, np.int64)
    np.add.at(counts, row, 1)
    if (counts != 1).any():
        raise Fallback
    order = np.argsort(row, kind="stable")
    st = np.concatenate(starts)[order] if rows else row
    en = np.concatenate(ends)[order] if rows else row
    if len(r) == n:
        return ByteSpans([a], np.zeros(n, np.int64), st, en)
    default = np.frombuffer(bytes(f.default_array()[0]), dtype=np.uint8)  # missing rows
    which, s_all = np.ones(n, np.int64), np.zeros(n, np.int64)
    e_all = np.full(n, len(default), np.int64)
    which[r], s_all[r], e_all[r] = 0, st, en
    return ByteSpans([a, default], which, s_all, e_all)


def _kind_of(value) -> str | None:
    if isinstance(value, np.ndarray):
        return "int64" if value.dtype == np.int64 else "float32"
    return "bytes" if value else None  # [] is a Feature with no kind: empty of any kind


def decode_slow(records: Sequence[bytes], spec: FeatureSpec, *,
                where: Callable[[int], str] | None = None) -> dict:
    """Reference decoder through protobuf; same output as :class:`ExampleDecoder`.

    Raises:
        ValueError: naming the feature, the record and what was expected.
    """
    where = where or (lambda i: f"record {i}")
    decoded = []
    for i, data in enumerate(records):
        try:
            decoded.append(decode_example(data))
        except ValueError as err:
            raise ValueError(f"{where(i)}: {err}") from err
    out = {}
    for name, f in spec.items():
        np_dtype = np.int64 if f.dtype == "int64" else np.float32
        rows = []
        for i, d in enumerate(decoded):
            v = d.get(name)
            if v is not None:
                kind = _kind_of(v)
                if kind is not None and kind != f.dtype:
                    raise ValueError(f"{where(i)}: feature {name!r} is a "
                                     f"{_KIND_FIELD[kind]}, expected {_KIND_FIELD[f.dtype]}")
                if kind is None:
                    v = [] if f.dtype == "bytes" else np.empty(0, np_dtype)
            if isinstance(f, FixedLenFeature):
                if v is None:
                    if f.default is None:
                        raise ValueError(f"{where(i)}: required feature {name!r} "
                                         f"(FixedLenFeature {f.shape} {f.dtype}, no default) "
                                         f"is missing")
                    v = f.default_array()
                if len(v) != f.size:
                    raise ValueError(f"{where(i)}: feature {name!r} has {len(v)} values, "
                                     f"expected {f.size} for shape {f.shape}")
            elif v is None:
                v = [] if f.dtype == "bytes" else np.empty(0, np_dtype)
            rows.append(v)
        if f.dtype == "bytes":
            out[name] = [r[0] for r in rows] if isinstance(f, FixedLenFeature) and \
                f.shape == () else [list(r) for r in rows]
        elif isinstance(f, FixedLenFeature):
            out[name] = (np.stack([np.asarray(r, np_dtype) for r in rows]).reshape(
                (len(rows), *f.shape)) if rows else np.empty((0, *f.shape), np_dtype))
        else:
            lengths = np.fromiter(map(len, rows), np.int64, len(rows))
            values = (np.concatenate([np.asarray(r, np_dtype) for r in rows]) if rows
                      else np.empty(0, np_dtype))
            out[name] = Ragged.from_lengths(values.astype(np_dtype, copy=False), lengths)
    return out
