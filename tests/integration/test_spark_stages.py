"""Spark stages on a real local SparkSession with Hive support: ingest, posexplode, clean."""

from __future__ import annotations

import pytest

from core.accounting import JobCounts, ReconciliationError
from pipelines.spark.clean import run_clean, run_explode
from pipelines.spark.ingest import run_ingest_feeds
from shardforge.sample_text import FOOTERS

pytestmark = pytest.mark.integration

DT = "2026-10-01"
DB = "shardforge"
GOOD = (
    "【博客】最新更新 | Latest updates\n"
    "\n"
    "最新文章\n"
    "Transformer 的位置编码 RoPE [公式] 推导，并给出 PyTorch 实现 [代码]...\n"
    "Ｓｐａｒｋ   与 Hive 的 LATERAL VIEW   用法详解\n"
    "Transformer 的位置编码 RoPE [公式] 推导，并给出 PyTorch 实现 [代码]...\n"
    "ab\n"
    "1 2 下一页\n"
)
FILES = {
    "feed-blog-0001.txt": GOOD.encode(),
    "feed-empty.txt": b"",
    "feed-broken.txt": b"banner\n\nheading\n" + b"\xff\xfe\xc3\x28 post\n",
    "feed-shapeless.txt": b"banner only, no blank line\nheading\npost\n",
    "notes.md": b"not a feed dump: ignored by the *.txt filter",
}


@pytest.fixture(scope="module")
def ingested(spark, spark_lake, write_raw):
    write_raw("feeds", DT, FILES)
    counts = run_ingest_feeds(spark, db=DB, lake=spark_lake, partitions=[DT])
    return counts


def _rows(spark, table, where=f"dt = '{DT}'"):
    return [row.asDict() for row in spark.table(f"{DB}.{table}").where(where).collect()]


def test_ingest_counts_reconcile(ingested):
    assert ingested == [JobCounts("ingest_feeds", DT, rows_in=4, rows_out=1, quarantined=3)]


def test_ingest_parses_banner_heading_posts_and_footer(spark, ingested):
    (row,) = _rows(spark, "raw_feeds")
    assert row["feed_id"] == "feed-blog-0001"
    assert row["banner"].startswith("【博客】")
    assert row["heading"] == "最新文章"
    assert row["footer"] == "1 2 下一页"
    assert len(row["posts"]) == 4 and row["posts"][3] == "ab"
    assert row["bytes"] == len(FILES["feed-blog-0001.txt"])


def test_every_bad_file_is_quarantined_with_its_reason(spark, ingested):
    rows = _rows(spark, "quarantine", f"dt = '{DT}' AND stage = 'ingest_feeds'")
    reasons = {row["source"].rsplit("/", 1)[-1]: (row["reason"], row["bytes"]) for row in rows}
    assert reasons == {
        "feed-empty.txt": ("empty file", 0),
        "feed-broken.txt": ("invalid UTF-8", len(FILES["feed-broken.txt"])),
        "feed-shapeless.txt": ("unparseable: expected a banner, a blank line and a heading",
                               len(FILES["feed-shapeless.txt"])),
    }


@pytest.fixture(scope="module")
def cleaned(spark, ingested, spark_config):
    exploded = run_explode(spark, db=DB, dt=DT)
    counts = run_clean(spark, db=DB, dt=DT, clean=spark_config.clean)
    return exploded, counts


def test_posexplode_keeps_positions(spark, cleaned):
    rows = sorted(_rows(spark, "posts"), key=lambda r: r["pos"])
    assert cleaned[0] == 4
    assert [r["pos"] for r in rows] == [0, 1, 2, 3]
    assert rows[1]["text"].startswith("Ｓｐａｒｋ")


