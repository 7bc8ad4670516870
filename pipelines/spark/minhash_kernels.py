"""The two loops of near-duplicate detection that numpy cannot express without copying: compiled with numba.

They run inside ``mapInArrow`` on whole partitions (never row-at-a-time Python):

- :func:`window_hashes`: a 64-bit hash of every ``k``-character window of each text,
  straight from the Arrow UTF-8 buffer (numpy needed the texts as Python strings to
  re-encode them as UTF-32, and ``2k`` passes over all characters).
- :func:`sort_distinct_rows`: each row's hashes sorted and without repeats, row by row,
  by a bucket sort on the top bits (one global sort of packed (row, hash) keys cost more
  and dropped hash bits; numba's comparison sort per row cost 3.4x more).
- :func:`band_minima_keys`: the ``bands * rows`` MinHash minima of every row, folded into
  one key per band. numpy needed three passes over all of a batch's shingles per hash
  function (120 functions by default), and that was most of the signing time.
- :func:`pair_common_counts`: ``|A ∩ B|`` for many pairs of sorted sets by a merge, in
  place. numpy had to gather both sets of every pair and search one in the other
  (~18 µs per pair of 125-shingle texts; the merge takes well under 1 µs).
  :func:`pairs_reaching` is the same merge for a yes/no at a threshold, which can stop
  early.
- :func:`tails_diverge`: whether each pair's two texts still share their shingles after
  their longest common prefix, from the windows the texts already have (Arrow has no
  common-prefix kernel, and a per-pair slice by code points is a Python loop).

``cache=True`` keeps the machine code in ``__pycache__`` next to this file, so a Python
worker compiles each kernel once (~1 s) and later workers load it; where that directory
is read-only (a ``--py-files`` zip on YARN) numba compiles in each worker instead.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "band_minima_keys", "finalize", "pair_common_counts", "pairs_reaching", "sort_distinct_rows",
    "tails_diverge", "window_hashes",
]

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
    golden_k = np.uint64(1)
    for _ in range(k):
        golden_k *= _GOLDEN
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
        if n < k:
            continue
        # Rolling: the next window's polynomial is h * φ64 - (its dropped point) * φ64^k
        # + (its new point), all mod 2**64: the same value as computing it afresh.
        h, out = np.uint64(0), window_offsets[r]
        for c in range(k):
            h = h * _GOLDEN + points[c]
        hashes[out] = finalize(h)
        for start in range(1, n - k + 1):
            h = h * _GOLDEN - points[start - 1] * golden_k + points[start + k - 1]
            out += 1
            hashes[out] = finalize(h)
    return hashes


@numba.njit(cache=True, nogil=True)
def _bucket_sort(hashes, start, m, row, counts):
    """Sort ``hashes[start:start + m]`` into ``row[:m]`` (repeats kept); see :func:`sort_distinct_rows`.

    ``counts`` is scratch of at least ``2 * m + 2`` entries.
    """
    bits = 0
    while (1 << bits) < m:
        bits += 1
    if bits == 0:  # zero or one hash
        row[:m] = hashes[start:start + m]
        return
    shift = np.uint64(64 - bits)
    counts[:(1 << bits) + 1] = 0
    for i in range(start, start + m):
        counts[(hashes[i] >> shift) + 1] += 1
    for b in range(1 << bits):
        counts[b + 1] += counts[b]
    for i in range(start, start + m):
        bucket = hashes[i] >> shift
        row[counts[bucket]] = hashes[i]
        counts[bucket] += 1
    for i in range(1, m):  # buckets are in order; sort within them
        value, j = row[i], i - 1
        while j >= 0 and row[j] > value:
            row[j + 1] = row[j]
            j -= 1
        row[j + 1] = value


@numba.njit(cache=True, nogil=True)
def sort_distinct_rows(offsets, hashes):
    """Sort each CSR row of ``hashes`` and drop its repeats.

    A row of ``m`` hashes is bucketed by its top ``ceil(log2(m))`` bits (a counting
    sort: the hashes are uniformly mixed, so a bucket holds about one), then an insertion
    sort puts the few equal-bucket neighbours in order: linear in the row on average,
    where a comparison sort of each ~200-hash row cost 3.4x more (5.5 against 1.6 s for
    the band groups of the 1M-post benchmark corpus).

    Returns:
        ``(offsets, hashes)`` of the distinct sorted rows, a new CSR (the input is untouched).
    """
    n_rows = offsets.size - 1
    out_offsets = np.zeros(n_rows + 1, dtype=np.int64)
    out = np.empty(hashes.size, dtype=np.uint64)
    longest = 0
    for r in range(n_rows):
        longest = max(longest, offsets[r + 1] - offsets[r])
    counts = np.empty(2 * longest + 2, dtype=np.int64)  # buckets: the power of two >= m, plus one
    row = np.empty(longest, dtype=np.uint64)
    n = 0
    for r in range(n_rows):
        m = offsets[r + 1] - offsets[r]
        _bucket_sort(hashes, offsets[r], m, row, counts)
        for i in range(m):
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


@numba.njit(cache=True, nogil=True)
def pairs_reaching(offsets, hashes, left, right, needed):
    """For every pair ``p``: do the sets ``left[p]`` and ``right[p]`` share at least ``needed[p]`` elements?

    The same merge as :func:`pair_common_counts` (same CSR of sorted distinct rows), but
    a pair stops as soon as it cannot reach ``needed[p]``: each set can afford
    ``len - needed`` elements the other lacks, and one more settles it. Near-duplicate
    checks need only the yes/no of ``|A ∩ B| >= c_min`` (see
    :func:`pipelines.spark.minhash.min_common_for_jaccard`).

    Returns:
        bool, one per pair.
    """
    reached = np.zeros(left.size, dtype=np.bool_)
    for p in range(left.size):
        i, i_end = offsets[left[p]], offsets[left[p] + 1]
        j, j_end = offsets[right[p]], offsets[right[p] + 1]
        need = needed[p]
        spare_i, spare_j = i_end - i - need, j_end - j - need
        if spare_i < 0 or spare_j < 0:
            continue
        count = 0
        while i < i_end and j < j_end:
            x, y = hashes[i], hashes[j]
            # Branch-free steps: which side advances is a coin flip the CPU cannot predict.
            lt, gt = np.int64(x < y), np.int64(x > y)
            count += 1 - lt - gt
            spare_i -= lt
            spare_j -= gt
            if spare_i < 0 or spare_j < 0:
                break
            i += 1 - gt
            j += 1 - lt
        reached[p] = count >= need
    return reached


@numba.njit(cache=True, nogil=True)
def _distinct_in_place(row, m):
    """Drop the repeats of the sorted ``row[:m]`` in place; returns how many values are left."""
    n = 0
    for i in range(m):
        if i == 0 or row[i] != row[n - 1]:
            row[n] = row[i]
            n += 1
    return n


@numba.njit(cache=True, nogil=True)
def tails_diverge(byte_offsets, data, chars, window_offsets, windows, sizes, left, right, common, k, resync):
    """For each pair: do its two texts, after their longest common prefix, fail to re-synchronise?

    Args:
        byte_offsets, data: the texts as a UTF-8 CSR (int64 offsets, uint8 data), as
            :func:`pipelines.spark.arrow_text.utf8_buffers` returns.
        chars: int64, each text's length in code points.
        window_offsets, windows: each text's ``k``-code-point window hashes in text order,
            repeats kept (:func:`window_hashes`): window ``i`` of a text starts at its code point ``i``.
        sizes: int64, per text, at least its number of distinct window hashes.
        left, right: int64 text rows of the pairs.
        common: int64, per pair, at most the number of distinct window hashes the two whole
            texts share (exact, or 0 to always compare the remainders).
        k: the window size the hashes were made with.
        resync: the Jaccard at or above which the remainders count as re-synchronised.

    Returns:
        bool per pair: with ``p`` the common prefix in whole code points (a character that
        differs only in a later byte is not common) and ``kept = min(chars_l, chars_r) - p``,
        ``kept > 0`` (neither text is a prefix of the other) and the Jaccard of the distinct
        window hashes inside code points ``[p, p + kept)`` of each text (the stretch where
        both still have text; 0 without a whole window there) is below ``resync``. The
        windows are the texts' own: nothing is copied or hashed again (cutting the remainders
        out as new strings and shingling them cost twice as much).

        Shortcut, exact: a remainder's set lacks at most the ``w - m`` windows outside it
        (``w`` the text's windows, ``m`` the remainder's), so the remainders share at least
        ``common - (w_l - m) - (w_r - m)`` hashes of a union of at most ``size_l + size_r -
        common``; where that ratio reaches ``resync`` nothing is sorted. A re-crawl whose
        first edit comes early (most of them) stops there.
    """
    n = left.size
    diverge = np.zeros(n, dtype=np.bool_)
    longest = 0
    for r in range(window_offsets.size - 1):
        longest = max(longest, window_offsets[r + 1] - window_offsets[r])
    row_a, row_b = np.empty(longest, dtype=np.uint64), np.empty(longest, dtype=np.uint64)
    counts = np.empty(2 * longest + 2, dtype=np.int64)
    for p in range(n):
        a, a_end = byte_offsets[left[p]], byte_offsets[left[p] + 1]
        b, b_end = byte_offsets[right[p]], byte_offsets[right[p] + 1]
        same, points, most = 0, 0, min(a_end - a, b_end - b)
        while same < most and data[a + same] == data[b + same]:
            points += np.int64((data[a + same] & 0xC0) != 0x80)  # lead bytes: one per code point
            same += 1
        # A character cut in the middle is not common: its lead byte was counted. The common
        # bytes are whole characters on one side iff on the other, so one side decides.
        tail = np.uint8(0)
        if same < a_end - a:
            tail = data[a + same]
        elif same < b_end - b:
            tail = data[b + same]
        if (tail & 0xC0) == 0x80:
            points -= 1
        keep = min(chars[left[p]], chars[right[p]]) - points
        if keep == 0:
            continue
        m = max(keep - k + 1, 0)  # windows inside [points, points + keep) of each text
        outside = (window_offsets[left[p] + 1] - window_offsets[left[p]] - m
                   + window_offsets[right[p] + 1] - window_offsets[right[p]] - m)
        union = sizes[left[p]] + sizes[right[p]] - common[p]
        if union > 0 and common[p] - outside > 0 and (common[p] - outside) / union >= resync:
            continue
        if m == 0:
            diverge[p] = resync > 0
            continue
        _bucket_sort(windows, window_offsets[left[p]] + points, m, row_a, counts)
        _bucket_sort(windows, window_offsets[right[p]] + points, m, row_b, counts)
        size_a, size_b = _distinct_in_place(row_a, m), _distinct_in_place(row_b, m)
        i, j, shared = 0, 0, 0
        while i < size_a and j < size_b:
            x, y = row_a[i], row_b[j]
            shared += np.int64(x == y)
            i += np.int64(x <= y)
            j += np.int64(y <= x)
        diverge[p] = shared / (size_a + size_b - shared) < resync
    return diverge
