"""TFRecord files: framing, a buffered writer, and fast chunked reading.

Byte layout, identical to TensorFlow's ``RecordWriter``/``RecordReader``::

    uint64 length          little endian
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

``GZIP``/``ZLIB`` compress the whole stream (see :mod:`records.compression`).
Offsets reported anywhere in records/ (errors, ``.idx`` files) are positions in
the UNCOMPRESSED stream, as in DALI's and the ``tfrecord`` package's indexes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from records import errors
from records.compression import (
    Compressor,
    DecompressingReader,
    StreamError,
    detect_compression,
    normalize_compression,
)
from records.crc import masked_crc32c
from records.errors import CorruptionReport, CorruptRecordError, check_on_corrupt
from records.scan import HEADER, OVERHEAD, check_frames, scan_frames
from records.uri import parent_and_name, resolve

__all__ = [
    "CorruptRecordError",
    "CorruptionReport",
    "RecordBlock",
    "RecordFileWriter",
    "frame_record",
    "iter_record_blocks",
    "iter_records",
    "open_compression",
    "deliver_checked",
]

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_CHUNK = 4 << 20  # big reads: the per-read cost is paid once per ~10k records


def frame_record(data: bytes) -> bytes:
    """Frames one record (length, length CRC, data, data CRC) exactly as TensorFlow."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"records must be bytes, got {type(data).__name__}")
    header = _U64.pack(len(data))
    return b"".join((header, _U32.pack(masked_crc32c(header)), data,
                     _U32.pack(masked_crc32c(data))))


