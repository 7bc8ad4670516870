"""A shard written from batches of serialized records: framed by compiled loops, one write a batch.

:func:`records.writer.write_shard` takes one ``bytes`` object per record and frames each in
Python (two CRC calls, struct packs, a join and bookkeeping: ~2.6 µs a record on the
2-core machine, more than serializing the Example took). An engine that holds its records
as Arrow binary batches passes each batch's ``(offsets, data)`` here instead: every frame
of a batch is written by one compiled loop (:func:`records.wire_kernels.frame_records`,
CRC32C sliced by 8, ~1 ns a byte) into one buffer, and the file gets one write per batch.
The file, its ``.idx`` and the :class:`~records.manifest.ShardInfo` are byte for byte
what :func:`~records.writer.write_shard` gives for the same records. Without numba the
frames come from :func:`records.framing.frame_record`, record by record: slower, the same.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

import numpy as np

from records.columnar_wire import COMPILED
from records.compression import Compressor
from records.framing import frame_record
from records.index import index_path, write_index
from records.manifest import ShardInfo
from records.uri import parent_and_name, resolve
from records.writer import _shard_info

if COMPILED:
    from records import wire_kernels as _kernels

__all__ = ["frame_batch", "write_shard_batches"]

_OVERHEAD = 16  # bytes a frame adds: length, its CRC, the data's CRC


@functools.cache
def _tables() -> np.ndarray:
    return _kernels.crc32c_tables()


def frame_batch(offsets, data, *, compiled: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """TFRecord frames of the records ``data[offsets[i]:offsets[i + 1]]``, back to back.

    Args:
        offsets: ``records + 1`` non-decreasing integers into ``data`` (need not start at 0).
        data: the records' bytes (a uint8 array or any buffer).
        compiled: True for the numba loop, False for ``frame_record`` per record; None: numba
            if installed.

    Returns:
        ``(frame_offsets, framed)``: frame ``i`` is ``framed[frame_offsets[i]:frame_offsets[i
        + 1]]`` (int64, from 0), each exactly :func:`records.framing.frame_record`'s bytes.

    Raises:
        ValueError: offsets that decrease or point outside ``data``.
        RuntimeError: ``compiled=True`` where numba is not installed.
    """
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    data = np.zeros(0, np.uint8) if data is None else data.view(np.uint8) \
        if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    if len(offsets) == 0 or offsets[0] < 0 or offsets[-1] > len(data) or (np.diff(offsets) < 0).any():
        raise ValueError(f"record offsets must rise from >= 0 to <= {len(data)} bytes")
    lengths = np.diff(offsets)
    frame_offsets = np.zeros(len(offsets), dtype=np.int64)
    np.cumsum(lengths + _OVERHEAD, out=frame_offsets[1:])
    if compiled is None:
        compiled = COMPILED
    elif compiled and not COMPILED:
        raise RuntimeError("compiled=True, but numba is not installed")
    if compiled:
        framed = np.empty(int(frame_offsets[-1]), dtype=np.uint8)
        _kernels.frame_records(_tables(), data, offsets, framed)
    else:
        raw = data.tobytes()
        framed = np.frombuffer(b"".join(frame_record(raw[s:e]) for s, e in zip(
            offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)), np.uint8)
    return frame_offsets, framed


def write_shard_batches(*, path: str, batches: Iterable[tuple[np.ndarray, object]],
                        compression: str | None = None, root: str | None = None) -> ShardInfo:
    """Writes one shard file and its ``<path>.idx`` from batches of records, in order.

    Args:
        path: the shard's path or URL.
        batches: ``(offsets, data)`` per batch, as :func:`frame_batch` takes them (the
            offsets and data buffer of an Arrow binary array).
        compression: ``None``, ``"GZIP"`` or ``"ZLIB"`` (the whole stream, like TF).
        root: folder the returned paths are made relative to (as ``write_shard``).

    Returns:
        The :class:`ShardInfo`, equal to ``write_shard``'s for the same records.
    """
    fs, p = resolve(path)
    fs.makedirs(parent_and_name(p)[0], exist_ok=True)
    compressor = Compressor(compression)
    digest = hashlib.sha256()
    starts, lengths, position, written = [], [], 0, 0
    with fs.open(p, "wb") as out:
        def emit(chunk) -> None:
            nonlocal written
            if len(chunk):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)

        for offsets, data in batches:
            frame_offsets, framed = frame_batch(offsets, data)
            starts.append(frame_offsets[:-1] + position)
            lengths.append(np.diff(frame_offsets))
            position += int(frame_offsets[-1])
            emit(compressor.compress(framed.data))  # without compression: the frames as is
        emit(compressor.flush())
    starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    write_index(index_path(path), zip(starts.tolist(), lengths.tolist(), strict=True))
    return _shard_info(path, root, len(starts), written, digest.hexdigest())
