"""Character shingles, banded MinHash keys and pair Jaccard over whole Arrow batches (no per-row Python).

The near-duplicate step (:func:`pipelines.spark.dedup.near_duplicates`) uses two batch
functions inside ``mapInArrow``: :func:`band_keys` gives every kept text one key per
LSH band (in the same pass that decides exact and truncation duplicates), and
:func:`group_losers` checks every candidate pair of a band group with the exact Jaccard
of their shingle sets, each distinct text shingled once per partition (a text is ~7x
smaller than its set of 64-bit hashes, so texts, not sets, travel through the joins).

How a batch is computed (whole batches, in compiled loops of
:mod:`pipelines.spark.minhash_kernels`, no per-row Python):

1. every window of ``k`` code points that lies inside one row is hashed straight from
   the Arrow UTF-8 buffer with a polynomial over the code points and the splitmix64
   finalizer;
2. band keys: for each of ``bands * rows`` hash functions (a 32-bit multiply-add with
   fixed random constants) the minimum over a row's windows is taken (a repeated
   shingle does not change a minimum), and each band's ``rows`` minima are folded into
   one key;
3. shingle sets (for Jaccard): each row's window hashes sorted and de-duplicated; a
   candidate pair is decided by merging its two sorted rows, which stops as soon as the
   pair cannot share the shingles the threshold needs (:func:`min_common_for_jaccard`).

The same text always gets the same hashes and keys (fixed seeds, no Python ``hash``),
so a re-run finds the same pairs. Texts with fewer than ``k`` characters have no
shingles and no band keys; they can never be near-duplicates.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.spark.arrow_text import utf8_buffers
from pipelines.spark.minhash_kernels import (
    band_minima_keys,
    finalize,
    pair_common_counts,
    pairs_reaching,
    sort_distinct_rows,
    window_hashes,
)

__all__ = ["band_keys", "group_losers", "jaccard", "min_common_for_jaccard", "pair_jaccard", "shingle_sets"]

_SEED = 7  # fixed: band keys must be the same on every run and every executor


def _window_hashes(texts: pa.Array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every ``k``-character window of each text, in row order, as CSR
    ``(offsets, hashes)``: row ``r`` owns ``hashes[offsets[r]:offsets[r + 1]]`` (repeats kept)."""
    if k < 1:
        raise ValueError(f"shingle size must be >= 1, got {k}")
    if texts.null_count:
        raise ValueError("shingles: texts must not be null")
    byte_offsets, data = utf8_buffers(texts)
    chars = pc.utf8_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.maximum(chars - (k - 1), 0), out=offsets[1:])
    return offsets, window_hashes(byte_offsets, data, offsets, k)


