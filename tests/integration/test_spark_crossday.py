"""Dedup across dt partitions on real local Spark: daily crawls of one "latest updates" page.

Five dts crawl one page whose window slides: most posts of a day were on the page the days
before, some cut with "..." on one day and whole on another, one re-crawled with small
edits, two different posts that share a long opening. Every story must become exactly one
document, whatever order the dts are processed in, and a re-run must change nothing.
"""

from __future__ import annotations

import pytest

from pipelines.spark.clean import run_clean, run_explode
from pipelines.spark.documents import rebuild_documents
from pipelines.spark.ingest import run_ingest_feeds

pytestmark = pytest.mark.integration

DAYS = ["2026-09-01", "2026-09-02", "2026-09-03", "2026-09-04", "2026-09-05"]
OPENING = ("大规模预训练数据工程实践系列：本系列记录我们在 Spark 与 Beam 上清洗万亿 token 语料、"
           "再写成 TFRecord 分片供 PyTorch 训练读取的完整经验，包括分区设计、去重与质量闸门，")
STORIES = {  # story -> its full text
    "rope": ("Transformer 的位置编码 RoPE [公式] 推导：从旋转矩阵出发，证明相对位置只通过内积的相位进入注意力分数，"
             "再讨论长上下文外推时的数值稳定性与显存占用，并给出 PyTorch 实现"),
    "hive": ("Hive partitioned tables in practice: dynamic partition overwrite, small-file compaction, "
             "partition pruning and why LATERAL VIEW posexplode keeps the position of every post on the page"),
    "series_a": OPENING + "这一篇讲 Hive 分区表的设计与小文件合并。",
    "series_b": OPENING + "这一篇讲 TFRecord 的索引与校验和。",
    "flash": ("FlashAttention on H100: tiling, online softmax and why FP16 with loss scaling still matters "
              "for the backward pass; we compare SDPA backends and measure tokens per second end to end"),
    "beam": ("Beam 流水线的窗口与触发器详解：固定窗口、滑动窗口与会话窗口的语义，迟到数据如何处理，"
             "以及在 DirectRunner 与 Flink 上的差异和调试方法"),
    "medusa": ("Medusa heads for speculative decoding: several extra heads propose the next tokens, "
               "a tree of candidates is verified in one forward pass, and the output equals greedy decoding"),
}
SERIES_CUT = f"cut {len(OPENING) + 9}"  # the feed cuts both after the opening and 9 more characters
# What the page showed each day: (story, how). how: full, cut N (first N chars + "..."), edit.
PAGES = {
    DAYS[0]: [("rope", "cut 60"), ("hive", "full"), ("series_a", SERIES_CUT)],
    DAYS[1]: [("flash", "full"), ("rope", "cut 60"), ("hive", "full"), ("series_a", SERIES_CUT)],
    DAYS[2]: [("beam", "full"), ("flash", "edit"), ("rope", "full"), ("series_b", SERIES_CUT)],
    DAYS[3]: [("medusa", "cut 70"), ("beam", "full"), ("flash", "full"), ("series_b", SERIES_CUT)],
    DAYS[4]: [("medusa", "full"), ("beam", "full"), ("hive", "full")],
}
FIRST_SEEN = {"rope": DAYS[0], "hive": DAYS[0], "series_a": DAYS[0], "flash": DAYS[1], "beam": DAYS[2],
              "series_b": DAYS[2], "medusa": DAYS[3]}


def _post(story: str, how: str) -> str:
    text = STORIES[story]
    if how.startswith("cut"):
        return text[:int(how.split()[1])] + "..."
    if how == "edit":  # a re-crawl: small edits spread through the text
        return text.replace("tiling,", "tiling;").replace("SDPA backends", "SDPA-backends")
    return text


def _dump(posts: list[str]) -> bytes:
    return ("【博客】最新更新 | Latest updates\n\n最新文章\n" + "\n".join(posts) + "\n1 2 下一页\n").encode()


@pytest.fixture(scope="module")
def raw_days(spark_lake, write_raw):
    for dt, page in PAGES.items():
        write_raw("feeds", dt, {"feed-page.txt": _dump([_post(s, how) for s, how in page])})
    return spark_lake


def _process(spark, lake, clean, db: str, order: list[str]):
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {db} LOCATION '{lake.database(db)}'")
    counts = {}
    for dt in order:
        run_ingest_feeds(spark, db=db, lake=lake, partitions=[dt])
        run_explode(spark, db=db, dt=dt)
        counts[dt] = run_clean(spark, db=db, dt=dt, clean=clean)
    return counts, rebuild_documents(spark, db=db)


