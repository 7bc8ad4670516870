"""Character shingles, banded MinHash keys and pair Jaccard over whole Arrow batches (no per-row Python).

The near-duplicate step (:func:`pipelines.spark.dedup.near_duplicates`) uses two batch
functions inside ``mapInArrow``: :func:`band_keys` gives every kept text one key per
LSH band (in the same pass that decides exact and truncation duplicates), and
:func:`group_losers` (or :func:`group_pairs`, which also names each pair's winner and
similarity) checks every candidate pair of a band group with the exact Jaccard
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

Excerpts: a feed excerpt (``truncated``) ends where the crawler cut it, so two different
posts that share a long opening (a template, a series) can pass the Jaccard threshold
on the opening alone. :func:`group_pairs` therefore drops a pair with a truncated side
when it is :func:`tail_divergent`: the two texts differ before either ends and do not
re-synchronise after their common opening (a re-crawl with small edits does).

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
    tails_diverge,
    window_hashes,
)

__all__ = [
    "RESYNC", "band_keys", "group_losers", "group_pairs", "jaccard", "min_common_for_jaccard", "near_pairs", "pair_jaccard",
    "shingle_sets", "tail_divergent",
]

_SEED = 7  # fixed: band keys must be the same on every run and every executor
# Remainders (after the common opening) whose shingle Jaccard is below this have not
# re-synchronised: a small edit leaves most of the text after it alone (~0.9 for one
# substitution in 60 characters), a different ending shares next to nothing (~0-0.1).
RESYNC = 0.5
_GROUP_COLUMNS = ("_band", "doc_id", "length", "text")


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


def _divergent(texts: pa.Array, windows: tuple[np.ndarray, np.ndarray], sizes: np.ndarray, left: np.ndarray,
               right: np.ndarray, common: np.ndarray, *, k: int, resync: float) -> np.ndarray:
    """:func:`tail_divergent` of the pairs ``(texts[left[p]], texts[right[p]])``, given the texts'
    :func:`_window_hashes` (same ``k``); ``sizes`` and ``common`` as :func:`tails_diverge` takes them."""
    chars = pc.utf8_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
    return tails_diverge(*utf8_buffers(texts), chars, *windows, sizes, left, right, common, k, resync)


def tail_divergent(left: pa.Array, right: pa.Array, *, k: int, resync: float = RESYNC) -> np.ndarray:
    """Whether ``left[i]`` and ``right[i]`` share an opening and then go separate ways before either ends.

    The rule, per pair: let ``P`` be their longest common prefix in code points, and ``a``,
    ``b`` the two texts after ``P``, both cut to ``m = min(len(a), len(b))`` code points. The
    pair is divergent iff ``m > 0`` (they differ before either text ends: neither is a prefix
    of the other, nor are they equal) and the Jaccard of the ``k``-shingle sets of the cut
    ``a`` and ``b`` is below ``resync`` (two sets without shingles, ``m < k``, have Jaccard 0:
    texts that differ only in their last few characters are divergent).

    Why this separates the two cases that look alike to whole-text Jaccard: a re-crawl with
    small edits re-synchronises after its first edit, so the text after it is still mostly
    the same shingles; two different posts that share a long opening (a template, a series)
    have unrelated remainders. Why the cut to ``m``: beyond the end of the shorter text the
    other's characters are unknown to it (a feed cut it there), not different; without the
    cut, a re-crawl cut ten characters later with one late edit would count as divergent.
    Why ``m > 0``: an excerpt that is a prefix of the other text has not diverged (it is a
    shorter cut of the same post), though its empty remainder has no shingles.

    How: one compiled pass per pair (:func:`~pipelines.spark.minhash_kernels.tails_diverge`)
    finds ``P`` on the UTF-8 bytes (backed off to a code point boundary) and takes the
    remainders' shingles from the whole texts' own windows (window ``i`` starts at code
    point ``i``), so no remainder is copied or hashed again.

    Args:
        left, right: string or large_string arrays of the same length, without nulls
            (chunked arrays are combined).
        k: shingle size in characters (>= 1), as for the whole-text Jaccard.
        resync: remainders whose Jaccard is at least this are the same text re-synchronised,
            in ``[0, 1]``.

    Returns:
        bool, one per pair; symmetric in ``left`` and ``right``.

    Raises:
        TypeError: an input is not a string array.
        ValueError: lengths differ, a text is null, ``k < 1`` or ``resync`` outside ``[0, 1]``.
    """
    arrays = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in (left, right)]
    for side, array in zip(("left", "right"), arrays, strict=True):
        if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            raise TypeError(f"tail_divergent: {side} must be a string array, got {array.type}")
        if array.null_count:
            raise ValueError(f"tail_divergent: {side} has {array.null_count} null texts")
    if len(arrays[0]) != len(arrays[1]):
        raise ValueError(f"tail_divergent: {len(arrays[0])} left texts but {len(arrays[1])} right texts")
    if k < 1:
        raise ValueError(f"shingle size must be >= 1, got {k}")
    if not 0 <= resync <= 1:
        raise ValueError(f"tail_divergent: resync must be in [0, 1], got {resync}")
    n = len(arrays[0])
    texts = pa.concat_arrays([a.cast(pa.large_string()) for a in arrays])
    rows = np.arange(n, dtype=np.int64)
    windows = _window_hashes(texts, k)  # no shortcut here: the window counts bound the set sizes
    return _divergent(texts, windows, np.diff(windows[0]), rows, rows + n, np.zeros(n, dtype=np.int64),
                      k=k, resync=resync)


def near_pairs(left: pa.Array, right: pa.Array, left_truncated: pa.Array, right_truncated: pa.Array, *, k: int,
               threshold: float, resync: float = RESYNC) -> tuple[np.ndarray, np.ndarray]:
    """The near-duplicate rule of :func:`group_pairs` for given pairs ``(left[i], right[i])``.

    Returns:
        ``(similarity, near)``: the exact Jaccard of each pair, and whether it is a near
        duplicate: ``similarity >= threshold`` and, when either side is truncated (nulls count
        as False), not :func:`tail_divergent`.
    """
    similarity = jaccard(left, right, k)
    excerpt = pc.or_(pc.fill_null(left_truncated, False), pc.fill_null(right_truncated, False))
    excerpt = excerpt.to_numpy(zero_copy_only=False)
    near = similarity >= threshold
    check = np.flatnonzero(near & excerpt)
    if check.size:
        near[check] &= ~tail_divergent(left.take(check), right.take(check), k=k, resync=resync)
    return similarity, near


def _candidate_pairs(table: pa.Table) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, first_row, left, right)``: the distinct doc_ids of a non-empty band-group table,
    sorted; one row of each; and every distinct pair ``left < right`` (positions in ``ids``)
    that shares a group, sorted."""
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
    return distinct, first_row, left, right


