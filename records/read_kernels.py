"""The reader's loops that numpy runs in many passes: numba, one pass over the bytes.

Loaded on first use through :func:`records.wire.compiled_kernels`, and only where numba is
installed; elsewhere (a GPU host with PyTorch and numpy only) :mod:`records.wire` and
:mod:`records.scan` take their numpy paths, which give the same values and fall back or
report damage in the same cases. Every kernel releases the GIL.

* Packed varints: numpy takes about a dozen passes over a chunk (find the terminating
  bytes, compact them, gather and shift the bytes before them); here each byte is read
  once. A kernel returns ``False`` where the numpy path raises
  :class:`records.wire.Fallback`.
* The Features map: one loop over every record's entries, where numpy takes a step per
  map entry for all records and then matches keys a byte column at a time.
* Frame checks: both masked CRC32Cs of every frame in one call, with the SSE 4.2
  ``crc32`` instruction (x86-64) where the CPU has it (:data:`HARDWARE_CRC`); the numpy
  path makes one call of a CRC library per record from Python (about 0.26 us a record,
  against 0.03 here).

Every kernel trusts its arguments: the caller checked that the ranges lie inside ``a``.
"""

from __future__ import annotations

import platform

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import config
from numba.extending import intrinsic

__all__ = ["ENABLED", "HARDWARE_CRC", "check_data_crcs", "check_headers", "count_varints",
           "decode_varints", "walk_examples"]

ENABLED = not config.DISABLE_JIT  # NUMBA_DISABLE_JIT=1 would run these loops in Python

_U7F = np.uint64(0x7F)
_U63 = np.uint64(63)
_U7 = np.uint64(7)
_U0 = np.uint64(0)
_U1 = np.uint64(1)


@numba.njit(cache=True, nogil=True)
def count_varints(a, ps, pe, counts):
    """``counts[i]`` = varints in ``a[ps[i]:pe[i]]``; False if one runs past its payload.

    A value ends at a byte < 0x80. The indices are unsigned, so numba leaves out its
    negative-index wraparound and LLVM vectorizes the loop (0.3 against 1.2 ns a value).
    """
    for i in range(len(ps)):
        p, e = np.uint64(ps[i]), np.uint64(pe[i])
        if e > p and a[e - _U1] >= 0x80:
            return False
        more = _U0
        q = p
        while q < e:
            more += np.uint64(a[q] >> 7)
            q += _U1
        counts[i] = np.int64(e - p - more)
    return True


@numba.njit(cache=True, nogil=True)
def decode_varints(a, ps, pe, out):
    """Decodes packed varint payloads ``a[ps[i]:pe[i]]`` into ``out`` (int64), in order.

    ``out`` holds exactly the values :func:`count_varints` counted (it returned True), so
    every payload ends with a value's last byte. Returns False where a value takes more
    than 10 bytes. Values wrap modulo 2**64 like protobuf's (a 10th byte gives its lowest
    bit).

    Branch-free over the bytes: each byte is or-ed into the value, the value is stored at
    ``out[k]`` and ``k`` moves on only after a value's last byte. A branch on each value's
    length would mispredict on a mix of 2- and 3-byte token ids; here the loop carries
    only ``k``, the value and its shift. Unsigned indices again (no wraparound code):
    2.2 ns a token id, against 3.8 with signed ones and 4.3 with a branch per value.
    """
    k = _U0
    widest = _U0
    for i in range(len(ps)):
        v = _U0
        shift = _U0
        q, e = np.uint64(ps[i]), np.uint64(pe[i])
        while q < e:
            b = np.uint64(a[q])
            v |= (b & _U7F) << (shift & _U63)
            out[k] = np.int64(v)
            more = b >> _U7  # 1 while the value goes on
            k += _U1 - more
            keep = _U0 - more  # all ones while the value goes on, else 0
            v &= keep
            shift = (shift + _U7) & keep
            widest = max(widest, shift)
            q += _U1
    return widest <= 63



# -- the Features map of tf.Examples ------------------------------------------------------
_MAX_ENTRIES = 1 << 16  # entries per record beyond which the numpy walk falls back too


@numba.njit(cache=True, nogil=True, inline="always")
def _field(a, p, end, tag):
    """``tag len bytes`` at ``p`` inside ``end`` -> (start, stop) of the bytes, or (-1, -1).

    The length varint may take at most 5 bytes, all before ``end`` (as the numpy path's
    ``read_field``)."""
    if p + 1 >= end or a[p] != tag:
        return -1, -1
    q = p + 1
    n = 0
    for k in range(5):
        if q >= end:
            return -1, -1
        b = np.int64(a[q])
        n |= (b & 0x7F) << (7 * k)
        q += 1
        if b < 0x80:
            if q + n > end:
                return -1, -1
            return q, q + n
    return -1, -1


