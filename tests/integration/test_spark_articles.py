"""JSONL articles on a real local SparkSession: ingest + quarantine, nested OUTER explodes, clean."""

from __future__ import annotations

import json

import pytest

from core.accounting import JobCounts, ReconciliationError
from pipelines.spark.articles import ExplodedArticles, run_clean_paragraphs, run_explode_articles
from pipelines.spark.ingest_articles import run_ingest_articles
from pipelines.spark.reconcile import record_job_run

pytestmark = pytest.mark.integration

DT = "2026-10-02"
DB = "shardforge"
PARA = "Spark 的 LATERAL VIEW 把数组展开成行，[公式] 用在 Hive 分区表上"
ARTICLES = [
    {"id": "a-1", "title": "Hive 嵌套数组", "tags": ["Spark", "Hive"], "sections": [
        {"heading": "背景", "paragraphs": [PARA, "Ｎｅｓｔｅｄ   arrays need two explodes, one per level"]},
        {"heading": "方法", "paragraphs": ["第二节只有一段：OUTER 保留没有段落的文章"]},
        {"heading": "空节", "paragraphs": []},
    ]},
    {"id": "a-2", "title": "没有小节", "tags": ["CV"], "sections": []},
    {"id": "a-3", "title": "没有 sections 键", "tags": [],
     "sections": [{"heading": "复制", "paragraphs": [PARA]}]},
    {"id": "a-4", "title": "也没有 sections", "tags": ["NLP"]},
]
LINES = [json.dumps(a, ensure_ascii=False) for a in ARTICLES]
BROKEN = LINES[1][: len(LINES[1]) // 2]
FILES = {
    "articles-0000.jsonl": "\n".join([LINES[0], LINES[1], "", BROKEN, LINES[2], LINES[3]]).encode() + b"\n",
    "articles-empty.jsonl": b"",
    "articles-latin1.jsonl": '{"id": "a-9", "title": "café"}\n'.encode("latin-1"),
    "notes.txt": b"not an article file: ignored by the *.jsonl filter",
}


@pytest.fixture(scope="module")
def ingested(spark, spark_lake, write_raw):
    write_raw("articles", DT, FILES)
    return run_ingest_articles(spark, db=DB, lake=spark_lake, partitions=[DT])


def _rows(spark, table, where=f"dt = '{DT}'"):
    return [row.asDict(recursive=True) for row in spark.table(f"{DB}.{table}").where(where).collect()]


def test_ingest_counts_reconcile(ingested):
    # 5 non-blank lines of the good file + 2 unreadable files; 4 articles; 3 quarantined.
    assert ingested == [JobCounts("ingest_articles", DT, rows_in=7, rows_out=4, quarantined=3)]


def test_raw_articles_keep_nested_arrays(spark, ingested):
    rows = {r["article_id"]: r for r in _rows(spark, "raw_articles")}
    assert sorted(rows) == ["a-1", "a-2", "a-3", "a-4"]
    first = rows["a-1"]
    assert first["tags"] == ["Spark", "Hive"] and first["line"] == 1
    assert first["sections"][0] == {"heading": "背景", "paragraphs": ARTICLES[0]["sections"][0]["paragraphs"]}
    assert rows["a-2"]["sections"] == [] and rows["a-4"]["sections"] is None
    assert rows["a-3"]["line"] == 5 and rows["a-3"]["bytes"] == len(LINES[2].encode())


def test_each_bad_input_is_quarantined_with_its_reason(spark, ingested):
    rows = _rows(spark, "quarantine", f"dt = '{DT}' AND stage = 'ingest_articles'")
    found = {(r["source"].rsplit("/", 1)[-1], r["locator"]): (r["reason"], r["bytes"]) for r in rows}
    assert found == {
        ("articles-0000.jsonl", "line 4"): ("malformed JSON line", len(BROKEN.encode())),
        ("articles-empty.jsonl", "file"): ("empty file", 0),
        ("articles-latin1.jsonl", "file"): ("invalid UTF-8", len(FILES["articles-latin1.jsonl"])),
    }


@pytest.fixture(scope="module")
def exploded(spark, ingested):
    return run_explode_articles(spark, db=DB, dt=DT)


def test_nested_outer_explode_keeps_articles_without_paragraphs(spark, exploded):
    # a-1: 3 paragraphs + 1 empty section; a-2 (sections: []) and a-4 (no key) one NULL row each; a-3: 1.
    assert exploded == ExplodedArticles(articles=4, paragraphs=7, tags=4)
    rows = sorted(((r["article_id"], r["section_pos"], r["para_pos"], r["heading"]) for r in _rows(spark, "paragraphs")),
                  key=str)
    assert rows == sorted([("a-1", 0, 0, "背景"), ("a-1", 0, 1, "背景"), ("a-1", 1, 0, "方法"), ("a-1", 2, None, "空节"),
                           ("a-2", None, None, None), ("a-3", 0, 0, "复制"), ("a-4", None, None, None)], key=str)


def test_tags_explode_into_article_tags(spark, exploded):
    assert sorted((r["article_id"], r["tag"]) for r in _rows(spark, "article_tags")) == [
        ("a-1", "Hive"), ("a-1", "Spark"), ("a-2", "CV"), ("a-4", "NLP")]


@pytest.fixture(scope="module")
def cleaned(spark, exploded, spark_config):
    return run_clean_paragraphs(spark, db=DB, dt=DT, clean=spark_config.clean)


def test_clean_paragraphs_reuses_post_normalization(spark, cleaned):
    rows = {(r["article_id"], r["section_pos"], r["para_pos"]): r for r in _rows(spark, "clean_paragraphs")}
    assert sorted(rows) == [("a-1", 0, 0), ("a-1", 0, 1), ("a-1", 1, 0)]  # a-3's copy of PARA is an exact dup
    assert rows[("a-1", 0, 1)]["text"] == "Nested arrays need two explodes, one per level"
    assert rows[("a-1", 0, 1)]["lang"] == "en"
    assert "[公式]" not in rows[("a-1", 0, 0)]["text"] and rows[("a-1", 0, 0)]["topic"] == "data"
    assert rows[("a-1", 0, 0)]["heading"] == "背景" and len(rows[("a-1", 0, 0)]["doc_id"]) == 16


def test_clean_paragraphs_counts_and_quarantine(spark, cleaned):
    assert cleaned == JobCounts("clean_paragraphs", DT, rows_in=7, rows_out=3, quarantined=3,
                                duplicates_dropped=1,
                                duplicates_by_kind={"exact": 1, "truncation": 0, "near": 0})
    rows = _rows(spark, "quarantine", f"dt = '{DT}' AND stage = 'clean_paragraphs'")
    assert sorted((r["source"], r["locator"], r["reason"]) for r in rows) == [
        ("a-1", "section 2 paragraph -", "no text"), ("a-2", "section - paragraph -", "no text"),
        ("a-4", "section - paragraph -", "no text")]


def test_rerun_replaces_its_partitions_exactly(spark, spark_lake, cleaned, spark_config):
    tables = ("raw_articles", "article_tags", "paragraphs", "clean_paragraphs", "quarantine")
    before = {t: sorted(map(str, _rows(spark, t))) for t in tables}
    again = (run_ingest_articles(spark, db=DB, lake=spark_lake, partitions=[DT]),
             run_explode_articles(spark, db=DB, dt=DT),
             run_clean_paragraphs(spark, db=DB, dt=DT, clean=spark_config.clean))
    assert again[2] == cleaned and again[1].paragraphs == 7 and again[0][0].rows_out == 4
    assert {t: sorted(map(str, _rows(spark, t))) for t in tables} == before


def test_job_runs_keep_duplicates_by_kind(spark, cleaned):
    record_job_run(spark, DB, "run-test-articles", cleaned)
    (row,) = _rows(spark, "job_runs", "run_id = 'run-test-articles'")
    assert row["duplicates_by_kind"] == {"exact": 1, "truncation": 0, "near": 0}
    assert (row["rows_in"], row["rows_out"], row["quarantined"], row["duplicates_dropped"]) == (7, 3, 3, 1)


def test_reconciliation_by_kind_must_add_up(spark):
    bad = JobCounts("clean_paragraphs", DT, rows_in=5, rows_out=3, duplicates_dropped=2,
                    duplicates_by_kind={"exact": 1, "near": 0})
    with pytest.raises(ReconciliationError, match="do not add up to 2"):
        record_job_run(spark, DB, "run-test-bad", bad)
    assert _rows(spark, "job_runs", "run_id = 'run-test-bad'") == []
