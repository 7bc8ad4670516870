"""Explode feed dumps into posts and clean the posts into ``clean_posts``.

``run_explode`` runs ``sql/explode_posts.sql`` (``LATERAL VIEW posexplode``).
``build_clean_posts`` normalizes each post with Spark built-ins plus one Arrow
(pandas) UDF for Unicode NFKC, which the JVM's SQL functions do not offer:

1. NFKC, placeholder removal (``[公式]``…, from config), whitespace folding;
2. ``truncated`` when the excerpt was cut with ``...``/``…`` (the marker removed);
3. ``lang`` by the ratio of Han to Latin letters (zh / en / mixed);
4. length bounds (outside → quarantine with the reason);
5. ``topic`` from keyword rules (first rule that matches wins);
6. ``doc_id`` = first 16 hex digits of sha256(normalized text); exact duplicates
   (same doc_id) keep the first by (feed_id, pos) and are counted as dropped.
"""

from __future__ import annotations

import re

from pipelines.spark.ingest import ensure_tables
from pipelines.spark.reconcile import JobCounts
from pipelines.spark.sql_files import run_sql_file
from shardforge.config import CleanConfig

__all__ = ["build_clean_posts", "run_clean", "run_explode"]

TRUNCATION_MARKER = r"(\.\.\.|…)\s*$"


def build_clean_posts(posts, clean: CleanConfig):
    """Clean a ``posts`` DataFrame (feed_id, pos, text, dt).

    Returns:
        ``(clean_posts, quarantine, duplicates)``: the first two in their tables' column
        order; ``duplicates`` holds the dropped exact duplicates (for counting).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from pipelines.spark.text_udfs import nfkc

    text = nfkc(F.col("text"))
    if clean.placeholders:
        pattern = "|".join(re.escape(token) for token in clean.placeholders)
        text = F.regexp_replace(text, pattern, " ")
    text = F.trim(F.regexp_replace(text, r"\s+", " "))
    staged = posts.withColumn("norm", text).withColumn(
        "truncated", F.col("norm").rlike(TRUNCATION_MARKER)
    )
    staged = staged.withColumn("norm", F.trim(F.regexp_replace("norm", TRUNCATION_MARKER, "")))
    han = F.length(F.regexp_replace("norm", r"[^\p{IsHan}]", ""))
    latin = F.length(F.regexp_replace("norm", r"[^A-Za-z]", ""))
    share = han / F.greatest(han + latin, F.lit(1))
    lowered = F.lower(F.col("norm"))
    topic = F.lit(clean.default_topic)
    for name, keywords in reversed(list(clean.topics.items())):
        hit = F.lit(False)
        for keyword in keywords:
            hit = hit | (F.instr(lowered, keyword.lower()) > 0)
        topic = F.when(hit, F.lit(name)).otherwise(topic)
    staged = staged.select(
        F.substring(F.sha2("norm", 256), 1, 16).alias("doc_id"),
        F.col("norm").alias("text"),
        "truncated",
        F.when(share >= 0.8, "zh").when(share <= 0.2, "en").otherwise("mixed").alias("lang"),
        topic.alias("topic"),
        F.length("norm").alias("length"),
        "feed_id",
        "pos",
        "dt",
    )
    reason = F.when(F.col("length") < clean.min_chars, F.lit(f"too short (< {clean.min_chars} chars)")).when(
        F.col("length") > clean.max_chars, F.lit(f"too long (> {clean.max_chars} chars)")
    )
    staged = staged.withColumn("reason", reason)
    quarantine = staged.where(F.col("reason").isNotNull()).select(
        F.col("feed_id").alias("source"),
        F.concat(F.lit("pos "), F.col("pos").cast("string")).alias("locator"),
        "reason",
        F.col("length").cast("bigint").alias("bytes"),
        F.lit("clean_posts").alias("stage"),
        "dt",
    )
    first = Window.partitionBy("doc_id").orderBy("feed_id", "pos")
    ranked = staged.where(F.col("reason").isNull()).withColumn("rank", F.row_number().over(first))
    kept = ranked.where(F.col("rank") == 1).drop("rank", "reason")
    duplicates = ranked.where(F.col("rank") > 1)
    return kept, quarantine, duplicates


def run_explode(spark, *, db: str, dt: str) -> int:
    """Explode ``raw_feeds`` of one dt into ``posts``; returns the posts written."""
    ensure_tables(spark, db)
    spark.sql(f"ALTER TABLE {db}.posts DROP IF EXISTS PARTITION (dt='{dt}')")
    run_sql_file(spark, "explode_posts", args={"dt": dt}, db=db)
    expected = spark.sql(
        f"SELECT COALESCE(SUM(size(posts)), 0) FROM {db}.raw_feeds WHERE dt = :dt", args={"dt": dt}
    ).first()[0]
    written = spark.table(f"{db}.posts").where(f"dt = '{dt}'").count()
    JobCounts("explode_posts", dt, rows_in=int(expected), rows_out=written).check()
    return written


def run_clean(spark, *, db: str, dt: str, clean: CleanConfig) -> JobCounts:
    """Clean the posts of one dt into ``clean_posts`` and ``quarantine``; returns checked counts."""
    from pyspark.sql import functions as F

    ensure_tables(spark, db)
    posts = spark.table(f"{db}.posts").where(F.col("dt") == dt)
    kept, quarantine, duplicates = build_clean_posts(posts, clean)
    kept = kept.cache()
    spark.sql(f"ALTER TABLE {db}.clean_posts DROP IF EXISTS PARTITION (dt='{dt}')")
    spark.sql(f"ALTER TABLE {db}.quarantine DROP IF EXISTS PARTITION (stage='clean_posts', dt='{dt}')")
    # Sorted by doc_id so a re-run writes the same rows in the same order.
    kept.orderBy("doc_id").write.insertInto(f"{db}.clean_posts", overwrite=True)
    quarantine.write.insertInto(f"{db}.quarantine", overwrite=True)
    counts = JobCounts(
        "clean_posts", dt, rows_in=posts.count(), rows_out=kept.count(),
        quarantined=quarantine.count(), duplicates_dropped=duplicates.count(),
    ).check()
    kept.unpersist()
    return counts
