"""The pure Arrow-batch halves of the Spark text jobs: normalization and MinHash signatures."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from core.config import CleanConfig
from pipelines.spark.minhash import band_keys, shingle_sets
from pipelines.spark.normalize import _han_and_latin_counts, normalize_batch

CLEAN = CleanConfig(min_chars=8, max_chars=60, topics={"data": ["spark", "数据"], "nlp": ["bert"]})


@pytest.mark.parametrize(
    ("raw", "text", "truncated", "lang", "topic", "reason"),
    [
        ("Ｓｐａｒｋ  and\t[公式] Hive tables...", "Spark and Hive tables", True, "en", "data", None),
        ("用 BERT 做 数据 清洗…", "用 BERT 做 数据 清洗", True, "mixed", "data", None),  # first rule wins
        ("大规模 语言 模型 的 训练 方法", "大规模 语言 模型 的 训练 方法", False, "zh", "other", None),
        ("  tiny [Math] ", "tiny", False, "en", "other", "too short (< 8 chars)"),
        ("x" * 61, "x" * 61, False, "en", "other", "too long (> 60 chars)"),
        (None, None, None, None, None, "no text"),
    ],
)
def test_normalize_batch_cleans_each_row(raw, text, truncated, lang, topic, reason):
    batch = pa.RecordBatch.from_pydict({"feed_id": ["f"], "text": pa.array([raw], pa.string())})
    row = normalize_batch(batch, CLEAN).to_pylist()[0]
    assert row == {"feed_id": "f", "text": text, "truncated": truncated, "lang": lang, "topic": topic,
                   "length": None if text is None else len(text), "reason": reason}


def test_normalize_batch_keeps_other_columns_first_and_in_order():
    batch = pa.RecordBatch.from_pydict({"b": [1], "text": ["some words here"], "a": ["x"]})
    assert normalize_batch(batch, CLEAN).schema.names == [
        "b", "a", "text", "truncated", "lang", "topic", "length", "reason"]


def test_normalize_batch_names_the_missing_column():
    with pytest.raises(ValueError, match="'text'"):
        normalize_batch(pa.RecordBatch.from_pydict({"body": ["x"]}), CLEAN)


def test_han_and_latin_counts_agree_with_re2_per_character():
    texts = ["Spark 数据 清洗", "𠀀𠀁 (CJK Ext. B) and 〇々", "ÀÉ ü ß ЖЯ ｔｅｘｔ", "", None, "中文"]
    array = pa.array(texts, pa.string()).slice(1)  # a slice starts past byte 0

    def count(text, pattern):
        chars = pa.array(list(text or ""), pa.string())
        return sum(pc.match_substring_regex(chars, pattern).to_pylist()) if text else 0

    han, latin = _han_and_latin_counts(array)
    assert han.tolist() == [count(t, r"\p{Han}") for t in texts[1:]]
    assert latin.tolist() == [count(t, "^[A-Za-z]$") for t in texts[1:]]
    assert han.tolist()[0] == 4 and latin.tolist()[0] == 10  # 𠀀𠀁〇々; C J K E x t B a n d


def _python_shingles(text: str, k: int) -> set[str]:
    return {text[i:i + k] for i in range(len(text) - k + 1)}


def test_shingle_sets_match_python_sets():
    texts = ["abcdefg abcdefg", "你好世界你好世界", "abc", "", "aaaaaa", "a🙂b🙂c🙂d"]
    offsets, hashes = shingle_sets(pa.array(texts), 3)
    for i, text in enumerate(texts):
        row = hashes[offsets[i]:offsets[i + 1]]
        assert len(row) == len(_python_shingles(text, 3))
        assert list(row) == sorted(row)
    # Jaccard on hashes equals Jaccard on the strings.
    for i, j in itertools.combinations(range(len(texts)), 2):
        a, b = (set(hashes[offsets[x]:offsets[x + 1]].tolist()) for x in (i, j))
        sa, sb = _python_shingles(texts[i], 3), _python_shingles(texts[j], 3)
        assert len(a & b) == len(sa & sb)


def test_band_keys_match_only_for_near_copies_and_are_null_for_short_texts():
    base = "Spark jobs on YARN read Hive tables and write Parquet partitions every day."
    near = base.replace("every day", "every  day")
    other = "A completely different sentence about GPUs, kernels and mixed precision."
    texts = pa.array([base, near, other, "ab"])
    keys = band_keys(texts, k=4, bands=10, rows=12).to_pylist()
    assert keys[3] is None  # "ab" has no 4-shingle
    bands = [set(b) for b in keys[:3]]
    assert all(len(b) == 10 for b in bands)
    assert bands[0] & bands[1]
    assert not bands[0] & bands[2]
    # Same input, same keys: a re-run finds the same candidate pairs.
    assert band_keys(texts, k=4, bands=10, rows=12).to_pylist() == keys
