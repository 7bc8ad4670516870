"""Whole-stream GZIP/ZLIB compression of TFRecord files, as TensorFlow does it.

TensorFlow compresses the entire framed stream (not record by record), with zlib's
default level; ``GZIP`` is the gzip wrapper (window bits 15 + 16), ``ZLIB`` the
zlib wrapper (window bits 15). We use zlib directly rather than :mod:`gzip` so the
gzip header carries no timestamp: the same records give the same bytes.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

from records.crc import masked_crc32c

__all__ = ["COMPRESSIONS", "normalize_compression", "detect_compression", "Compressor",
           "DecompressingReader", "StreamError", "extension"]

COMPRESSIONS = (None, "GZIP", "ZLIB")
_WBITS = {"GZIP": 31, "ZLIB": 15}
_EXTENSIONS = {None: "", "GZIP": ".gz", "ZLIB": ".zz"}


class StreamError(Exception):
    """The compressed stream is damaged or cut short (converted to CorruptRecordError)."""


def normalize_compression(compression: str | None, *, allow_auto: bool = False) -> str | None:
    """Maps ``None``/``""``/``"NONE"``/``"gzip"``/``"zlib"``... to ``None``/``"GZIP"``/``"ZLIB"``.

    Raises:
        ValueError: anything else (``"auto"`` only when ``allow_auto``).
    """
    if compression is None:
        return None
    if not isinstance(compression, str):
        raise TypeError(f"compression must be a str or None, got {type(compression).__name__}")
    c = compression.upper()
    if c in ("", "NONE"):
        return None
    if c in ("GZIP", "ZLIB") or (allow_auto and c == "AUTO"):
        return c if c != "AUTO" else "auto"
    raise ValueError(f"compression must be one of None, 'GZIP', 'ZLIB'"
                     f"{', auto' if allow_auto else ''}; got {compression!r}")


def extension(compression: str | None) -> str:
    """File suffix for a compression: ``""``, ``".gz"`` or ``".zz"``."""
    return _EXTENSIONS[normalize_compression(compression)]


def detect_compression(head: bytes) -> str | None:
    """Guesses the compression from a file's first bytes (16 are enough).

    A raw TFRecord can start with bytes that look like a gzip magic or a zlib
    header (a 376-byte first record starts ``78 01``), so a valid TFRecord length
    header wins; only then the gzip magic ``1f 8b`` and a zlib header (``0x78``,
    ``(CMF*256 + FLG) % 31 == 0``) are considered.
    """
    if len(head) >= 12 and int.from_bytes(head[8:12], "little") == masked_crc32c(head[:8]):
        return None
    if head[:2] == b"\x1f\x8b":
        return "GZIP"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        return "ZLIB"
    return None


class Compressor:
    """Incremental compressor; ``None`` compression passes bytes through."""

    def __init__(self, compression: str | None) -> None:
        self.compression = normalize_compression(compression)
        self._z = (zlib.compressobj(6, zlib.DEFLATED, _WBITS[self.compression])
                   if self.compression else None)

    def compress(self, data: bytes) -> bytes:
        return self._z.compress(data) if self._z else data

    def flush(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH) if self._z else b""


class DecompressingReader:
    """Reads the uncompressed stream of a file in chunks.

    Args:
        raw: binary file object positioned at the start of the file.
        compression: ``None``, ``"GZIP"`` or ``"ZLIB"``.
        chunk_size: compressed bytes read per call.

    ``read_chunk()`` returns the next uncompressed bytes, ``b""`` at the end; it
    raises :class:`StreamError` for a damaged or truncated compressed stream.
    Concatenated gzip members are read one after another, like ``gzip`` does.
    """

    def __init__(self, raw: BinaryIO, compression: str | None, chunk_size: int = 1 << 20):
        self._raw = raw
        self._compression = compression
        self._chunk = chunk_size
        self._z = self._new()
        self._done = False

    def _new(self):
        return zlib.decompressobj(_WBITS[self._compression]) if self._compression else None

    def read_chunk(self) -> bytes:
        if self._z is None:
            return self._raw.read(self._chunk)
        while not self._done:
            data = self._raw.read(self._chunk)
            try:
                if not data:
                    out = self._z.flush()
                    if not self._z.eof:
                        raise StreamError("compressed stream ends early (truncated file)")
                    self._done = True
                    return out
                out = self._z.decompress(data)
                while self._z.eof and self._z.unused_data:  # next gzip member
                    rest = self._z.unused_data
                    self._z = self._new()
                    out += self._z.decompress(rest)
            except zlib.error as err:
                raise StreamError(f"damaged {self._compression} stream: {err}") from err
            if out:
                return out
        return b""

    def skip(self, n: int) -> bytes:
        """Discards ``n`` uncompressed bytes; returns any bytes read past them (a leftover)."""
        if self._z is None and hasattr(self._raw, "seek"):
            self._raw.seek(n, 1)
            return b""
        while n > 0:
            chunk = self.read_chunk()
            if not chunk:
                raise StreamError(f"stream ends {n} bytes before the start offset")
            if len(chunk) > n:
                return chunk[n:]
            n -= len(chunk)
        return b""