def _similar_pairs(table: pa.Table, *, k: int, threshold: float, resync: float, caller: str):
    """The similar pairs of :func:`group_pairs`, as positions.

    Returns:
        ``(ids, loser, winner, sets)``: ``ids`` the distinct doc_ids, sorted; ``loser`` and
        ``winner`` int64 positions in ``ids`` of each kept pair, sorted by ``(loser, winner)``;
        ``sets`` the :func:`shingle_sets` CSR of the texts in the order of ``ids``.
    """
    for name in _GROUP_COLUMNS:
        if name not in table.schema.names:
            raise ValueError(f"{caller}: missing column {name!r} (got {table.schema.names})")
    has_truncated = "truncated" in table.schema.names
    if has_truncated and not pa.types.is_boolean(table.schema.field("truncated").type):
        raise ValueError(f"{caller}: column 'truncated' must be boolean, got {table.schema.field('truncated').type}")
    if not 0 <= resync <= 1:
        raise ValueError(f"{caller}: resync must be in [0, 1], got {resync}")
    none = np.zeros(0, dtype=np.int64)
    if table.num_rows == 0:
        return pa.array([], table.schema.field("doc_id").type), none, none, (np.zeros(1, np.int64), none)
    distinct, first_row, left, right = _candidate_pairs(table)
    texts = table.column("text").combine_chunks().take(first_row)
    windows = _window_hashes(texts, k)  # kept for the tail rule: a remainder's shingles are a run of them
    offsets, hashes = sort_distinct_rows(*windows)
    if not has_truncated:
        windows = None  # no rule to apply: free them
    sizes = np.diff(offsets)
    # J >= threshold iff the pair shares at least `needed` shingles: the merge stops as
    # soon as a pair cannot get there, and pairs of very different sizes never start.
    needed = min_common_for_jaccard(sizes[left], sizes[right], threshold)
    similar = pairs_reaching(offsets, hashes, left, right, needed)
    left, right, needed = left[similar], right[similar], needed[similar]
    if has_truncated and left.size:
        truncated = pc.fill_null(table.column("truncated").combine_chunks().take(first_row), False)
        truncated = truncated.to_numpy(zero_copy_only=False)
        ruled = np.flatnonzero(truncated[left] | truncated[right])  # only excerpts can end in the middle
        if ruled.size:
            # A similar pair shares at least `needed` shingles: enough to settle most re-crawls unsorted.
            divergent = _divergent(texts, windows, sizes, left[ruled], right[ruled], needed[ruled], k=k,
                                   resync=resync)
            keep = np.ones(left.size, dtype=bool)
            keep[ruled[divergent]] = False
            left, right = left[keep], right[keep]
    lengths = table.column("length").combine_chunks().take(first_row).to_numpy(zero_copy_only=False)
    right_loses = lengths[right] <= lengths[left]  # equal lengths: the larger doc_id (right) loses
    loser, winner = np.where(right_loses, right, left), np.where(right_loses, left, right)
    order = np.lexsort((winner, loser))
    return distinct, loser[order], winner[order], (offsets, hashes)


