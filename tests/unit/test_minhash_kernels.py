"""The compiled MinHash loops against plain-Python references of the same arithmetic."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.spark.minhash import _window_hashes, group_losers, shingle_sets
from pipelines.spark.minhash_kernels import band_minima_keys, finalize, pair_common_counts

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


def test_group_losers_checks_a_pair_once_and_names_each_loser_once():
    base = "Spark jobs on YARN read Hive tables and write Parquet partitions every day."
    rows = [(1, "a", base), (1, "b", base[:-1]), (2, "a", base), (2, "b", base[:-1]),
            (3, "b", base[:-1]), (3, "c", base[:-2])]  # b loses to a (twice) and beats c
    band, ids, texts = zip(*rows, strict=True)
    table = pa.table({"_band": pa.array(band, pa.int64()), "doc_id": list(ids),
                      "length": pa.array([len(t) for t in texts], pa.int32()), "text": list(texts)})
    assert group_losers(table, k=4, threshold=0.9).to_pylist() == ["b", "c"]
    assert group_losers(table.slice(0, 0), k=4, threshold=0.9).to_pylist() == []
