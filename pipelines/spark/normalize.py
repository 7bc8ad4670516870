"""The text normalization every cleaned table shares (posts, paragraphs): columns, not rows.

``normalize`` turns a DataFrame with a ``text`` column into the cleaned columns, using
Spark built-ins plus one Arrow-batched (pandas) UDF for Unicode NFKC, which the JVM's
SQL functions do not offer:

1. NFKC, placeholder removal (``[公式]``…, from config), whitespace folding;
2. ``truncated`` when the excerpt was cut with ``...``/``…`` (the marker removed);
3. ``lang`` by the ratio of Han to Latin letters (zh / en / mixed);
4. ``reason`` for rows outside the length bounds or without text (→ quarantine);
5. ``topic`` from keyword rules (first rule that matches wins);
6. ``doc_id`` = first 16 hex digits of sha256(normalized text).
"""

from __future__ import annotations

import re

from shardforge.config import CleanConfig

__all__ = ["CLEAN_COLUMNS", "TRUNCATION_MARKER", "normalize", "quarantine_rows"]

TRUNCATION_MARKER = r"(\.\.\.|…)\s*$"
# The columns normalize() adds, in the order every clean_* table starts with.
CLEAN_COLUMNS = ("doc_id", "text", "truncated", "lang", "topic", "length")


def normalize(df, clean: CleanConfig):
    """Normalize ``df.text`` and add the cleaned columns.

    Args:
        df: any DataFrame with a string column ``text`` (NULL allowed: it gets a reason).
        clean: placeholders, length bounds and topic rules.

    Returns:
        ``df`` with ``text`` replaced by the normalized text, the columns of
        :data:`CLEAN_COLUMNS` first, then the other columns of ``df``, then ``reason``
        (NULL when the row is good, else why it goes to quarantine).
    """
    from pyspark.sql import functions as F

    from pipelines.spark.text_udfs import nfkc

    if "text" not in df.columns:
        raise ValueError(f"normalize: expected a 'text' column, got {df.columns}")
    text = nfkc(F.col("text"))
    if clean.placeholders:
        pattern = "|".join(re.escape(token) for token in clean.placeholders)
        text = F.regexp_replace(text, pattern, " ")
    text = F.trim(F.regexp_replace(text, r"\s+", " "))
    staged = df.withColumn("norm", text).withColumn("truncated", F.col("norm").rlike(TRUNCATION_MARKER))
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
    rest = [c for c in df.columns if c not in CLEAN_COLUMNS]
    staged = staged.select(
        F.substring(F.sha2("norm", 256), 1, 16).alias("doc_id"),
        F.col("norm").alias("text"),
        "truncated",
        F.when(share >= 0.8, "zh").when(share <= 0.2, "en").otherwise("mixed").alias("lang"),
        topic.alias("topic"),
        F.length("norm").alias("length"),
        *rest,
    )
    reason = (
        F.when(F.col("text").isNull(), F.lit("no text"))
        .when(F.col("length") < clean.min_chars, F.lit(f"too short (< {clean.min_chars} chars)"))
        .when(F.col("length") > clean.max_chars, F.lit(f"too long (> {clean.max_chars} chars)"))
    )
    return staged.withColumn("reason", reason)


def quarantine_rows(staged, *, stage: str, source, locator):
    """The rows of a :func:`normalize` output that have a reason, as ``quarantine`` rows.

    Args:
        staged: the output of :func:`normalize`.
        stage: the quarantine partition (e.g. ``"clean_posts"``).
        source: a Column naming where the row came from (a feed, an article).
        locator: a Column locating the row inside its source (``pos 3``).
    """
    from pyspark.sql import functions as F

    return staged.where(F.col("reason").isNotNull()).select(
        source.alias("source"),
        locator.alias("locator"),
        "reason",
        F.coalesce(F.col("length"), F.lit(0)).cast("bigint").alias("bytes"),
        F.lit(stage).alias("stage"),
        "dt",
    )
