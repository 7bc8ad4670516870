"""Character shingles, banded MinHash keys and pair Jaccard over whole Arrow batches (numpy, no per-row Python).

The near-duplicate step (:func:`pipelines.spark.dedup.near_duplicates`) uses two batch
functions inside ``mapInArrow``: :func:`band_keys` gives every kept text one key per
LSH band (in the same pass that decides exact and truncation duplicates), and
:func:`group_losers` checks every candidate pair of a band group with the exact Jaccard
of their shingle sets, each text shingled once per group (a text is ~7x smaller than its
set of 64-bit hashes, so texts, not sets, travel through the joins).

How a batch is vectorized:

1. all texts are joined and encoded as UTF-32 once, giving one code-point array and
   per-row character offsets (from ``pyarrow.compute.utf8_length``);
2. every window of ``k`` code points that lies inside one row is hashed with a
   polynomial over the code points and the splitmix64 finalizer;
3. band keys: for each of ``bands * rows`` hash functions (a 32-bit multiply-add with
   fixed random constants), the minimum per row is taken with ``np.minimum.reduceat``
   (over all windows: a repeated shingle does not change a minimum), and each band's
   ``rows`` minima are folded into one key;
4. shingle sets (for Jaccard): the hashes (cut to 44 bits) are packed under their row
   number, sorted once and de-duplicated within each row; the intersection sizes of
   many pairs come from one more sort.

The same text always gets the same hashes and keys (fixed seeds, no Python ``hash``),
so a re-run finds the same pairs. Texts with fewer than ``k`` characters have no
shingles and no band keys; they can never be near-duplicates.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["band_keys", "group_losers", "jaccard", "pair_jaccard", "shingle_sets"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_ROW_BITS = 20  # rows per batch < 2**20 (Spark's Arrow batches hold 10,000 by default)
_HASH_BITS = 64 - _ROW_BITS
_SEED = 7  # fixed: band keys must be the same on every run and every executor


def _finalize(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, in place on a uint64 array (a bijection that mixes all bits)."""
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


