"""Per-row counts of Han and Latin letters straight from Arrow UTF-8 bytes: one compiled pass.

:func:`pipelines.spark.normalize.normalize_batch` decides a text's language by the
ratio of Han to Latin letters. numpy needed eight passes over every byte of a batch
(lead-byte masks, code-point assembly, a search per row); this loop decodes each
character once. ``cache=True``: see :mod:`pipelines.spark.minhash_kernels`.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["han_and_latin_counts"]


@numba.njit(cache=True, nogil=True)
def han_and_latin_counts(byte_offsets, data, is_han):
    """Per row: characters with ``is_han[code point]`` and ASCII letters ``[A-Za-z]``.

    Args:
        byte_offsets: int64 (n_rows + 1): row ``r``'s bytes are ``data[byte_offsets[r]:byte_offsets[r + 1]]``.
        data: uint8, valid UTF-8 (Arrow strings are).
        is_han: bool, one entry per code point (``0x110000``).

    Returns:
        ``(han, latin)``, int64 arrays of ``n_rows``.
    """
    n_rows = byte_offsets.size - 1
    han = np.zeros(n_rows, dtype=np.int64)
    latin = np.zeros(n_rows, dtype=np.int64)
    for r in range(n_rows):
        i, end = byte_offsets[r], byte_offsets[r + 1]
        h, a = 0, 0
        while i < end:
            lead = np.int64(data[i])
            if lead < 0x80:
                a += np.int64(np.uint64((lead | 0x20) - 0x61) < 26)  # A-Z, a-z and nothing else
                i += 1
            elif lead < 0xE0:  # two bytes: Latin-1 to Arabic, no Han
                i += 2
            elif lead < 0xF0 and i + 3 <= end:
                cp = ((lead & 0x0F) << 12) | ((np.int64(data[i + 1]) & 0x3F) << 6) | (np.int64(data[i + 2]) & 0x3F)
                h += np.int64(is_han[cp])
                i += 3
            elif lead < 0xF8 and i + 4 <= end:
                cp = (((lead & 0x07) << 18) | ((np.int64(data[i + 1]) & 0x3F) << 12)
                      | ((np.int64(data[i + 2]) & 0x3F) << 6) | (np.int64(data[i + 3]) & 0x3F))
                h += np.int64(cp < is_han.size and is_han[cp])
                i += 4
            else:  # not UTF-8 (only a null row's unused bytes can be): stop this row
                break
        han[r], latin[r] = h, a
    return han, latin