def test_clean_normalizes_flags_and_tags(spark, cleaned):
    rows = {r["pos"]: r for r in _rows(spark, "clean_posts")}
    assert sorted(rows) == [0, 1]  # pos 2 is an exact duplicate of 0, pos 3 is too short
    rope, spark_post = rows[0], rows[1]
    assert "[公式]" not in rope["text"] and "[代码]" not in rope["text"]
    assert rope["truncated"] is True and not rope["text"].endswith("...")
    assert rope["topic"] == "nlp" and rope["lang"] == "mixed"
    assert spark_post["text"] == "Spark 与 Hive 的 LATERAL VIEW 用法详解"  # NFKC + whitespace folding
    assert spark_post["truncated"] is False and spark_post["topic"] == "data"
    assert len(rope["doc_id"]) == 16 and rope["doc_id"] != spark_post["doc_id"]


def test_clean_counts_reconcile(spark, cleaned):
    counts = cleaned[1]
    assert counts == JobCounts("clean_posts", DT, rows_in=4, rows_out=2, quarantined=1, duplicates_dropped=1,
                               duplicates_by_kind={"exact": 1, "truncation": 0, "near": 0})
    (short,) = _rows(spark, "quarantine", f"dt = '{DT}' AND stage = 'clean_posts'")
    assert short["locator"] == "pos 3" and short["reason"].startswith("too short")


def test_rerun_replaces_its_partitions_exactly(spark, spark_lake, cleaned, spark_config):
    before = {t: sorted(map(str, _rows(spark, t))) for t in ("raw_feeds", "posts", "clean_posts", "quarantine")}
    run_ingest_feeds(spark, db=DB, lake=spark_lake, partitions=[DT])
    run_explode(spark, db=DB, dt=DT)
    run_clean(spark, db=DB, dt=DT, clean=spark_config.clean)
    after = {t: sorted(map(str, _rows(spark, t))) for t in before}
    assert after == before


def test_reconciliation_fails_loudly():
    with pytest.raises(ReconciliationError, match=r"rows in 10 != out 7 \+ quarantined 1 \+ duplicates 1 \(\+1 unaccounted\)"):
        JobCounts("clean_posts", DT, rows_in=10, rows_out=7, quarantined=1, duplicates_dropped=1).check()


def test_old_job_runs_table_gets_the_by_kind_column(spark, spark_lake):
    from pipelines.spark.ingest import ensure_tables
    from pipelines.spark.reconcile import record_job_run

    spark.sql(f"CREATE DATABASE IF NOT EXISTS legacy LOCATION '{spark_lake.database('legacy')}'")
    spark.sql("CREATE TABLE legacy.job_runs (run_id STRING, job STRING, rows_in BIGINT, rows_out BIGINT,"
              " quarantined BIGINT, duplicates_dropped BIGINT, finished_at TIMESTAMP, dt STRING)"
              " USING parquet PARTITIONED BY (dt)")
    ensure_tables(spark, "legacy")
    record_job_run(spark, "legacy", "run-old", JobCounts("clean_posts", DT, 3, 1, 1, 1, {"exact": 1}))
    (row,) = spark.table("legacy.job_runs").collect()
    assert spark.table("legacy.job_runs").columns[-2:] == ["duplicates_by_kind", "dt"]
    assert row.duplicates_by_kind == {"exact": 1} and row.dt == DT and row.rows_in == 3


@pytest.mark.parametrize("footer", [*FOOTERS, "12 »"])
def test_every_sample_pager_footer_is_split_off(spark, footer):
    from pipelines.spark.ingest import build_raw_feeds

    page = f"banner\n\nheading\n第一篇文章的摘要内容\n{footer}\n".encode()
    files = spark.createDataFrame([("file:///f.txt", len(page), page, DT)],
                                  "path string, length bigint, content binary, dt string")
    (row,) = build_raw_feeds(files)[0].collect()
    assert (row.posts, row.footer) == (["第一篇文章的摘要内容"], footer)


def test_a_post_with_numbers_is_not_a_footer(spark):
    from pipelines.spark.ingest import build_raw_feeds

    page = "banner\n\nheading\n第一篇\n2026 年 GPU 报告 2 下一页\n".encode()
    files = spark.createDataFrame([("file:///f.txt", len(page), page, DT)],
                                  "path string, length bigint, content binary, dt string")
    (row,) = build_raw_feeds(files)[0].collect()
    assert row.footer is None and len(row.posts) == 2
