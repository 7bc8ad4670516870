"""Explode ``raw_articles`` into ``paragraphs`` and ``article_tags``; clean ``clean_paragraphs``.

``run_explode_articles`` runs two HiveQL files: ``sql/explode_paragraphs.sql`` (nested
``LATERAL VIEW OUTER posexplode`` of sections, then of their paragraphs, so an article
without sections still has a row) and ``sql/explode_tags.sql`` (``LATERAL VIEW explode``
of tags). Each checks its row count against one computed from ``raw_articles`` itself.

``build_clean_paragraphs`` applies the very column logic of ``clean_posts``
(:func:`pipelines.spark.normalize.normalize`) and the same three dedups; a row
without text (an article without paragraphs) is quarantined as ``no text``.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.accounting import JobCounts
from core.config import CleanConfig
from pipelines.spark.clean import split_cleaned, write_cleaned
from pipelines.spark.ingest import drop_partitions, ensure_tables
from pipelines.spark.normalize import normalize
from pipelines.spark.sql_files import run_sql_file

__all__ = ["ExplodedArticles", "build_clean_paragraphs", "run_clean_paragraphs", "run_explode_articles"]

CLEAN_PARAGRAPHS_COLUMNS = ("doc_id", "text", "truncated", "lang", "topic", "length",
                            "article_id", "section_pos", "heading", "para_pos", "dt")
# Rows the OUTER explodes make per article: one per paragraph, and one for an article
# without sections or a section without paragraphs.
_EXPECTED_PARAGRAPHS = """
SELECT COALESCE(SUM(CASE WHEN COALESCE(size(sections), 0) <= 0 THEN 1
                    ELSE aggregate(sections, 0,
                                   (n, s) -> n + greatest(COALESCE(size(s.paragraphs), 0), 1)) END), 0),
       COALESCE(SUM(greatest(COALESCE(size(tags), 0), 0)), 0)
FROM {db}.raw_articles WHERE dt = :dt
"""


@dataclass(frozen=True)
class ExplodedArticles:
    """Checked counts of one dt's explode: the two output tables, from ``articles`` rows."""

    articles: int
    paragraphs: int
    tags: int


def run_explode_articles(spark, *, db: str, dt: str) -> ExplodedArticles:
    """Explode ``raw_articles`` of one dt into ``paragraphs`` and ``article_tags``.

    Raises:
        ReconciliationError: a table's row count differs from the one expected.
    """
    ensure_tables(spark, db)
    for table in ("paragraphs", "article_tags"):
        drop_partitions(spark, f"{db}.{table}", dt)
    run_sql_file(spark, "explode_paragraphs", args={"dt": dt}, db=db)
    run_sql_file(spark, "explode_tags", args={"dt": dt}, db=db)
    paragraphs_expected, tags_expected = spark.sql(
        _EXPECTED_PARAGRAPHS.format(db=db), args={"dt": dt}).first()
    written = {t: spark.table(f"{db}.{t}").where(f"dt = '{dt}'").count()
               for t in ("paragraphs", "article_tags")}
    JobCounts("explode_paragraphs", dt, int(paragraphs_expected), written["paragraphs"]).check()
    JobCounts("explode_tags", dt, int(tags_expected), written["article_tags"]).check()
    articles = spark.table(f"{db}.raw_articles").where(f"dt = '{dt}'").count()
    return ExplodedArticles(articles, written["paragraphs"], written["article_tags"])


def build_clean_paragraphs(paragraphs, clean: CleanConfig):
    """Clean a ``paragraphs`` DataFrame (article_id, section_pos, heading, para_pos, text, dt).

    Returns:
        ``(clean_paragraphs, quarantine, duplicates)`` like
        :func:`pipelines.spark.clean.build_clean_posts`.
    """
    from pyspark.sql import functions as F

    where = F.concat(
        F.lit("section "), F.coalesce(F.col("section_pos").cast("string"), F.lit("-")),
        F.lit(" paragraph "), F.coalesce(F.col("para_pos").cast("string"), F.lit("-")))
    return split_cleaned(normalize(paragraphs, clean), clean, order=["article_id", "section_pos", "para_pos"],
                         columns=CLEAN_PARAGRAPHS_COLUMNS, stage="clean_paragraphs",
                         source=F.col("article_id"), locator=where)


def run_clean_paragraphs(spark, *, db: str, dt: str, clean: CleanConfig) -> JobCounts:
    """Clean the paragraphs of one dt into ``clean_paragraphs`` and ``quarantine``."""
    from pyspark.sql import functions as F

    ensure_tables(spark, db)
    paragraphs = spark.table(f"{db}.paragraphs").where(F.col("dt") == dt)
    kept, quarantine, duplicates = build_clean_paragraphs(paragraphs, clean)
    return write_cleaned(spark, db=db, dt=dt, table="clean_paragraphs", kept=kept,
                         quarantine=quarantine, duplicates=duplicates, rows_in=paragraphs.count())
