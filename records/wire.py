"""Vectorized protobuf wire-format primitives over a uint8 view of many records.

Every function takes positions for MANY messages at once (int64 arrays) and does
one numpy step per wire element, never per message. They raise
:class:`Fallback` whenever the bytes are not in the shape they expect; callers
then use the protobuf reference path, which is always right and names the error.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Fallback", "VARINT_CHUNK", "compiled_kernels", "read_varints", "read_field",
           "packed_varints", "gather_ranges"]

VARINT_CHUNK = 1024  # payloads per varint step: ~400 KB of temporaries stay in cache
_SPARSE_SPAN = 8  # compact payloads first when they fill under 1/8 of the bytes they span


class Fallback(Exception):
    """The fast path does not handle this chunk; use the protobuf path."""


_KERNELS: list = []  # [module or None] once looked up


def compiled_kernels():
    """:mod:`records.read_kernels` where numba is installed, else None (numpy paths).

    Imported on first use, so ``import records`` does not load numba.
    """
    if not _KERNELS:
        try:
            from records import read_kernels
        except ModuleNotFoundError as err:  # no numba here (a GPU host)
            if err.name not in ("numba", "llvmlite"):
                raise
            read_kernels = None
        _KERNELS.append(read_kernels if read_kernels is not None and read_kernels.ENABLED
                        else None)
    return _KERNELS[0]


def read_varints(a: np.ndarray, p: np.ndarray, limit: np.ndarray, max_bytes: int = 5):
    """Reads one varint at each position ``p`` (all ``< limit``); returns ``(int64, next)``.

    Lengths inside a record never need more than 5 bytes; values use up to 10
    (negative int64s), accumulated as uint64 so they wrap like protobuf's.
    """
    b = a[p]
    cont = b >= 0x80
    if not cont.any():
        return b.astype(np.int64), p + 1
    val = (b & 0x7F).astype(np.uint64)
    nbytes = np.ones(p.shape, dtype=np.int64)
    idx = np.flatnonzero(cont)
    k = 1
    while idx.size:
        if k == max_bytes:
            raise Fallback
        q = p[idx] + k
        if (q >= limit[idx]).any():
            raise Fallback
        bk = a[q]
        val[idx] |= (bk & 0x7F).astype(np.uint64) << np.uint64(7 * k)
        nbytes[idx] += 1
        idx = idx[bk >= 0x80]
        k += 1
    return val.view(np.int64), p + nbytes


def read_field(a, p, end, tag):
    """Parses ``tag len bytes`` at ``p`` (inside ``end``); returns the bytes' (start, end)."""
    if (p + 1 >= end).any() or (a[p] != tag).any():
        raise Fallback
    n, q = read_varints(a, p + 1, end)
    e = q + n
    if (e > end).any():
        raise Fallback
    return q, e


_PATTERN = np.tile(np.array([False, True]), VARINT_CHUNK + 1)


def packed_varints(a: np.ndarray, ps: np.ndarray, pe: np.ndarray, size: int | None,
                    out: np.ndarray | None = None):
    """Decodes packed varint payloads ``a[ps[i]:pe[i]]`` (sorted, non-overlapping).

    Args:
        size: values every payload must hold (FixedLen), or None (VarLen).
        out: int64 array of ``len(ps) * size`` to fill (FixedLen).

    Returns:
        ``(values int64, counts per payload)``.

    The byte just before each payload ends its length varint, so it is < 0x80 and
    every value ends at a byte < 0x80 inside the payload. We find those, then read
    each value from its last byte and the (up to) two bytes before it; values of
    four or more bytes (>= 2**21, or negative) take the general path.

    Where numba is installed, :mod:`records.read_kernels` decodes them in one pass instead.
    """
    n = len(ps)
    kernels = compiled_kernels()
    if kernels is not None:
        return _compiled_varints(kernels, a, ps, pe, size, out)
    if n > VARINT_CHUNK:  # keep the temporaries cache-sized
        parts = [packed_varints(a, ps[i:i + VARINT_CHUNK], pe[i:i + VARINT_CHUNK], size,
                                 None if out is None else out[i * size:(i + VARINT_CHUNK) * size])
                 for i in range(0, n, VARINT_CHUNK)]
        counts = np.concatenate([c for _, c in parts])
        return (out if out is not None else np.concatenate([v for v, _ in parts])), counts
    if n == 0 or int(pe[-1]) == int(ps[0]):
        return (out if out is not None else np.empty(0, np.int64)), np.zeros(n, np.int64)
    if int(pe[-1]) - int(ps[0]) > _SPARSE_SPAN * (int((pe - ps).sum()) + 4 * n) + 4096:
        # A few numbers between large bytes values (an image's shape beside its pixels):
        # the walk below touches every byte from the first payload to the last, so copy
        # the payloads together first.
        compact, cps, cpe = _compact_payloads(a, ps, pe)
        return packed_varints(compact, cps, cpe, size, out)
    nonempty = pe > ps
    if (a[pe[nonempty] - 1] >= 0x80).any():
        raise Fallback  # the last value runs past its payload
    base, end = int(ps[0]) - 2, int(pe[-1])
    c = a[base:end]
    seg = np.empty(2 * n, dtype=np.int64)
    seg[0] = ps[0] - base
    seg[2::2] = ps[1:] - pe[:-1]
    seg[1::2] = pe - ps
    inpay = np.repeat(_PATTERN[:2 * n], seg)
    term = c < 0x80
    cont = ~term
    long_run = cont[:-2] & cont[1:-1]
    long_run &= cont[2:]
    long_run &= inpay[2:]
    if long_run.any():
        return _general_varints(a, ps, pe, size, out)
    term &= inpay
    t = np.flatnonzero(term)
    if size is not None:
        if len(t) != n * size:
            raise Fallback
        if size and ((t[::size] < ps - base).any() or (t[size - 1::size] >= pe - base).any()):
            raise Fallback  # some payload holds more, another fewer values
        counts = np.full(n, size, dtype=np.int64)
    else:
        counts = np.searchsorted(t, pe - base) - np.searchsorted(t, ps - base)
    b0 = np.take(c, t)
    p1 = np.take(a[base - 1:end - 1], t)
    p2 = np.take(a[base - 2:end - 2], t)
    shift = p2 >> 7  # 7 * (bytes - 1) for values of 1..3 bytes
    shift &= p1 >> 7
    shift += p1 >> 7
    shift *= 7
    val = b0.astype(np.uint32)
    val <<= 14
    p1 &= 0x7F
    val |= p1.astype(np.uint32) << 7
    p2 &= 0x7F
    val |= p2
    val >>= 14 - shift
    if out is None:
        return val.astype(np.int64), counts
    out[...] = val
    return out, counts


