"""The two loops of near-duplicate detection that numpy cannot express without copying: compiled with numba.

They run inside ``mapInArrow`` on whole partitions (never row-at-a-time Python):

- :func:`window_hashes`: a 64-bit hash of every ``k``-character window of each text,
  straight from the Arrow UTF-8 buffer (numpy needed the texts as Python strings to
  re-encode them as UTF-32, and ``2k`` passes over all characters).
- :func:`sort_distinct_rows`: each row's hashes sorted and without repeats, row by row
  (one global sort of packed (row, hash) keys cost more and dropped 20 hash bits).
- :func:`band_minima_keys`: the ``bands * rows`` MinHash minima of every row, folded into
  one key per band. numpy needed three passes over all of a batch's shingles per hash
  function (120 functions by default), and that was most of the signing time.
- :func:`pair_common_counts`: ``|A ∩ B|`` for many pairs of sorted sets by a merge, in
  place. numpy had to gather both sets of every pair and search one in the other
  (~18 µs per pair of 125-shingle texts; the merge takes well under 1 µs).

``cache=True`` keeps the machine code in ``__pycache__`` next to this file, so a Python
worker compiles each kernel once (~1 s) and later workers load it; where that directory
is read-only (a ``--py-files`` zip on YARN) numba compiles in each worker instead.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["band_minima_keys", "finalize", "pair_common_counts", "sort_distinct_rows", "window_hashes"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_BAND_SEED = np.uint64(0x9E3779B1)


@numba.njit(cache=True, nogil=True)
def finalize(x):
    """splitmix64's finalizer on one uint64: a bijection that mixes all bits."""
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


@numba.njit(cache=True, nogil=True)
def window_hashes(byte_offsets, data, window_offsets, k):
    """64-bit hashes of every ``k``-code-point window of each row of UTF-8 text.

    Args:
        byte_offsets: int64 (n_rows + 1): row ``r``'s bytes are ``data[byte_offsets[r]:byte_offsets[r + 1]]``.
        data: uint8, valid UTF-8 (Arrow strings are).
        window_offsets: int64 (n_rows + 1), the output's CSR offsets: row ``r`` has
            ``max(chars_r - k + 1, 0)`` windows.
        k: window size in code points (>= 1).

    Returns:
        uint64 hashes in row order, repeats kept: per window, ``h = h * φ64 + (cp + 1)``
        over its code points from ``h = 0``, then the splitmix64 finalizer.
    """
    hashes = np.empty(window_offsets[-1], dtype=np.uint64)
    longest = np.max(np.diff(byte_offsets)) if byte_offsets.size > 1 else 0
    points = np.empty(longest, dtype=np.uint64)  # one row's code points (+ 1), <= its bytes
    for r in range(byte_offsets.size - 1):
        n, i, end = 0, byte_offsets[r], byte_offsets[r + 1]
        while i < end:
            lead = np.uint64(data[i])
            if lead < 0x80:
                cp, width = lead, 1
            elif lead < 0xE0:
                cp, width = lead & np.uint64(0x1F), 2
            elif lead < 0xF0:
                cp, width = lead & np.uint64(0x0F), 3
            else:
                cp, width = lead & np.uint64(0x07), 4
            for c in range(1, width):
                cp = (cp << np.uint64(6)) | (np.uint64(data[i + c]) & np.uint64(0x3F))
            i += width
            points[n] = cp + np.uint64(1)
            n += 1
        out = window_offsets[r]
        for start in range(n - k + 1):
            h = np.uint64(0)
            for c in range(start, start + k):
                h = h * _GOLDEN + points[c]
            hashes[out] = finalize(h)
            out += 1
    return hashes


@numba.njit(cache=True, nogil=True)
def sort_distinct_rows(offsets, hashes):
    """Sort each CSR row of ``hashes`` and drop its repeats.

    Returns:
        ``(offsets, hashes)`` of the distinct sorted rows (a new CSR; the input is sorted
        in place).
    """
    n_rows = offsets.size - 1
    out_offsets = np.zeros(n_rows + 1, dtype=np.int64)
    out = np.empty(hashes.size, dtype=np.uint64)
    n = 0
    for r in range(n_rows):
        row = hashes[offsets[r]:offsets[r + 1]]
        row.sort()
        for i in range(row.size):
            if i == 0 or row[i] != row[i - 1]:
                out[n] = row[i]
                n += 1
        out_offsets[r + 1] = n
    return out_offsets, out[:n]


@numba.njit(cache=True, nogil=True)
def band_minima_keys(lanes, offsets, a, b, bands, rows):
    """One key per band for every row of a CSR of 32-bit shingle hashes.

    Args:
        lanes: uint32 shingle hashes; row ``r`` owns ``lanes[offsets[r]:offsets[r + 1]]``
            (repeats allowed: they do not change a minimum). Every row must be non-empty.
        offsets: int64, ``n_rows + 1`` entries.
        a, b: uint32 arrays of ``bands * rows`` constants; hash function ``j`` is
            ``x -> a[j] * x + b[j] (mod 2**32)`` (``a[j]`` odd: a bijection of 32-bit words).
        bands, rows: the LSH banding; function ``j`` belongs to band ``j // rows``.

    Returns:
        uint64 ``(n_rows, bands)``: band ``i``'s key starts at ``(i + 1) * 0x9E3779B1`` and
        folds in its ``rows`` minima in order (xor, then the splitmix64 finalizer), so
        (m1, m2) and (m2, m1) give different keys.
    """
    n_rows = offsets.size - 1
    n_hashes = bands * rows
    keys = np.empty((n_rows, bands), dtype=np.uint64)
    minima = np.empty(n_hashes, dtype=np.uint32)
    for r in range(n_rows):
        minima[:] = np.uint32(0xFFFFFFFF)
        for i in range(offsets[r], offsets[r + 1]):
            x = lanes[i]
            for j in range(n_hashes):  # the inner loop over functions vectorizes
                minima[j] = min(minima[j], np.uint32(a[j] * x + b[j]))
        for band in range(bands):
            key = np.uint64(band + 1) * _BAND_SEED
            for row in range(rows):
                key = finalize(key ^ np.uint64(minima[band * rows + row]))
            keys[r, band] = key
    return keys


@numba.njit(cache=True, nogil=True)
def pair_common_counts(offsets, hashes, left, right):
    """``|set(left[p]) ∩ set(right[p])|`` for every pair ``p``.

    Args:
        offsets, hashes: a CSR of sets, each sorted and without repeats (row ``r`` owns
            ``hashes[offsets[r]:offsets[r + 1]]``), as :func:`pipelines.spark.minhash.shingle_sets`
            returns.
        left, right: int64 row numbers of the pairs.

    Returns:
        int64 counts, one per pair: a merge of the two sorted rows, nothing copied.
    """
    common = np.zeros(left.size, dtype=np.int64)
    for p in range(left.size):
        i, i_end = offsets[left[p]], offsets[left[p] + 1]
        j, j_end = offsets[right[p]], offsets[right[p] + 1]
        count = 0
        while i < i_end and j < j_end:
            x, y = hashes[i], hashes[j]
            if x == y:
                count += 1
                i += 1
                j += 1
            elif x < y:
                i += 1
            else:
                j += 1
        common[p] = count
    return common