def shingle_sets(texts: pa.Array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct 64-bit hashes of each text's character ``k``-grams, as CSR ``(offsets, hashes)``."""
    return sort_distinct_rows(*_window_hashes(texts, k))


def _band_keys(texts: pa.Array, *, k: int, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keys (n_rows, bands) uint64, has_shingles (n_rows,) bool)``; see :func:`band_keys`."""
    offsets, hashes = _window_hashes(texts, k)
    has = np.diff(offsets) > 0
    keys = np.zeros((len(texts), bands), dtype=np.uint64)
    if hashes.size:
        # Hash function j: x -> a_j * x + b_j (mod 2**32), a_j odd, on the top 32 bits of
        # each shingle hash. The shingle hashes are already uniformly mixed, so this
        # multiply-add family orders them independently enough for candidate search (the
        # exact Jaccard check removes any false candidate), and 32-bit lanes vectorize.
        lanes = (hashes >> np.uint64(32)).astype(np.uint32)
        seeds = np.array([finalize(np.uint64((_SEED << 32) + i)) for i in range(1, 2 * bands * rows + 1)],
                         dtype=np.uint64)
        a = (seeds[0::2] >> np.uint64(32)).astype(np.uint32) | np.uint32(1)
        b = (seeds[1::2] >> np.uint64(32)).astype(np.uint32)
        # Rows without shingles own no hashes: dropping their offsets keeps the CSR whole.
        keys[has] = band_minima_keys(lanes, np.append(offsets[:-1][has], offsets[-1]), a, b, bands, rows)
    return keys, has


def band_keys(texts: pa.Array, *, k: int, bands: int, rows: int) -> pa.ListArray:
    """One key per LSH band for each text: a ``list<int64>`` of ``bands`` keys, null if the
    text is shorter than ``k`` characters (no shingles: it cannot be a near-duplicate)."""
    keys, has = _band_keys(texts, k=k, bands=bands, rows=rows)
    offsets = np.arange(len(texts) + 1, dtype=np.int32) * bands
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(keys.reshape(-1).view(np.int64)),
                                    mask=pa.array(~has))


def pair_jaccard(offsets: np.ndarray, hashes: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the sets ``left[p]`` and ``right[p]`` (rows of one :func:`shingle_sets` CSR).

    The intersections are counted by merging each pair's two sorted rows, nothing copied.
    Two empty sets have similarity 0.
    """
    left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
    common = pair_common_counts(offsets, hashes, left, right)
    sizes = np.diff(offsets)
    union = sizes[left] + sizes[right] - common
    return np.divide(common, union, out=np.zeros(len(left)), where=union > 0)


def jaccard(a: pa.Array, b: pa.Array, k: int) -> np.ndarray:
    """Exact Jaccard similarity of the ``k``-shingle sets of ``a[i]`` and ``b[i]``, for every ``i``."""
    if len(a) != len(b):
        raise ValueError(f"jaccard: {len(a)} left texts but {len(b)} right texts")
    offsets, hashes = shingle_sets(pa.concat_arrays([a, b]), k)
    return pair_jaccard(offsets, hashes, np.arange(len(a)), np.arange(len(a), 2 * len(a)))


def min_common_for_jaccard(sizes_a: np.ndarray, sizes_b: np.ndarray, threshold: float) -> np.ndarray:
    """The least ``c`` with ``c / (a + b - c) >= threshold``, per pair of set sizes ``(a, b)``.

    Two sets of sizes ``a`` and ``b`` reach the Jaccard ``threshold`` iff they share at
    least ``c`` elements (the ratio grows with ``c``). ``c`` is found with the float
    division :func:`pair_jaccard` uses, so the two always agree; ``c > min(a, b)`` means the
    pair can never reach it (sizes too different, ``J <= min / max``, or both sets empty).
    """
    total = np.asarray(sizes_a, dtype=np.int64) + np.asarray(sizes_b, dtype=np.int64)
    # An estimate from below (the closed form, less a margin for its rounding), then up.
    needed = np.maximum(np.floor(threshold * total / (1 + threshold)).astype(np.int64) - 2, 0)
    while True:
        union = total - needed
        short = (union > 0) & (np.divide(needed, union, out=np.ones(len(union)), where=union > 0) < threshold)
        if not short.any():
            # Two empty sets have similarity 0 (as in pair_jaccard): they can never reach it.
            return np.where(total == 0, 1, needed)
        needed += short


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by a sort and a neighbour compare (numpy's hash-based unique cost 10x more here)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if values.size else values


def _group_pairs(group_starts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(i, j)``, ``i < j``, of rows in one group; groups are the runs that
    start at ``group_starts`` (sorted, the first 0) and end at the next start or ``n``."""
    ends = np.repeat(np.append(group_starts[1:], n), np.diff(np.append(group_starts, n)))
    partners = ends - np.arange(n) - 1  # row r pairs with r + 1 .. its group's end - 1
    left = np.repeat(np.arange(n, dtype=np.int64), partners)
    right = left + 1 + np.arange(left.size, dtype=np.int64) - np.repeat(np.cumsum(partners) - partners, partners)
    return left, right


def group_losers(table: pa.Table, *, k: int, threshold: float) -> pa.Array:
    """The losing ``doc_id`` of every similar pair within the band groups of ``table``.

    Args:
        table: rows ``(_band, doc_id, length, text)``: every text that has the band key
            ``_band`` and shares it with another text (whole groups: callers partition by
            ``_band``). A text is in the group of each of its shared keys.
        k: shingle size in characters.
        threshold: the Jaccard similarity at or above which two texts are near-duplicates.

    Returns:
        The distinct doc_ids that lose a pair of some group whose Jaccard is >=
        ``threshold``: of a pair, the shorter text loses, or the larger doc_id when both
        have the same length. Each distinct text is shingled once, and each distinct
        pair checked once however many groups it shares.
    """
    for name in ("_band", "doc_id", "length", "text"):
        if name not in table.schema.names:
            raise ValueError(f"group_losers: missing column {name!r} (got {table.schema.names})")
    if table.num_rows == 0:
        return pa.array([], table.schema.field("doc_id").type)
    ids = table.column("doc_id").combine_chunks()
    distinct = pc.unique(ids)
    distinct = distinct.take(pc.sort_indices(distinct))
    text_of = pc.index_in(ids, value_set=distinct).to_numpy(zero_copy_only=False).astype(np.int64)
    band = table.column("_band").to_numpy()
    by_group = np.lexsort((text_of, band))
    band, text_of = band[by_group], text_of[by_group]
    starts = np.flatnonzero(np.concatenate(([True], band[1:] != band[:-1]))) if band.size else band
    left, right = _group_pairs(starts, band.size)
    left, right = text_of[left], text_of[right]  # left <= right: groups are sorted by text
    # Distinct pairs of distinct texts (a text may repeat in a group; a pair may share bands).
    pairs = _sorted_unique((left[left != right].astype(np.uint64) << np.uint64(32))
                           | right[left != right].astype(np.uint64))
    left, right = (pairs >> np.uint64(32)).astype(np.int64), (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)

    first_row = np.zeros(len(distinct), dtype=np.int64)
    first_row[text_of[::-1]] = by_group[::-1]  # any row of each text will do
    offsets, hashes = shingle_sets(table.column("text").combine_chunks().take(first_row), k)
    sizes = np.diff(offsets)
    # J >= threshold iff the pair shares at least `needed` shingles: the merge stops as
    # soon as a pair cannot get there, and pairs of very different sizes never start.
    needed = min_common_for_jaccard(sizes[left], sizes[right], threshold)
    similar = pairs_reaching(offsets, hashes, left, right, needed)
    left, right = left[similar], right[similar]
    lengths = table.column("length").combine_chunks().take(first_row).to_numpy(zero_copy_only=False)
    return distinct.take(_sorted_unique(np.where(lengths[right] > lengths[left], left, right)))
