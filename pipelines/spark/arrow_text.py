"""Arrow string arrays as numpy byte buffers, for batch functions that work on UTF-8 bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["utf8_buffers"]


def utf8_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, data)`` of a (large) string array: row ``i``'s UTF-8 bytes are
    ``data[offsets[i]:offsets[i + 1]]``; ``offsets`` (int64, length n+1) index into the
    whole buffer (a sliced array does not start at 0). Zero-copy for ``data``."""
    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    offset_type = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    offsets = np.frombuffer(texts.buffers()[1], dtype=offset_type)[texts.offset:texts.offset + len(texts) + 1]
    data = texts.buffers()[2]
    return offsets.astype(np.int64), (np.frombuffer(data, dtype=np.uint8) if data is not None
                                      else np.zeros(0, dtype=np.uint8))
