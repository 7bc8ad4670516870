"""The compiled MinHash loops against plain-Python references of the same arithmetic."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.spark.minhash import (
    _window_hashes,
    group_losers,
    min_common_for_jaccard,
    shingle_sets,
)
from pipelines.spark.minhash_kernels import (
    band_minima_keys,
    finalize,
    pair_common_counts,
    pairs_reaching,
    sort_distinct_rows,
)

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _finalize_py(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _window_hashes_py(text: str, k: int) -> list[int]:
    out = []
    for start in range(len(text) - k + 1):
        h = 0
        for ch in text[start:start + k]:
            h = (h * _GOLDEN + ord(ch) + 1) & _M64
        out.append(_finalize_py(h))
    return out


def test_window_hashes_decode_every_utf8_width_like_python():
    # 1-, 2-, 3- and 4-byte characters, a row shorter than k, an empty row, and a slice
    # (a sliced Arrow array does not start at byte 0).
    texts = pa.array(["skip", "ascii text", "é ü ß", "中文数据清洗", "a🙂b🙂c", "ab", ""]).slice(1)
    offsets, hashes = _window_hashes(texts, 3)
    for i, text in enumerate(texts.to_pylist()):
        assert hashes[offsets[i]:offsets[i + 1]].tolist() == _window_hashes_py(text, 3)
    assert int(finalize(np.uint64(12345))) == _finalize_py(12345)


def test_band_minima_keys_fold_32_bit_minima_per_band():
    rng = np.random.default_rng(0)
    bands, rows = 3, 4
    lanes = rng.integers(0, 1 << 32, size=40, dtype=np.uint64).astype(np.uint32)
    offsets = np.array([0, 1, 17, 40], dtype=np.int64)
    a = rng.integers(0, 1 << 32, size=bands * rows, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
    b = rng.integers(0, 1 << 32, size=bands * rows, dtype=np.uint64).astype(np.uint32)
    keys = band_minima_keys(lanes, offsets, a, b, bands, rows)
    for r in range(3):
        xs = lanes[offsets[r]:offsets[r + 1]].tolist()
        for band in range(bands):
            key = (band + 1) * 0x9E3779B1
            for j in range(band * rows, (band + 1) * rows):
                key = _finalize_py(key ^ min((int(a[j]) * x + int(b[j])) & 0xFFFFFFFF for x in xs))
            assert int(keys[r, band]) == key


def test_pair_common_counts_merge_sorted_rows():
    offsets, hashes = shingle_sets(pa.array(["abcdef", "abcdeX", "zzzz", ""]), 2)
    left, right = np.array([0, 0, 1, 2, 3]), np.array([1, 2, 0, 2, 0])
    sets = [set(hashes[offsets[i]:offsets[i + 1]].tolist()) for i in range(4)]
    expected = [len(sets[i] & sets[j]) for i, j in zip(left, right, strict=True)]
    assert pair_common_counts(offsets, hashes, left, right).tolist() == expected == [4, 0, 4, 1, 0]


def test_sort_distinct_rows_match_sorted_sets_of_every_row_size():
    rng = np.random.default_rng(1)
    sizes = [0, 1, 2, 3, 7, 64, 65, 300, 1]
    rows = [rng.integers(0, 1 << 64, size=n, dtype=np.uint64, endpoint=False) for n in sizes]
    rows[3][2] = rows[3][0]  # repeats, inside and across buckets
    rows[7][100:200] = rows[7][:100]
    rows[4][:] = np.uint64(5)  # one bucket holding the whole row
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    hashes = np.concatenate(rows)
    before = hashes.copy()
    out_offsets, out = sort_distinct_rows(offsets, hashes)
    for i, row in enumerate(rows):
        assert out[out_offsets[i]:out_offsets[i + 1]].tolist() == sorted(set(row.tolist()))
    assert np.array_equal(hashes, before)  # the input is left as it was


def test_min_common_for_jaccard_is_the_least_count_reaching_the_threshold():
    for threshold in (0.5, 0.8, 0.9, 1.0):
        for a in range(0, 40):
            for b in range(0, 40, 3):
                needed = int(min_common_for_jaccard(np.array([a]), np.array([b]), threshold)[0])
                reach = [c for c in range(a + b + 1) if a + b - c > 0 and c / (a + b - c) >= threshold]
                assert needed == (reach[0] if reach else max(a + b, 1)), (threshold, a, b)
                assert (needed > min(a, b)) == (not [c for c in reach if c <= min(a, b)])


def test_pairs_reaching_agrees_with_the_full_merge():
    rng = np.random.default_rng(2)
    texts = ["".join(rng.choice(list("abcde"), size=int(n))) for n in rng.integers(3, 60, size=40)]
    offsets, hashes = shingle_sets(pa.array(texts), 3)
    left, right = rng.integers(0, 40, size=500), rng.integers(0, 40, size=500)
    common = pair_common_counts(offsets, hashes, left, right)
    for needed in (np.zeros(500, np.int64), rng.integers(0, 20, size=500), common, common + 1):
        assert pairs_reaching(offsets, hashes, left, right, needed).tolist() == (common >= needed).tolist()


def test_group_losers_checks_a_pair_once_and_names_each_loser_once():
    base = "Spark jobs on YARN read Hive tables and write Parquet partitions every day."
    rows = [(1, "a", base), (1, "b", base[:-1]), (2, "a", base), (2, "b", base[:-1]),
            (3, "b", base[:-1]), (3, "c", base[:-2])]  # b loses to a (twice) and beats c
    band, ids, texts = zip(*rows, strict=True)
    table = pa.table({"_band": pa.array(band, pa.int64()), "doc_id": list(ids),
                      "length": pa.array([len(t) for t in texts], pa.int32()), "text": list(texts)})
    assert group_losers(table, k=4, threshold=0.9).to_pylist() == ["b", "c"]
    assert group_losers(table.slice(0, 0), k=4, threshold=0.9).to_pylist() == []
