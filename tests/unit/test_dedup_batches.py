"""The pure Arrow halves of the dedup step: per-partition exact/truncation marking, pair Jaccard."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from pipelines.spark.dedup_batches import mark_partition, prefix_of_next
from pipelines.spark.minhash import group_losers, jaccard

KEY = 10  # prefix_key_chars for these tests
OPENING = "大规模预训练数据工程实践系列，本系列记录清洗语料的经验，"


def _rows(*rows):
    """(feed_id, pos, text, truncated) tuples -> a table like the cleaned rows (doc_id = the text)."""
    feed, pos, text, truncated = zip(*rows, strict=True)
    return pa.table({"doc_id": list(text), "text": list(text), "truncated": list(truncated),
                     "length": pa.array([len(t) for t in text], pa.int32()),
                     "feed_id": list(feed), "pos": pa.array(pos, pa.int32())})


def _kinds(table):
    out = mark_partition(table, key_chars=KEY, order=["feed_id", "pos"])
    return {(r["feed_id"], r["pos"]): r["kind"] for r in out.to_pylist()}


def test_exact_copies_keep_the_complete_version_then_the_first_by_order():
    text = "Spark jobs read Hive tables"
    table = _rows(("f2", 0, text, False), ("f1", 5, text, True), ("f1", 9, text, False),
                  ("f3", 1, text, False))
    assert _kinds(table) == {("f1", 9): None, ("f1", 5): "exact", ("f2", 0): "exact", ("f3", 1): "exact"}


def test_order_nulls_come_first_like_spark():
    table = pa.table({"doc_id": ["d", "d"], "text": ["same text", "same text"], "truncated": [False, False],
                      "length": pa.array([9, 9], pa.int32()), "section": pa.array([3, None], pa.int32())})
    out = mark_partition(table, key_chars=KEY, order=["section"]).to_pylist()
    assert [(r["section"], r["kind"]) for r in out] == [(None, None), (3, "exact")]


def test_chain_of_truncations_keeps_only_the_longest():
    full = OPENING + "这一篇讲 Hive 分区表的设计与小文件合并。"
    table = _rows(("a", 0, full[:12], True), ("a", 1, full[:25], True), ("a", 2, full[:31], True),
                  ("a", 3, full, False))
    assert _kinds(table) == {("a", 0): "truncation", ("a", 1): "truncation", ("a", 2): "truncation",
                             ("a", 3): None}


def test_longest_version_may_itself_be_truncated():
    full = OPENING + "后半部分"
    table = _rows(("a", 0, full[:15], True), ("a", 1, full, True))
    assert _kinds(table) == {("a", 0): "truncation", ("a", 1): None}


def test_shared_long_opening_then_diverging_both_survive():
    a, b = OPENING + "这一篇讲 Hive 分区表。", OPENING + "这一篇讲 TFRecord 分片。"
    table = _rows(("a", 0, a, True), ("b", 0, b, True), ("c", 0, OPENING + "这一篇讲 Hive", True))
    assert _kinds(table) == {("a", 0): None, ("b", 0): None, ("c", 0): "truncation"}


def test_short_or_complete_prefixes_are_not_truncations():
    full = "Spark jobs read Hive tables and write Parquet"
    table = _rows(("a", 0, full[:KEY - 1], True),  # shorter than the key: too short to claim identity
                  ("a", 1, full[:20], False),  # complete, not an excerpt
                  ("a", 2, full, False))
    assert _kinds(table) == {("a", 0): None, ("a", 1): None, ("a", 2): None}


def test_exact_copy_of_an_excerpt_is_exact_not_truncation():
    full = OPENING + "全文"
    cut = full[:20]
    table = _rows(("a", 0, cut, True), ("b", 0, cut, True), ("c", 0, full, False))
    assert _kinds(table) == {("a", 0): "truncation", ("b", 0): "exact", ("c", 0): None}


def test_quarantined_rows_pass_through_unmarked():
    table = _rows(("a", 0, "Spark jobs read Hive tables", False), ("a", 1, "Spark jobs read Hive tables", False))
    table = table.append_column("reason", pa.array([None, "too long"], pa.string()))
    out = mark_partition(table, key_chars=KEY, order=["feed_id", "pos"])
    assert [(r["pos"], r["reason"], r["kind"]) for r in out.to_pylist()] == [(0, None, None), (1, "too long", None)]


def test_mark_partition_names_the_missing_column():
    with pytest.raises(ValueError, match="'truncated'"):
        mark_partition(pa.table({"doc_id": ["d"], "text": ["t"], "length": [1]}), key_chars=KEY, order=[])


def test_prefix_of_next_matches_python_startswith():
    texts = sorted(["abc", "abcd", "abd", "b", "bc", "你好", "你好世界", "", "a"])
    got = prefix_of_next(pa.array(texts), np.ones(len(texts), dtype=bool))
    want = [i + 1 < len(texts) and texts[i + 1] != texts[i] and texts[i + 1].startswith(texts[i])
            for i in range(len(texts))]
    assert got.tolist() == want
    # Only candidates are tested, and a slice (not starting at byte 0) reads its own bytes.
    mask = np.array([i % 2 == 0 for i in range(len(texts))])
    assert prefix_of_next(pa.array(texts), mask).tolist() == [w and m for w, m in zip(want, mask, strict=True)]
    assert prefix_of_next(pa.array(["zz", *texts]).slice(1), np.ones(len(texts), dtype=bool)).tolist() == want


def _python_jaccard(a: str, b: str, k: int) -> float:
    sa, sb = ({t[i:i + k] for i in range(len(t) - k + 1)} for t in (a, b))
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def test_jaccard_matches_python_sets():
    texts = ["Spark jobs read Hive tables", "Spark jobs read Hive table", "你好世界你好世界", "你好世界你好",
             "abc", "", "a🙂b🙂c🙂d"]
    pairs = list(itertools.product(range(len(texts)), repeat=2))
    a = pa.array([texts[i] for i, _ in pairs])
    b = pa.array([texts[j] for _, j in pairs])
    got = jaccard(a, b, 3)
    assert got.tolist() == pytest.approx([_python_jaccard(texts[i], texts[j], 3) for i, j in pairs])


def test_group_losers_shorter_loses_then_larger_id_and_groups_stay_apart():
    base = "Spark jobs on YARN read Hive tables and write Parquet partitions every day."
    other = "Something else entirely, about GPU kernels and mixed precision training."
    rows = [  # (band, doc_id, text)
        (1, "a", base), (1, "b", base[:-1]),  # b is shorter: b loses
        (2, "c", base), (2, "d", base.replace("day", "dai")),  # same length: the larger id loses
        (3, "e", base), (3, "f", other),  # not similar
        (4, "g", base), (4, "g", base),  # one text twice in a group (two equal band keys): no pair
        (5, "h", base[:-1]), (6, "i", base),  # similar, but in different groups: never compared
    ]
    band, ids, texts = zip(*rows, strict=True)
    table = pa.table({"_band": pa.array(band, pa.int64()), "doc_id": list(ids),
                      "length": pa.array([len(t) for t in texts], pa.int32()), "text": list(texts)})
    assert sorted(group_losers(table, k=4, threshold=0.9).to_pylist()) == ["b", "d"]