def _code_points(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(code points as uint64, per-row start offsets of length n+1) of a string array (no nulls)."""
    if texts.null_count:
        raise ValueError("shingles: texts must not be null")
    lengths = pc.utf8_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # One join and one encode for the whole batch: both run in C.
    joined = "".join(texts.to_pylist()).encode("utf-32-le")
    return np.frombuffer(joined, dtype=np.uint32).astype(np.uint64), offsets


def _window_hashes(texts: pa.Array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every ``k``-character window of each text, in row order, as CSR
    ``(offsets, hashes)``: row ``r`` owns ``hashes[offsets[r]:offsets[r + 1]]`` (repeats kept)."""
    if k < 1:
        raise ValueError(f"shingle size must be >= 1, got {k}")
    n_rows = len(texts)
    if n_rows >= 1 << _ROW_BITS:
        raise ValueError(f"shingles: at most {(1 << _ROW_BITS) - 1} rows per batch, got {n_rows}")
    points, char_offsets = _code_points(texts)
    starts, ends = char_offsets[:-1], char_offsets[1:]
    windows = np.maximum(ends - starts - (k - 1), 0)  # k-grams per row
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(windows, out=offsets[1:])
    # Hash the window at every position of the joined text with contiguous slices (no
    # gather), then keep the positions whose window ends inside its row: all but the last
    # k - 1 positions of each row.
    padded = np.concatenate([points, np.zeros(k - 1, dtype=np.uint64)]) + np.uint64(1)
    h = np.zeros(len(points), dtype=np.uint64)
    for i in range(k):
        h *= _GOLDEN
        h += padded[i:i + len(points)]
    inside = np.ones(len(points), dtype=bool)
    for back in range(1, k):
        last = ends - back
        inside[last[last >= starts]] = False
    return offsets, _finalize(h[inside])


def shingle_sets(texts: pa.Array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct hashes of each text's character ``k``-grams, as CSR ``(offsets, hashes)``."""
    window_offsets, h = _window_hashes(texts, k)
    n_rows = len(texts)
    row_of = np.repeat(np.arange(n_rows, dtype=np.uint64), np.diff(window_offsets))
    # One sort of packed (row, hash) keys instead of a two-key lexsort: the row in the top
    # _ROW_BITS bits, the hash's top 64 - _ROW_BITS bits below it. 44-bit shingle hashes
    # collide with odds ~n^2 / 2^45 within a pair of n-shingle texts: negligible.
    packed = (row_of << np.uint64(_HASH_BITS)) | (h >> np.uint64(_ROW_BITS))
    packed.sort()
    packed = packed[np.concatenate(([True], packed[1:] != packed[:-1]))] if packed.size else packed
    rows = (packed >> np.uint64(_HASH_BITS)).astype(np.int64)
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=offsets[1:])
    return offsets, packed & np.uint64((1 << _HASH_BITS) - 1)


def _band_keys(texts: pa.Array, *, k: int, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keys (n_rows, bands) uint64, has_shingles (n_rows,) bool)``; see :func:`band_keys`."""
    offsets, hashes = _window_hashes(texts, k)
    n_rows = len(texts)
    has = np.diff(offsets) > 0
    keys = np.zeros((n_rows, bands), dtype=np.uint64)
    if hashes.size:
        starts = offsets[:-1][has]
        # Hash function j: x -> a_j * x + b_j (mod 2**32), a_j odd, on the top 32 bits of
        # each shingle hash. The shingle hashes are already uniformly mixed, so this
        # multiply-add family orders them independently enough for candidate search (the
        # exact Jaccard check removes any false candidate); 32-bit lanes halve the memory
        # traffic of the bands x rows passes, which dominate the signing time. The minimum
        # over a row's windows equals the minimum over its distinct shingles, so repeated
        # shingles need no sort and no de-duplication here.
        lanes = (hashes >> np.uint64(32)).astype(np.uint32)
        seeds = _finalize(np.arange(1, 2 * bands * rows + 1, dtype=np.uint64) + np.uint64(_SEED << 32))
        a = (seeds[0::2] >> np.uint64(32)).astype(np.uint32) | np.uint32(1)
        b = (seeds[1::2] >> np.uint64(32)).astype(np.uint32)
        permuted = np.empty_like(lanes)
        for band in range(bands):
            key = np.full(int(has.sum()), np.uint64((band + 1) * 0x9E3779B1), dtype=np.uint64)
            for row in range(rows):
                j = band * rows + row
                np.multiply(lanes, a[j], out=permuted)
                permuted += b[j]
                key ^= np.minimum.reduceat(permuted, starts).astype(np.uint64)
                _finalize(key)  # order-dependent fold: (a, b) and (b, a) differ
            keys[has, band] = key
    return keys, has


def band_keys(texts: pa.Array, *, k: int, bands: int, rows: int) -> pa.ListArray:
    """One key per LSH band for each text: a ``list<int64>`` of ``bands`` keys, null if the
    text is shorter than ``k`` characters (no shingles: it cannot be a near-duplicate)."""
    keys, has = _band_keys(texts, k=k, bands=bands, rows=rows)
    offsets = np.arange(len(texts) + 1, dtype=np.int32) * bands
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(keys.reshape(-1).view(np.int64)),
                                    mask=pa.array(~has))


def _gather(offsets: np.ndarray, hashes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sets of ``rows`` (CSR ``offsets``/``hashes``), concatenated: ``(owner index into rows, hash)``."""
    sizes = offsets[rows + 1] - offsets[rows]
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), sizes)
    within = np.arange(owner.size, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return owner, hashes[offsets[rows][owner] + within]


def pair_jaccard(offsets: np.ndarray, hashes: np.ndarray, left: np.ndarray, right: np.ndarray,
                 *, chunk: int = 20_000) -> np.ndarray:
    """Exact Jaccard of the sets ``left[p]`` and ``right[p]`` (rows of one :func:`shingle_sets` CSR).

    Each set is computed once however many pairs it is in. Per chunk of pairs, the sets
    are gathered as ``(pair, hash)`` keys, which come out sorted (pairs in order, each set
    sorted), so one ``searchsorted`` of the right keys in the left keys finds the shared
    shingles without another sort. Two empty sets have similarity 0.
    """
    sizes = np.diff(offsets)
    common = np.zeros(len(left), dtype=np.int64)
    for start in range(0, len(left), chunk):  # chunk < 2**20 pairs: the pair fits above the hash
        stop = min(start + chunk, len(left))
        owner, h = _gather(offsets, hashes, left[start:stop])
        left_keys = (owner.astype(np.uint64) << np.uint64(_HASH_BITS)) | h
        owner, h = _gather(offsets, hashes, right[start:stop])
        right_keys = (owner.astype(np.uint64) << np.uint64(_HASH_BITS)) | h
        if not left_keys.size:
            continue
        at = np.minimum(np.searchsorted(left_keys, right_keys), left_keys.size - 1)
        common[start:stop] = np.bincount(owner[left_keys[at] == right_keys], minlength=stop - start)
    union = sizes[left] + sizes[right] - common
    return np.divide(common, union, out=np.zeros(len(left)), where=union > 0)


def jaccard(a: pa.Array, b: pa.Array, k: int) -> np.ndarray:
    """Exact Jaccard similarity of the ``k``-shingle sets of ``a[i]`` and ``b[i]``, for every ``i``."""
    if len(a) != len(b):
        raise ValueError(f"jaccard: {len(a)} left texts but {len(b)} right texts")
    offsets, hashes = shingle_sets(pa.concat_arrays([a, b]), k)
    return pair_jaccard(offsets, hashes, np.arange(len(a)), np.arange(len(a), 2 * len(a)))


def group_losers(table: pa.Table, *, k: int, threshold: float) -> pa.Array:
    """The losing ``doc_id`` of every similar pair within the band groups of ``table``.

    Args:
        table: rows ``(_band, doc_id, length, text)``: every text that has the band key
            ``_band`` and shares it with another text (whole groups: callers partition by
            ``_band``). A text is in the group of each of its shared keys.
        k: shingle size in characters.
        threshold: the Jaccard similarity at or above which two texts are near-duplicates.

    Returns:
        Per pair of a group whose Jaccard is >= ``threshold``: the shorter text's doc_id, or
        the larger doc_id when both have the same length. Ids repeat (pairs in several groups).
    """
    for name in ("_band", "doc_id", "length", "text"):
        if name not in table.schema.names:
            raise ValueError(f"group_losers: missing column {name!r} (got {table.schema.names})")
    table = table.take(pc.sort_indices(table, sort_keys=[("_band", "ascending"), ("doc_id", "ascending")]))
    band = table.column("_band").to_numpy()
    n = len(band)
    # Row r pairs with the rows after it in its group: r + 1 .. group end - 1.
    new_group = np.flatnonzero(np.concatenate(([True], band[1:] != band[:-1]))) if n else np.zeros(0, np.int64)
    ends = np.repeat(np.append(new_group[1:], n), np.diff(np.append(new_group, n)))
    partners = ends - np.arange(n) - 1
    left = np.repeat(np.arange(n, dtype=np.int64), partners)
    right = left + 1 + np.arange(left.size, dtype=np.int64) - np.repeat(np.cumsum(partners) - partners, partners)
    ids = table.column("doc_id").combine_chunks()
    distinct = pc.not_equal(ids.take(left), ids.take(right)).to_numpy(zero_copy_only=False)  # a < b
    left, right = left[distinct], right[distinct]
    texts = table.column("text").combine_chunks()
    similar = np.zeros(len(left), dtype=bool)
    start = 0
    while start < n:  # shingle_sets takes < 2**20 rows: cut between groups
        stop = n if n - start < 1 << _ROW_BITS else int(new_group[new_group < start + (1 << _ROW_BITS)][-1])
        if stop <= start:
            raise ValueError(f"group_losers: a band group of more than {(1 << _ROW_BITS) - 1} texts")
        offsets, hashes = shingle_sets(texts.slice(start, stop - start), k)
        sizes = np.diff(offsets)
        inside = np.flatnonzero((left >= start) & (left < stop))
        small, large = np.sort([sizes[left[inside] - start], sizes[right[inside] - start]], axis=0)
        # Exact pruning: J(A, B) <= min(|A|, |B|) / max(|A|, |B|), so pairs of very different
        # set sizes cannot reach the threshold (about a quarter of the candidates). The same
        # float division as the Jaccard's, which is monotonic: nothing that passes is lost.
        inside = inside[np.divide(small, large, out=np.zeros(len(small)), where=large > 0) >= threshold]
        similar[inside] = pair_jaccard(offsets, hashes, left[inside] - start, right[inside] - start) >= threshold
        start = stop
    left, right = left[similar], right[similar]
    lengths = table.column("length").to_numpy(zero_copy_only=False)
    return ids.take(np.where(lengths[right] > lengths[left], left, right))