@numba.njit(cache=True, nogil=True)
def walk_examples(a, s, e, keys, key_off, vs, ve):
    """Finds each spec feature's value (a ``Feature`` message) in every record.

    Record ``r`` is the serialized Example ``a[s[r]:e[r]]``; ``keys[key_off[k]:key_off[k +
    1]]`` is spec feature ``k``'s name. ``vs[k, r]``/``ve[k, r]`` get the bounds of its
    ``Feature`` in record ``r``, or -1 where the record lacks it. Every map entry is checked
    as the numpy walk of :class:`records.batch_decode.ExampleDecoder` checks it.

    Returns:
        False where the numpy walk raises ``Fallback`` (a malformed or unusual record: an
        empty one, trailing fields, a duplicate spec key); the caller then takes that walk.
    """
    n_keys = len(key_off) - 1
    vs[:, :] = -1
    ve[:, :] = -1
    for r in range(len(s)):
        fs, fe = _field(a, s[r], e[r], 0x0A)
        if fs < 0 or fe != e[r]:
            return False
        p = fs
        entries = 0
        while p < fe:
            es, ee = _field(a, p, fe, 0x0A)
            if es < 0:
                return False
            ks, ke = _field(a, es, ee, 0x0A)
            if ks < 0:
                return False
            fvs, fve = _field(a, ke, ee, 0x12)
            if fvs < 0 or fve != ee:
                return False
            for k in range(n_keys):
                lo, hi = key_off[k], key_off[k + 1]
                if hi - lo != ke - ks:
                    continue
                same = True
                for j in range(hi - lo):
                    if a[ks + j] != keys[lo + j]:
                        same = False
                        break
                if same:
                    if vs[k, r] >= 0:
                        return False  # duplicate key: protobuf keeps the last one
                    vs[k, r] = fvs
                    ve[k, r] = fve
                    break
            p = ee
            entries += 1
            if entries > _MAX_ENTRIES:
                return False
    return True

# -- frame checks with the crc32 instruction ---------------------------------------------
# numba compiles for this host's CPU unless NUMBA_CPU_NAME says otherwise (a portable cache);
# then the instruction may be missing, and scan.py keeps its library path.
HARDWARE_CRC = (platform.machine().lower() in ("x86_64", "amd64") and config.CPU_NAME is None
                and "+sse4.2" in llvm.get_host_cpu_features().flatten().split(","))
_MASK_DELTA = np.uint64(0xA282EAD8)
_ALL32 = np.uint32(0xFFFFFFFF)
_U8 = np.uint64(8)


@intrinsic
def _crc_step64(typingctx, crc, data):
    """SSE 4.2 ``crc32`` of eight bytes (a little-endian uint64) into a CRC32C state."""
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = builder.module.declare_intrinsic("llvm.x86.sse42.crc32.64.64",
                                              fnty=ir.FunctionType(i64, [i64, i64]))
        return builder.call(fn, args)
    return types.uint64(types.uint64, types.uint64), codegen


@intrinsic
def _crc_step8(typingctx, crc, data):
    """SSE 4.2 ``crc32`` of one byte into a CRC32C state."""
    def codegen(context, builder, signature, args):
        i32, i8 = ir.IntType(32), ir.IntType(8)
        fn = builder.module.declare_intrinsic("llvm.x86.sse42.crc32.32.8",
                                              fnty=ir.FunctionType(i32, [i32, i8]))
        return builder.call(fn, args)
    return types.uint32(types.uint32, types.uint8), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _load_u64(a, p):
    """The little-endian uint64 at ``a[p]`` (LLVM folds the bytes into one load)."""
    v = _U0
    for j in range(8):
        v |= np.uint64(a[p + np.uint64(j)]) << np.uint64(8 * j)
    return v


@numba.njit(cache=True, nogil=True, inline="always")
def _load_u32(a, p):
    v = _U0
    for j in range(4):
        v |= np.uint64(a[p + np.uint64(j)]) << np.uint64(8 * j)
    return v


@numba.njit(cache=True, nogil=True, inline="always")
def _masked_crc(a, p, e):
    """TFRecord's masked CRC32C of ``a[p:e]``: eight bytes per instruction, then bytes."""
    c = np.uint64(0xFFFFFFFF)
    while p + _U8 <= e:
        c = _crc_step64(c, _load_u64(a, p))
        p += _U8
    c32 = np.uint32(c)
    while p < e:
        c32 = _crc_step8(c32, a[p])
        p += _U1
    c = np.uint64(c32 ^ _ALL32)  # numba widens uint32 arithmetic: mask by hand from here
    return (((c >> np.uint64(15)) | (c << np.uint64(17))) + _MASK_DELTA) & _ALL32


@numba.njit(cache=True, nogil=True)
def check_headers(a, starts, raw_len, ok):
    """Frame headers at ``starts``: ``raw_len`` gets each length field (uint64) and ``ok``
    whether its stored masked CRC matches. Returns False (nothing checked) if a header
    leaves ``a``."""
    n_a = len(a)
    for i in range(len(starts)):
        if starts[i] < 0 or starts[i] + 12 > n_a:
            return False
    for i in range(len(starts)):
        p = np.uint64(starts[i])
        raw_len[i] = _load_u64(a, p)
        ok[i] = _masked_crc(a, p, p + _U8) == _load_u32(a, p + _U8)
    return True


@numba.njit(cache=True, nogil=True)
def check_data_crcs(a, data_start, data_end, ok):
    """``ok[i]``: the masked CRC of ``a[data_start[i]:data_end[i]]`` matches the uint32
    stored right after it. Returns False (nothing checked) if a range leaves ``a``."""
    n_a = len(a)
    for i in range(len(data_start)):
        if data_start[i] < 0 or data_end[i] < data_start[i] or data_end[i] + 4 > n_a:
            return False
    for i in range(len(data_start)):
        p, e = np.uint64(data_start[i]), np.uint64(data_end[i])
        ok[i] = _masked_crc(a, p, e) == _load_u32(a, e)
    return True
