"""The loops of :mod:`records.columnar_wire` that numpy cannot express without copies: numba.

Imported only by :mod:`records.columnar_wire`, and only where numba is installed (the Spark
and Beam workers; see setup.cfg's extras); elsewhere that module takes its numpy path,
which writes the same bytes. Every kernel walks rows in order and trusts its arguments:
the caller checked every offset against its array and sized ``buf`` from the same lengths,
so no kernel reads or writes outside them (numba does no bounds checks).

Writers take ``cursor`` (int64 per row: where the row's next byte goes), write one map
entry of ``Features`` per present row and move ``cursor`` past it; calling them feature by
feature, in key order, lays out each row's Example (see :mod:`records.columnar_wire`).

``cache=True`` keeps the machine code in ``__pycache__`` beside this file, so a Python
worker compiles the kernels once (a few seconds) and later workers load them; where that
folder is read-only (a ``--py-files`` zip) each worker compiles them.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["crc32c_tables", "frame_records", "packed_varint_sizes", "write_bytes_entries",
           "write_example_heads", "write_float_entries", "write_int64_entries"]

_U7F = np.uint64(0x7F)
_U80 = np.uint64(0x80)
_S7 = np.uint64(7)
_ONE = np.uint64(1)
_LIMITS = tuple(np.uint64(1 << (7 * k)) for k in range(1, 10))  # a varint's k+1-th byte from here
_LEN = np.uint8(0x0A)  # field 1, wire type 2 (length-delimited): Example.features,
#                        Features.feature's entry, an entry's key, a list's packed values


@numba.njit(cache=True, nogil=True, inline="always")
def _varint_size(v):
    n = 1
    while v >= _U80:
        v >>= _S7
        n += 1
    return n


@numba.njit(cache=True, nogil=True, inline="always")
def _put_varint(buf, p, v):
    """Writes uint64 ``v`` as a varint at ``buf[p]``; returns the position after it."""
    while v >= _U80:
        buf[p] = np.uint8((v & _U7F) | _U80)
        v >>= _S7
        p += 1
    buf[p] = np.uint8(v)
    return p + 1


@numba.njit(cache=True, nogil=True, inline="always")
def _put_varint_unsigned(buf, q, v):
    """:func:`_put_varint` at a uint64 position (see write_int64_entries)."""
    while v >= _U80:
        buf[q] = np.uint8((v & _U7F) | _U80)
        v >>= _S7
        q += _ONE
    buf[q] = np.uint8(v)
    return q + _ONE


@numba.njit(cache=True, nogil=True)
def packed_varint_sizes(values, offsets, out):
    """``out[i]`` = bytes of the varints of ``values[offsets[i]:offsets[i + 1]]`` (uint64).

    Branch-free for values under 2**14 (token ids, lengths, categories: one or two bytes),
    which LLVM vectorizes: 0.56 ns a value on posts against 1.25 with a branch on each
    value's size. The index is unsigned, so numba leaves out its negative-index wraparound
    (0.85 against 1.2 ns a value on a busy machine). A row holding a larger value is
    counted again in full.
    """
    for i in range(len(out)):
        start, end = offsets[i], offsets[i + 1]
        total = end - start
        seen = np.uint64(0)
        j, stop = np.uint64(start), np.uint64(end)
        while j < stop:
            v = values[j]
            seen |= v
            total += np.int64(v >= _LIMITS[0]) + np.int64(v >= _LIMITS[1])
            j += _ONE
        if seen >= _LIMITS[2]:
            total = end - start
            for j in range(start, end):
                v = values[j]
                for k in range(9):
                    total += np.int64(v >= _LIMITS[k])
        out[i] = total


@numba.njit(cache=True, nogil=True)
def write_example_heads(buf, cursor, features_len):
    """``Example.features``'s tag and length at each row's start (``cursor``)."""
    for i in range(len(cursor)):
        buf[cursor[i]] = _LEN
        cursor[i] = _put_varint(buf, cursor[i] + 1, np.uint64(features_len[i]))


@numba.njit(cache=True, nogil=True, inline="always")
def _entry_head(buf, p, head, tag, entry_len, feature_len, list_len):
    """A map entry up to its list's fields: the entry's tag and length, ``head`` (the key
    field and the value field's tag), the value's length, the Feature's kind tag and the
    list's length."""
    buf[p] = _LEN
    p = _put_varint(buf, p + 1, np.uint64(entry_len))
    for k in range(len(head)):
        buf[p + k] = head[k]
    p = _put_varint(buf, p + len(head), np.uint64(feature_len))
    buf[p] = tag
    return _put_varint(buf, p + 1, np.uint64(list_len))


@numba.njit(cache=True, nogil=True)
def write_int64_entries(buf, cursor, present, head, entry_len, feature_len, list_len, body_len,
                        values, offsets):
    """``Int64List`` entries: packed varints of ``values`` (uint64 view of the int64s)."""
    for i in range(len(cursor)):
        if not present[i]:
            continue
        p = _entry_head(buf, cursor[i], head, np.uint8(0x1A), entry_len[i], feature_len[i],
                        list_len[i])
        start, end = offsets[i], offsets[i + 1]
        if end > start:  # an empty list has no packed field at all
            buf[p] = _LEN
            p = _put_varint(buf, p + 1, np.uint64(body_len[i]))
            # A branch per value, unlike packed_varint_sizes: here the next store's address
            # depends on the size, and a branch-free size made that a chain (2.4x slower
            # on posts, whose bytes >= 0x80 come in runs the predictor learns). Unsigned
            # indices: numba leaves out its negative-index wraparound (1.8 against 2.7 ns
            # a value on a busy machine).
            q, j, stop = np.uint64(p), np.uint64(start), np.uint64(end)
            while j < stop:
                v = values[j]
                if v < _U80:
                    buf[q] = np.uint8(v)
                    q += _ONE
                else:
                    q = _put_varint_unsigned(buf, q, v)
                j += _ONE
            p = np.int64(q)
        cursor[i] = p


@numba.njit(cache=True, nogil=True)
def write_float_entries(buf, cursor, present, head, entry_len, feature_len, list_len, data,
                        offsets):
    """``FloatList`` entries: packed little-endian float32s (``data``: their bytes)."""
    for i in range(len(cursor)):
        if not present[i]:
            continue
        p = _entry_head(buf, cursor[i], head, np.uint8(0x12), entry_len[i], feature_len[i],
                        list_len[i])
        start, end = 4 * offsets[i], 4 * offsets[i + 1]
        if end > start:
            buf[p] = _LEN
            p = _put_varint(buf, p + 1, np.uint64(end - start))
            buf[p:p + end - start] = data[start:end]
            p += end - start
        cursor[i] = p


@numba.njit(cache=True, nogil=True)
def write_bytes_entries(buf, cursor, present, head, entry_len, feature_len, list_len, data,
                        item_offsets, offsets):
    """``BytesList`` entries: one ``value`` field per item (``data[item_offsets[j]:…[j + 1]]``)."""
    for i in range(len(cursor)):
        if not present[i]:
            continue
        p = _entry_head(buf, cursor[i], head, np.uint8(0x0A), entry_len[i], feature_len[i],
                        list_len[i])
        for j in range(offsets[i], offsets[i + 1]):
            start, end = item_offsets[j], item_offsets[j + 1]
            buf[p] = _LEN
            p = _put_varint(buf, p + 1, np.uint64(end - start))
            buf[p:p + end - start] = data[start:end]
            p += end - start
        cursor[i] = p


def crc32c_tables() -> np.ndarray:
    """CRC32C (Castagnoli, reflected 0x82F63B78) lookup tables for slicing by 8: (8, 256)."""
    tables = np.zeros((8, 256), dtype=np.int64)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        tables[0, byte] = crc
    for k in range(1, 8):
        tables[k] = (tables[k - 1] >> 8) ^ tables[0][tables[k - 1] & 0xFF]
    return tables


@numba.njit(cache=True, nogil=True, inline="always")
def _masked_crc32c(tables, data, start, end):
    """TFRecord's masked CRC32C of ``data[start:end]``, eight bytes a step (slicing by 8)."""
    crc = np.int64(0xFFFFFFFF)
    p = start
    while p + 8 <= end:
        low = crc ^ (np.int64(data[p]) | (np.int64(data[p + 1]) << 8)
                     | (np.int64(data[p + 2]) << 16) | (np.int64(data[p + 3]) << 24))
        crc = (tables[7, low & 0xFF] ^ tables[6, (low >> 8) & 0xFF]
               ^ tables[5, (low >> 16) & 0xFF] ^ tables[4, low >> 24]
               ^ tables[3, data[p + 4]] ^ tables[2, data[p + 5]]
               ^ tables[1, data[p + 6]] ^ tables[0, data[p + 7]])
        p += 8
    while p < end:
        crc = tables[0, (crc ^ data[p]) & 0xFF] ^ (crc >> 8)
        p += 1
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


@numba.njit(cache=True, nogil=True, inline="always")
def _put_u32(out, p, v):
    for k in range(4):
        out[p + k] = np.uint8((v >> (8 * k)) & 0xFF)


@numba.njit(cache=True, nogil=True)
def frame_records(tables, data, offsets, out):
    """TFRecord frames of ``data[offsets[i]:offsets[i + 1]]``, one after another in ``out``.

    A frame: uint64 length, masked CRC32C of those 8 bytes, the data, masked CRC32C of
    the data, all little endian (``records.framing``); ``out`` holds exactly the frames.
    """
    q = 0
    for i in range(len(offsets) - 1):
        start, end = offsets[i], offsets[i + 1]
        n = end - start
        for k in range(8):
            out[q + k] = np.uint8((n >> (8 * k)) & 0xFF)
        _put_u32(out, q + 8, _masked_crc32c(tables, out, q, q + 8))
        out[q + 12:q + 12 + n] = data[start:end]
        _put_u32(out, q + 12 + n, _masked_crc32c(tables, data, start, end))
        q += n + 16