def group_pairs(table: pa.Table, *, k: int, threshold: float, resync: float = RESYNC) -> pa.Table:
    """Every similar pair of distinct texts within the band groups of ``table``, with its winner.

    Args:
        table: rows ``(_band, doc_id, length, text)`` and optionally a boolean ``truncated``
            (null counts as False): every text that has the band key ``_band`` and shares it
            with another text (whole groups: callers partition by ``_band``). A text is in
            the group of each of its shared keys.
        k: shingle size in characters.
        threshold: the Jaccard similarity at or above which two texts are near-duplicates.
        resync: passed to :func:`tail_divergent`.

    Returns:
        One row per distinct pair of some group whose Jaccard is >= ``threshold``, except a
        pair with at least one truncated side that is :func:`tail_divergent` (two excerpts
        that share an opening and differ before either ends are different posts, however
        long the opening; complete texts are judged by the Jaccard alone). Columns ``loser``
        and ``winner`` (the doc_id type): the shorter text loses, or the larger doc_id when
        both have the same length; ``similarity`` (float64), the exact Jaccard. Rows are
        sorted by ``(loser, winner)``. Each distinct text is shingled once, and each distinct
        pair checked once however many groups it shares.

    Raises:
        ValueError: a column is missing, ``truncated`` is not boolean, or ``resync`` is
            outside ``[0, 1]``.
    """
    ids, loser, winner, (offsets, hashes) = _similar_pairs(table, k=k, threshold=threshold, resync=resync,
                                                            caller="group_pairs")
    return pa.table({"loser": ids.take(loser), "winner": ids.take(winner),
                     "similarity": pa.array(pair_jaccard(offsets, hashes, loser, winner), pa.float64())})


def group_losers(table: pa.Table, *, k: int, threshold: float, resync: float = RESYNC) -> pa.Array:
    """The distinct, sorted doc_ids that lose a pair of :func:`group_pairs` (the same arguments).

    Without a ``truncated`` column every pair with Jaccard >= ``threshold`` counts, as it
    always did; with one, the pairs that :func:`group_pairs` drops as tail-divergent do not.
    """
    ids, loser, _, _ = _similar_pairs(table, k=k, threshold=threshold, resync=resync, caller="group_losers")
    return ids.take(_sorted_unique(loser))