def _documents(spark, db: str) -> list[dict]:
    rows = spark.table(f"{db}.documents").collect()
    return sorted((r.asDict() for r in rows), key=lambda r: r["doc_id"])


def _story(text: str, clean) -> str:
    """The story a document's text comes from: the one it shares the longest opening with."""
    import os

    import pyarrow as pa

    from pipelines.spark.normalize import normalize_batch

    names = list(STORIES)
    normalized = normalize_batch(pa.record_batch({"text": list(STORIES.values())}), clean).column("text")
    shared = [len(os.path.commonprefix([text, full])) for full in normalized.to_pylist()]
    return names[shared.index(max(shared))]


@pytest.fixture(scope="module")
def in_order(spark, raw_days, spark_config):
    """Days 1-2, then days 3-5 (a lake that grows day by day); the documents after both."""
    first, _ = _process(spark, raw_days, spark_config.clean, "xday_in_order", DAYS[:2])
    early = _documents(spark, "xday_in_order")
    counts, build = _process(spark, raw_days, spark_config.clean, "xday_in_order", DAYS[2:])
    return {**first, **counts}, build, _documents(spark, "xday_in_order"), early


def test_every_story_is_one_document(in_order, spark_config):
    _, build, documents, _ = in_order
    stories = sorted(_story(d["text"], spark_config.clean) for d in documents)
    assert stories == sorted(STORIES)
    posts = sum(len(page) for page in PAGES.values())
    assert build.members == posts  # no copy within a day: every post of a day is a member
    assert build.documents == len(STORIES)
    assert build.members - build.documents == sum(build.seen_by_dt.values())


def test_document_text_is_the_fullest_copy_and_identity_the_first_seen(in_order, spark_config):
    _, _, documents, _ = in_order
    by_story = {_story(d["text"], spark_config.clean): d for d in documents}
    for story, doc in by_story.items():
        assert doc["first_seen_dt"] == FIRST_SEEN[story], story
    # rope: cut on days 1-2, whole on day 3: the text is upgraded, the identity stays day 1's.
    rope = by_story["rope"]
    assert rope["truncated"] is False and rope["source_dt"] == DAYS[2] and rope["times_seen"] == 3
    assert rope["last_seen_dt"] == DAYS[2]
    medusa = by_story["medusa"]
    assert medusa["truncated"] is False and medusa["first_seen_dt"] == DAYS[3] and medusa["source_dt"] == DAYS[4]
    assert by_story["hive"]["times_seen"] == 3 and by_story["hive"]["last_seen_dt"] == DAYS[4]


def test_diverging_excerpts_stay_two_documents(in_order):
    _, _, documents, _ = in_order
    series = [d for d in documents if d["text"].startswith(OPENING[:14])]  # before the "："
    assert len(series) == 2 and all(d["truncated"] for d in series)


def test_counts_reconcile_with_the_seen_kind(spark, in_order):
    counts, build, _, _ = in_order
    for dt, within in counts.items():
        seen = build.seen_by_dt.get(dt, 0)
        assert within.rows_in == within.rows_out + within.quarantined + within.duplicates_dropped
        assert 0 <= seen <= within.rows_out
    # Day 1 brought only new posts, but its rope excerpt's text is held by day 3's whole copy.
    members = spark.table("xday_in_order.document_members")
    day1 = {r.kind for r in members.where(f"dt = '{DAYS[0]}' AND role = 'seen'").collect()}
    assert build.seen_by_dt[DAYS[0]] == 1 and day1 == {"truncation"}
    assert members.where("role = 'kept'").count() == build.documents
    kinds = {r.kind for r in members.where("role = 'seen'").select("kind").distinct().collect()}
    assert kinds == {"exact", "truncation", "near"}


def test_later_days_keep_every_doc_id_and_upgrade_texts(in_order, spark_config):
    _, _, documents, early = in_order
    now = {d["doc_id"]: d for d in documents}
    assert {d["doc_id"] for d in early} <= set(now)  # so every document keeps its split too
    rope = next(d for d in early if _story(d["text"], spark_config.clean) == "rope")
    assert rope["truncated"] is True and now[rope["doc_id"]]["truncated"] is False
    assert len(now[rope["doc_id"]]["text"]) > len(rope["text"])


def test_order_does_not_matter(spark, raw_days, spark_config, in_order):
    # Newest first, then the old dts back-filled one by one, all in one job per dt.
    _process(spark, raw_days, spark_config.clean, "xday_backfill", [DAYS[2], DAYS[4], DAYS[3], DAYS[0], DAYS[1]])
    assert _documents(spark, "xday_backfill") == in_order[2]


