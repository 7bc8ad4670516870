"""``.idx`` files: one ``"<offset> <length>\\n"`` line per record.

``offset`` is where the framed record starts in the UNCOMPRESSED stream and
``length`` is the framed size (data + 16 bytes): byte for byte what
``tfrecord.tools.tfrecord2idx.create_index`` and DALI's ``tfrecord2idx`` write, so
those tools can use our shards and we can use indexes made by them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from records.uri import resolve

__all__ = ["INDEX_SUFFIX", "index_path", "format_index", "write_index", "read_index"]

INDEX_SUFFIX = ".idx"


def index_path(shard_path: str) -> str:
    """The index that belongs to a shard: ``<shard>.idx``."""
    return shard_path + INDEX_SUFFIX


def format_index(offsets: Iterable[tuple[int, int]]) -> bytes:
    """Index file contents for ``(offset, framed_length)`` pairs."""
    return "".join(f"{o} {n}\n" for o, n in offsets).encode("ascii")


def write_index(path: str, offsets: Iterable[tuple[int, int]]) -> None:
    """Writes an index file (local path or fsspec URL)."""
    fs, p = resolve(path)
    with fs.open(p, "wb") as f:
        f.write(format_index(offsets))


def _parse(data: bytes) -> np.ndarray | None:
    """The numbers of an index file, or None when it holds anything but decimal digits and
    whitespace."""
    # np.fromstring's text mode is a C parser, ~10x faster than splitting in Python, but it
    # only warns on junk. The byte check (about 1 ns a byte) refuses junk first, so no warning
    # filter is needed: changing the process's filters would race with other threads.
    a = np.frombuffer(data, dtype=np.uint8)
    digit_or_space = ((a - np.uint8(48)) < 10) | ((a - np.uint8(9)) < 5) | (a == 32)
    if not digit_or_space.all():
        return None
    return np.fromstring(data.decode("ascii"), dtype=np.int64, sep=" ")


def read_index(path: str) -> np.ndarray:
    """Reads an index file.

    Returns:
        int64 array of shape ``(n, 2)``: frame offset and framed length per record.

    Raises:
        ValueError: the file is not a well-formed index.
    """
    fs, p = resolve(path)
    with fs.open(p, "rb") as f:
        data = f.read()
    arr = _parse(data)
    if arr is None or arr.size % 2:
        raise ValueError(f"{path}: malformed index (expected 'offset length' lines)")
    arr = arr.reshape(-1, 2)
    if arr.size and (np.any(arr[:, 1] < 16) or np.any(arr[1:, 0] != arr[:-1].sum(axis=1))
                     or arr[0, 0] != 0):
        raise ValueError(f"{path}: index offsets are not contiguous frames from offset 0")
    return arr
