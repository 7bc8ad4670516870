"""The three dedup kinds of the clean stage, on a handful of posts pushed through build_clean_posts."""

from __future__ import annotations

import pytest

from pipelines.spark.clean import build_clean_posts, count_by_kind

pytestmark = pytest.mark.integration

DT = "2026-10-03"
FULL = ("Transformer 的位置编码 RoPE 推导：从旋转矩阵出发，证明相对位置只通过内积的相位进入注意力分数，"
        "再讨论长上下文外推时的数值稳定性、显存占用与吞吐，并给出 PyTorch 实现与 Spark 数据流水线，"
        "最后在 8 张 H100 上对比 FlashAttention 与 SDPA 两种注意力实现的速度和显存")
OPENING = "大规模预训练数据工程实践系列 本系列记录我们在 Spark 与 Beam 上清洗万亿 token 语料、再写成 TFRecord 的完整经验，"
SERIES_A = OPENING + "这一篇讲 Hive 分区表的设计与小文件合并，包括分区裁剪、动态分区覆盖以及合并小文件的作业调度策略。"
SERIES_B = OPENING + "这一篇讲 TFRecord 分片、索引与 CRC 校验，以及 PyTorch 读取端如何按 worker 与 rank 切分分片。"
POSTS = [  # (feed_id, pos, text) -> what must become of it
    ("f1", 0, FULL),                                   # kept: the longest version
    ("f1", 1, FULL[:30] + "..."),                      # truncation of FULL
    ("f2", 0, FULL[:55] + "…"),                        # truncation of FULL (another cut)
    ("f2", 1, FULL),                                   # exact copy of f1/0
    ("f3", 0, FULL[:-2].replace("矩阵", "矩陣")),  # near duplicate (one char, 2 chars shorter)
    ("f3", 1, SERIES_A),                               # kept: shares a long opening with SERIES_B...
    ("f3", 2, SERIES_B),                               # kept: ...but diverges: a different post
    ("f4", 0, SERIES_A[:len(OPENING) + 12] + "..."),   # truncation of SERIES_A (cut past the opening)
    ("f4", 1, "一篇没有完整版本的摘录：Beam 流水线的窗口与触发器详解..."),  # kept: truncated, nothing longer
]


@pytest.fixture(scope="module")
def deduped(spark, spark_config):
    posts = spark.createDataFrame([(*row, DT) for row in POSTS], "feed_id string, pos int, text string, dt string")
    kept, quarantine, duplicates = build_clean_posts(posts, spark_config.clean)
    return ({(r.feed_id, r.pos): r for r in kept.collect()},
            {(r.feed_id, r.pos): r.kind for r in duplicates.collect()},
            quarantine.count(), count_by_kind(duplicates))


def test_each_kind_is_found_and_counted(deduped):
    kept, dropped, quarantined, by_kind = deduped
    assert dropped == {("f2", 1): "exact", ("f1", 1): "truncation", ("f2", 0): "truncation",
                       ("f4", 0): "truncation", ("f3", 0): "near"}
    assert by_kind == {"exact": 1, "truncation": 3, "near": 1}
    assert len(kept) + len(dropped) + quarantined == len(POSTS)


def test_longest_version_and_orphan_excerpt_are_kept(deduped):
    kept = deduped[0]
    assert kept[("f1", 0)].truncated is False and kept[("f1", 0)].length == len(FULL.replace("：", ":").replace("，", ","))
    assert kept[("f4", 1)].truncated is True and not kept[("f4", 1)].text.endswith("...")


def test_shared_opening_then_diverging_survives_as_two(deduped):
    kept = deduped[0]
    a, b = kept[("f3", 1)], kept[("f3", 2)]
    assert a.text[:40] == b.text[:40] and a.doc_id != b.doc_id


@pytest.mark.parametrize("threshold, near", [(0.9, 1), (0.999, 0)])
def test_near_threshold_comes_from_config(spark, spark_config, threshold, near):
    clean = spark_config.clean.model_copy(update={"near_dup_threshold": threshold})
    posts = spark.createDataFrame([("f", 0, FULL, DT), ("f", 1, POSTS[4][2], DT)],
                                  "feed_id string, pos int, text string, dt string")
    _, _, duplicates = build_clean_posts(posts, clean)
    assert count_by_kind(duplicates)["near"] == near