def test_shuffled_joins_give_the_documents_broadcast_joins_give(spark, raw_days, spark_config,
                                                                in_order, monkeypatch):
    """The dedup joins broadcast the day's sides only when they fit the driver's budget
    (pipelines.spark.broadcast); with no budget every join shuffles, and the documents are
    the same as the default run's, which broadcast everything on this tiny lake."""
    from pipelines.spark import broadcast, crossday, dedup

    decisions = []

    def recording(frame, rows, budget, row_bytes=broadcast.ROW_BYTES):
        decisions.append((rows, broadcast.fits(rows, budget, row_bytes)))
        return broadcast.hint_if_fits(frame, rows, budget, row_bytes)

    for module in (crossday, dedup):
        monkeypatch.setattr(module, "broadcast_budget", lambda spark: 0)
        monkeypatch.setattr(module, "hint_if_fits", recording)
    _process(spark, raw_days, spark_config.clean, "xday_shuffled", DAYS)
    # every side with a row was shuffled (an empty one "fits" any budget)
    assert any(rows for rows, _ in decisions)
    assert [fit for rows, fit in decisions if rows] == [False] * sum(1 for r, _ in decisions if r)
    assert _documents(spark, "xday_shuffled") == in_order[2]
    assert broadcast.broadcast_budget(spark) >= 16 * 2 ** 20  # the default: 1/16 of the heap


def test_a_rerun_changes_nothing(spark, raw_days, spark_config, in_order):
    db = "xday_in_order"
    run_clean(spark, db=db, dt=DAYS[1], clean=spark_config.clean)
    build = rebuild_documents(spark, db=db)
    assert _documents(spark, db) == in_order[2]
    assert build.snapshot() == in_order[1].snapshot()


def test_a_failed_link_leaves_the_documents_as_they_were(spark, spark_config, in_order, monkeypatch):
    from pipelines.spark import crossday

    db = "xday_in_order"

    def broken(*args, **kwargs):
        raise RuntimeError("executor lost")

    monkeypatch.setattr(crossday, "find_links", broken)
    with pytest.raises(RuntimeError, match="executor lost"):
        run_clean(spark, db=db, dt=DAYS[2], clean=spark_config.clean)
    assert _documents(spark, db) == in_order[2]  # documents are rebuilt only after a whole dt
    # The dt's index partition is its commit: without it the dt is absent, never half there.
    assert spark.table(f"{db}.dedup_index").where(f"dt = '{DAYS[2]}'").count() == 0
    monkeypatch.undo()
    run_clean(spark, db=db, dt=DAYS[2], clean=spark_config.clean)
    rebuild_documents(spark, db=db)
    assert _documents(spark, db) == in_order[2]


def test_explain_follows_a_copy_to_its_document(spark, in_order):
    from pipelines.spark.dedup_explain import explain

    by_text = {d["truncated"]: d for d in in_order[2] if d["text"].startswith("Transformer")}
    rope = by_text[False]
    found = explain(spark, db="xday_in_order", query="Transformer 的位置编码 RoPE")
    copies = {e.copy.split(" feed")[0]: e for e in found}
    assert set(copies) == {f"dt={DAYS[0]}", f"dt={DAYS[1]}", f"dt={DAYS[2]}"}
    assert {e.doc_id for e in found} == {rope["doc_id"]}
    day1 = "\n".join(copies[f"dt={DAYS[0]}"].lines)
    assert "a copy (truncation)" in day1 and f"dt={DAYS[2]}" in day1 and "first seen 2026-09-01" in day1
    by_id = explain(spark, db="xday_in_order", query=rope["doc_id"][:10])
    assert by_id and all(e.doc_id == rope["doc_id"] for e in by_id)


def test_explain_names_what_a_day_dropped_itself(spark, spark_lake, spark_config, write_raw):
    from pipelines.spark.dedup_explain import explain

    dt, db = "2026-09-20", "xday_explain"
    full = STORIES["beam"]
    write_raw("feeds", dt, {"feed-a.txt": _dump([full, full, full[:40] + "..."])})
    _process(spark, spark_lake, spark_config.clean, db, [dt])
    found = explain(spark, db=db, query=full[:12])
    stories = sorted("\n".join(e.lines) for e in found)
    assert len(found) == 3 and len({e.doc_id for e in found}) == 1
    assert sum("dropped by the clean of dt=2026-09-20: exact" in s for s in stories) == 1
    assert sum("dropped by the clean of dt=2026-09-20: truncation" in s for s in stories) == 1
    with pytest.raises(ValueError, match="doc_id"):
        explain(spark, db=db, query="  ")