class RecordFileWriter:
    """Writes one TFRecord file, buffered, optionally GZIP/ZLIB compressed.

    Args:
        path: local path or fsspec URL; parent folders are created.
        compression: ``None``, ``"GZIP"`` or ``"ZLIB"`` (whole stream, like TF).

    Attributes:
        records: number of records written.
        offsets: ``(offset, length)`` of every framed record in the uncompressed
            stream (what a ``.idx`` line holds).
        bytes_written: bytes in the file; exact once :meth:`close` returned.
        sha256: hex digest of the file bytes, available after :meth:`close`.
    """

    def __init__(self, *, path: str, compression: str | None = None,
                 buffer_size: int = _CHUNK) -> None:
        self.path = path
        self.compression = normalize_compression(compression)
        fs, p = resolve(path)
        fs.makedirs(parent_and_name(p)[0], exist_ok=True)
        self._file = fs.open(p, "wb")
        self._compressor = Compressor(self.compression)
        self._hash = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._buffer_size = buffer_size
        self._stream_pos = 0
        self._closed = False
        self.records = 0
        self.offsets: list[tuple[int, int]] = []
        self.bytes_written = 0
        self.sha256: str | None = None

    def write(self, data: bytes) -> None:
        """Appends one record.

        Raises:
            TypeError: ``data`` is not bytes-like.
            ValueError: the writer is closed.
        """
        if self._closed:
            raise ValueError(f"{self.path}: write() on a closed RecordFileWriter")
        frame = frame_record(data)
        self.offsets.append((self._stream_pos, len(frame)))
        self._stream_pos += len(frame)
        self.records += 1
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        if self._pending_bytes >= self._buffer_size:
            self._flush()

    @property
    def uncompressed_bytes(self) -> int:
        """Size of the framed (uncompressed) stream so far."""
        return self._stream_pos

    def _emit(self, data: bytes) -> None:
        if data:
            self._file.write(data)
            self._hash.update(data)
            self.bytes_written += len(data)

    def _flush(self) -> None:
        self._emit(self._compressor.compress(b"".join(self._pending)))
        self._pending.clear()
        self._pending_bytes = 0

    def close(self) -> None:
        """Flushes and closes the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._flush()
            self._emit(self._compressor.flush())
        finally:
            self._file.close()
        self.sha256 = self._hash.hexdigest()

    def __enter__(self) -> RecordFileWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class RecordBlock:
    """Consecutive good records sharing one buffer (the reader's unit of work).

    Attributes:
        buf: the bytes holding the records.
        starts: int64 offsets of each record's data in ``buf``.
        lengths: int64 data lengths.
        indices: int64 record numbers in the file (gaps where records were skipped).
        offsets: int64 frame offsets in the uncompressed stream.
    """

    buf: bytes
    starts: np.ndarray
    lengths: np.ndarray
    indices: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def records(self) -> list[bytes]:
        """The records as separate ``bytes`` objects."""
        ends = self.starts + self.lengths
        return list(map(self.buf.__getitem__, map(slice, self.starts.tolist(), ends.tolist())))

    def take(self, keep: np.ndarray) -> RecordBlock:
        """The sub-block of rows selected by ``keep`` (bool mask or indices)."""
        return RecordBlock(self.buf, self.starts[keep], self.lengths[keep],
                           self.indices[keep], self.offsets[keep])


def open_compression(raw, compression: str | None) -> str | None:
    """Resolves ``"auto"`` by peeking at a seekable file's first bytes."""
    compression = normalize_compression(compression, allow_auto=True)
    if compression == "auto":
        head = raw.read(16)
        raw.seek(0)
        compression = detect_compression(head)
    return compression


def _header_error(path, offset, index, reason, code):
    if offset == 0:  # the very first frame of a file: most likely not a TFRecord at all
        return CorruptRecordError(path, 0, index, "not a TFRecord file (the first record "
                                  f"header is invalid: {reason}; compressed? pass "
                                  "compression='GZIP'/'ZLIB' or 'auto')", errors.NOT_TFRECORD)
    return CorruptRecordError(path, offset, index, reason, code)


def iter_record_blocks(path: str, *, compression: str | None = "auto", verify_crc: bool = True,
                       on_corrupt: str = "raise",
                       report: Callable[[CorruptRecordError], None] | None = None,
                       start_offset: int = 0, count: int | None = None, first_index: int = 0,
                       chunk_size: int = _CHUNK) -> Iterator[RecordBlock]:
    """Reads a TFRecord file as :class:`RecordBlock` s of good records.

    Arguments are those of :func:`iter_records`; ``chunk_size`` is the read size.
    """
    check_on_corrupt(on_corrupt)
    fs, p = resolve(path)
    with fs.open(p, "rb") as raw:
        stream = DecompressingReader(raw, open_compression(raw, compression), chunk_size)
        try:
            leftover = stream.skip(start_offset) if start_offset else b""
        except StreamError as err:
            handle = CorruptRecordError(path, start_offset, first_index, str(err),
                                        errors.BAD_COMPRESSION)
            errors.handle_corruption(handle, on_corrupt, report)
            return
        yield from _blocks(path, stream, leftover, verify_crc, on_corrupt, report,
                           start_offset, count, first_index)


def _blocks(path, stream, leftover, verify_crc, on_corrupt, report, base, remaining, index):
    chunks = [leftover] if leftover else []
    have, want = len(leftover), 1
    eof, stream_error = False, None
    while remaining is None or remaining > 0:
        while not eof and have < want:
            try:
                chunk = stream.read_chunk()
            except StreamError as err:
                chunk, stream_error = b"", err
            if not chunk:
                eof = True
            else:
                chunks.append(chunk)
                have += len(chunk)
        buf = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        starts, pos = scan_frames(buf, 0, remaining)
        if starts:
            st = np.asarray(starts, dtype=np.int64)
            check = check_frames(buf, st, verify_crc=verify_crc)
            ended = yield from deliver_checked(path, buf, st, check, base, index, on_corrupt,
                                               report)
            if ended:
                return
            index += len(starts)
            if remaining is not None:
                remaining -= len(starts)
        rest = buf[pos:]
        base += pos
        if eof:
            if stream_error is not None:
                errors.handle_corruption(CorruptRecordError(
                    path, base, index, str(stream_error), errors.BAD_COMPRESSION),
                    on_corrupt, report)
            elif rest and (remaining is None or remaining > 0):
                errors.handle_corruption(_tail_error(path, rest, base, index, verify_crc),
                                         on_corrupt, report)
            return
        want = len(rest) + 1
        if len(rest) >= HEADER:
            (n,) = _U64.unpack_from(rest, 0)
            if verify_crc and _U32.unpack_from(rest, 8)[0] != masked_crc32c(rest[:8]):
                errors.handle_corruption(_header_error(
                    path, base, index, "length CRC mismatch (damaged length field)",
                    errors.BAD_LENGTH_CRC), on_corrupt, report)
                return
            want = max(want, OVERHEAD + n)
        chunks, have = ([rest] if rest else []), len(rest)


def deliver_checked(path: str, buf: bytes, st: np.ndarray, check, base: int, index: int,
                    on_corrupt: str, report, *, header_skippable: bool = False):
    """Yields the good records of checked frames as RecordBlocks, handling corruption.

    Frames ``st`` (offsets in ``buf``; ``base + st`` in the stream) were checked by
    :func:`records.scan.check_frames`; record numbers start at ``index``. Good
    records before a bad one are delivered before the error is raised or reported.

    Returns (as the generator's value):
        True when a damaged header ended the file, else False. With
        ``header_skippable`` (an index knows where the next frame starts) a damaged
        header loses only its own record.
    """
    usable = check.usable
    ok = np.ones(usable, dtype=bool)
    ok[check.bad_data] = False
    bad = [(j, CorruptRecordError(path, base + int(st[j]), index + j, "data CRC mismatch "
                                  "(damaged record payload)", errors.BAD_DATA_CRC, True))
           for j in check.bad_data.tolist()]
    if check.bad_header is not None:
        h = check.bad_header
        err = _header_error(path, base + int(st[h]), index + h, check.header_reason,
                            check.header_code)
        err.skippable = header_skippable
        bad.append((h, err))
    emitted = 0
    for j, err in bad:
        if j > emitted:
            yield _block(buf, st, check.lengths, index, base, emitted, j, ok)
        emitted = j + 1
        errors.handle_corruption(err, on_corrupt, report)
    if check.bad_header is not None and not header_skippable:
        return True
    if check.bad_header is not None:  # skip the damaged frame, re-check the rest
        h = check.bad_header + 1
        if h < len(st):
            rest = check_frames(buf, st[h:], verify_crc=check.verified,
                                expected_lengths=check.expected[h:] if check.expected
                                is not None else None)
            return (yield from deliver_checked(path, buf, st[h:], rest, base, index + h,
                                               on_corrupt, report,
                                               header_skippable=header_skippable))
        return False
    if usable > emitted:
        yield _block(buf, st, check.lengths, index, base, emitted, usable, ok)
    return False


def _block(buf, st, lengths, index, base, lo, hi, ok):
    sel = np.flatnonzero(ok[lo:hi]) + lo
    return RecordBlock(buf, st[sel] + HEADER, lengths[sel], sel + index, st[sel] + base)


def _tail_error(path, rest, base, index, verify_crc):
    if len(rest) >= HEADER and verify_crc and \
            _U32.unpack_from(rest, 8)[0] != masked_crc32c(rest[:8]):
        return _header_error(path, base, index, "length CRC mismatch (damaged length field)",
                             errors.BAD_LENGTH_CRC)
    if len(rest) < HEADER:
        what = f"file ends {len(rest)} bytes into a 12-byte record header"
        if base == 0:
            return _header_error(path, base, index, what, errors.TRUNCATED)
    else:
        (n,) = _U64.unpack_from(rest, 0)
        what = f"file ends after {len(rest)} of the record's {OVERHEAD + n} bytes"
    return CorruptRecordError(path, base, index, f"truncated record ({what})", errors.TRUNCATED)


def iter_records(path: str, *, compression: str | None = "auto", verify_crc: bool = True,
                 on_corrupt: str = "raise",
                 report: Callable[[CorruptRecordError], None] | None = None,
                 start_offset: int = 0, count: int | None = None,
                 first_index: int = 0) -> Iterator[bytes]:
    """Yields the records of a TFRecord file, in order.

    Args:
        path: local path or fsspec URL.
        compression: ``"auto"`` (sniff gzip/zlib headers; a valid TFRecord header
            wins), ``None``, ``"GZIP"`` or ``"ZLIB"``.
        verify_crc: check the length and data CRCs of every record.
        on_corrupt: ``"raise"`` raises :class:`CorruptRecordError` at the first
            problem (after yielding the good records before it). ``"skip"`` drops a
            record whose data CRC fails and keeps going; a damaged length field, a
            truncated record or a damaged compressed stream ends the file (framing
            is lost). Every skip is logged and passed to ``report``.
        report: callable receiving each skipped :class:`CorruptRecordError`, e.g.
            a :class:`CorruptionReport`.
        start_offset: uncompressed stream offset of the first record to read (a
            ``.idx`` offset); compressed streams are decompressed and discarded up
            to it.
        count: read at most this many records.
        first_index: record number of the record at ``start_offset``, used in
            error messages.

    Raises:
        CorruptRecordError: in ``"raise"`` mode; names file, offset, record number.
    """
    for block in iter_record_blocks(path, compression=compression, verify_crc=verify_crc,
                                    on_corrupt=on_corrupt, report=report,
                                    start_offset=start_offset, count=count,
                                    first_index=first_index):
        yield from block.records()
