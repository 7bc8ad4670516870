"""Finding and checking TFRecord frames inside an in-memory buffer, vectorized.

A frame is ``uint64 length | uint32 masked_crc(length) | data | uint32
masked_crc(data)``, all little endian. Walking from frame to frame is inherently
sequential (a tight ``struct.unpack_from`` loop); every check after that is done
for a whole block at once: with numba on an x86-64 CPU with SSE 4.2, both CRCs of every
frame in two compiled calls (:mod:`records.read_kernels`); elsewhere length CRCs with a
numpy table CRC and data CRCs through one ``map`` of a hardware CRC library over
memoryview slices (no per-record Python frame, but one library call per record).
"""

from __future__ import annotations

import struct

import numpy as np

from records.crc import bulk_crc32c_fn, mask_array, masked_crc32c_u64
from records.wire import compiled_kernels

__all__ = ["HEADER", "FOOTER", "OVERHEAD", "scan_frames", "gather_u32", "gather_u64",
           "check_frames", "FrameCheck"]

HEADER = 12  # uint64 length + uint32 masked CRC of the length
FOOTER = 4  # uint32 masked CRC of the data
OVERHEAD = HEADER + FOOTER

_U64 = struct.Struct("<Q")
_BULK_CRC = bulk_crc32c_fn()


def scan_frames(buf: bytes, pos: int = 0, limit: int | None = None) -> tuple[list[int], int]:
    """Finds complete frames in ``buf`` starting at ``pos``.

    Lengths are trusted here; :func:`check_frames` verifies them afterwards, and
    the caller discards everything from the first bad header on.

    Args:
        buf: the buffer.
        pos: offset of the first frame.
        limit: stop after this many frames.

    Returns:
        ``(starts, next_pos)``: frame start offsets and the offset just past the
        last complete frame (where an incomplete frame, if any, begins).
    """
    unpack = _U64.unpack_from
    end = len(buf)
    starts: list[int] = []
    append = starts.append
    left = end if limit is None else limit
    while left > 0 and pos + HEADER <= end:
        (n,) = unpack(buf, pos)
        nxt = pos + OVERHEAD + n
        if nxt > end:
            break
        append(pos)
        pos = nxt
        left -= 1
    return starts, pos


def _gather(arr: np.ndarray, pos: np.ndarray, width: int, dtype: str) -> np.ndarray:
    idx = pos[:, None] + np.arange(width, dtype=np.int64)
    return np.ascontiguousarray(arr[idx]).view(dtype).ravel()


def gather_u32(arr: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Little-endian uint32s at byte offsets ``pos`` of a uint8 array."""
    return _gather(arr, pos, 4, "<u4")


def gather_u64(arr: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Little-endian uint64s at byte offsets ``pos`` of a uint8 array."""
    return _gather(arr, pos, 8, "<u8")


class FrameCheck:
    """Result of :func:`check_frames` for ``n`` frames.

    Attributes:
        lengths: int64 data length of each frame (from its header).
        bad_header: index of the first frame whose length field is damaged (or
            disagrees with ``expected_lengths``), or ``None``; frames from there
            on are unusable.
        header_reason / header_code: why, when ``bad_header`` is set.
        bad_data: sorted indices (< ``bad_header``) of frames whose data CRC fails.
    """

    __slots__ = ("lengths", "bad_header", "header_reason", "header_code", "bad_data", "expected",
                 "verified")

    def __init__(self, lengths, bad_header, header_reason, header_code, bad_data,
                 expected=None, verified=True):
        self.expected = expected  # the index's lengths, when checked against one
        self.verified = verified  # CRCs were checked
        self.lengths = lengths
        self.bad_header = bad_header
        self.header_reason = header_reason
        self.header_code = header_code
        self.bad_data = bad_data

    @property
    def usable(self) -> int:
        """Number of leading frames that can be framed (bad data CRCs included)."""
        return len(self.lengths) if self.bad_header is None else self.bad_header


def check_frames(buf: bytes, starts: np.ndarray, *, verify_crc: bool = True,
                 expected_lengths: np.ndarray | None = None) -> FrameCheck:
    """Checks the frames at ``starts`` (all complete inside ``buf``).

    Args:
        buf: the buffer holding the frames.
        starts: int64 frame start offsets.
        verify_crc: check both CRCs of every frame (otherwise only the index).
        expected_lengths: data lengths an index claims; a mismatch is a bad header.

    Returns:
        A :class:`FrameCheck`.
    """
    starts = np.asarray(starts, dtype=np.int64)
    arr = np.frombuffer(buf, dtype=np.uint8)
    kernels = compiled_kernels() if verify_crc and len(starts) else None
    if kernels is not None and not kernels.HARDWARE_CRC:
        kernels = None
    if kernels is not None:
        raw_len = np.empty(len(starts), dtype=np.uint64)
        len_ok = np.empty(len(starts), dtype=np.bool_)
        if not kernels.check_headers(arr, np.ascontiguousarray(starts), raw_len, len_ok):
            kernels = None  # a header outside buf: the numpy path says so as it always did
    if kernels is None:
        raw_len = gather_u64(arr, starts)
    lengths = raw_len.astype(np.int64)
    bad_header, reason, code = None, "", ""
    if expected_lengths is not None:
        wrong = np.flatnonzero(raw_len != np.asarray(expected_lengths, dtype=np.uint64))
        if wrong.size:
            bad_header = int(wrong[0])
            reason = (f"length field says {int(raw_len[bad_header])} bytes but the index says "
                      f"{int(expected_lengths[bad_header])}")
            code = "index_mismatch"
    if verify_crc and len(starts):
        bad = (np.flatnonzero(~len_ok) if kernels is not None else
               np.flatnonzero(gather_u32(arr, starts + 8) != masked_crc32c_u64(raw_len)))
        if bad.size and (bad_header is None or bad[0] <= bad_header):
            bad_header = int(bad[0])
            reason, code = "length CRC mismatch (damaged length field)", "bad_length_crc"
    n_ok = len(starts) if bad_header is None else bad_header
    bad_data = np.empty(0, dtype=np.int64)
    if verify_crc and n_ok:
        bad_data = _bad_data(buf, arr, starts[:n_ok] + HEADER, lengths[:n_ok], kernels)
    expected = None if expected_lengths is None else np.asarray(expected_lengths, np.int64)
    return FrameCheck(lengths, bad_header, reason, code, bad_data, expected, verify_crc)


def _bad_data(buf, arr, data_start, lengths, kernels) -> np.ndarray:
    """Indices of the frames whose data CRC (stored right after the data) fails."""
    data_end = data_start + lengths
    if kernels is not None:
        ok = np.empty(len(data_start), dtype=np.bool_)
        if kernels.check_data_crcs(arr, data_start, data_end, ok):
            return np.flatnonzero(~ok)
    view = memoryview(buf)
    crcs = np.fromiter(
        map(_BULK_CRC, map(view.__getitem__, map(slice, data_start.tolist(), data_end.tolist()))),
        dtype=np.uint32, count=len(data_start))
    return np.flatnonzero(mask_array(crcs) != gather_u32(arr, data_end))