def _compiled_varints(kernels, a, ps, pe, size, out):
    ps = np.ascontiguousarray(ps, dtype=np.int64)
    pe = np.ascontiguousarray(pe, dtype=np.int64)
    counts = np.empty(len(ps), dtype=np.int64)
    if not kernels.count_varints(a, ps, pe, counts):
        raise Fallback  # the last value runs past its payload
    if size is not None and (counts != size).any():
        raise Fallback
    if out is None:
        out = np.empty(int(counts.sum()), dtype=np.int64)
    if not kernels.decode_varints(a, ps, pe, out):
        raise Fallback  # a value of more than 10 bytes
    return out, counts


def _general_varints(a, ps, pe, size, out):
    """Slow but complete: values of up to 10 bytes, one vectorized step per byte."""
    lo, hi = int(ps[0]) - 1, int(pe[-1])
    t = np.flatnonzero(a[lo:hi] < 0x80) + lo
    first = np.searchsorted(t, ps)
    counts = np.searchsorted(t, pe) - first
    if size is not None and (counts != size).any():
        raise Fallback
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    idx = np.repeat(first - starts, counts) + np.arange(int(counts.sum()), dtype=np.int64)
    ends = t[idx]
    nbytes = ends - t[idx - 1]
    if idx.size and int(nbytes.max()) > 10:
        raise Fallback
    val = a[ends].astype(np.uint64)
    for j in range(1, int(nbytes.max(initial=1))):
        more = nbytes > j
        low = (a[ends - j] & 0x7F).astype(np.uint64)
        val = np.where(more, (val << np.uint64(7)) | low, val)
    val = val.view(np.int64)
    if out is None:
        return val, counts
    out[...] = val
    return out, counts


def _compact_payloads(a: np.ndarray, ps: np.ndarray, pe: np.ndarray):
    """Copies payloads ``a[ps[i]:pe[i]]`` into one array, each after four zero bytes.

    The zero bytes stand in for the length varint before each payload, which
    :func:`packed_varints` relies on (a byte < 0x80 ends the previous varint), and
    for the bytes it reads before the first payload.

    Returns:
        ``(compact, new_starts, new_ends)``.
    """
    lengths = pe - ps
    new_starts = np.cumsum(lengths + 4) - lengths
    compact = np.zeros(int(new_starts[-1] + lengths[-1]), dtype=np.uint8)
    compact[np.repeat(new_starts - np.cumsum(lengths) + lengths, lengths)
            + np.arange(int(lengths.sum()), dtype=np.int64)] = gather_ranges(a, ps, lengths)
    return compact, new_starts, new_starts + lengths


def gather_ranges(a, starts, lengths):
    total = int(lengths.sum())
    cum = np.zeros(len(starts), dtype=np.int64)
    np.cumsum(lengths[:-1], out=cum[1:])
    return a[np.repeat(starts - cum, lengths) + np.arange(total, dtype=np.int64)]
