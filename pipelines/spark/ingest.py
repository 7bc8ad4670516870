"""Ingest raw feed dumps into the Hive table ``raw_feeds``.

A feed dump is one crawl of a blog's "latest updates" page, as delivered::

    banner line
    <blank>
    heading line
    post
    post
    …
    1 2 3 下一页        (optional pagination footer)

``build_raw_feeds`` holds the logic as Spark built-ins (no Python UDF): files that
are empty, not UTF-8 or not in this shape become quarantine rows with the file,
the reason and the raw size; every other file becomes one ``raw_feeds`` row whose
``posts`` array keeps the page order.
"""

from __future__ import annotations

from pipelines.spark.reconcile import JobCounts
from pipelines.spark.sql_files import run_sql_file

__all__ = ["FOOTER_PATTERN", "build_raw_feeds", "ensure_tables", "run_ingest_feeds"]

# A pagination footer: page numbers, optionally followed by a "next page" link.
FOOTER_PATTERN = r"^\s*(\d+\s+)*\d+\s*(下一页|next|Next|›|»)?\s*$"


def ensure_tables(spark, db: str) -> None:
    """Create the cleaning stage's Hive tables if they do not exist."""
    run_sql_file(spark, "tables", db=db)


def build_raw_feeds(files):
    """Parse a ``binaryFile`` DataFrame (path, length, content, dt) of feed dumps.

    Returns:
        ``(raw_feeds, quarantine)`` DataFrames in the column order of their tables.
    """
    from pyspark.sql import functions as F

    text = F.col("content").cast("string")
    lines = F.split(text, r"\r?\n")
    # Posts are the non-blank lines after the heading.
    body = F.filter(F.slice(lines, 4, 1_000_000), lambda line: F.trim(line) != F.lit(""))
    last = F.element_at(body, -1)
    has_footer = (F.size(body) > 1) & last.rlike(FOOTER_PATTERN)
    parsed = (
        files.withColumn("lines", lines)
        .withColumn("body", body)
        .withColumn(
            "reason",
            F.when(F.col("length") == 0, F.lit("empty file"))
            .when(~F.is_valid_utf8(text), F.lit("invalid UTF-8"))
            .when(
                (F.size("lines") < 3) | (F.trim(F.element_at("lines", 2)) != F.lit("")),
                F.lit("unparseable: expected a banner, a blank line and a heading"),
            )
            .when(F.size("body") == 0, F.lit("unparseable: no posts after the heading")),
        )
    )
    good = parsed.where(F.col("reason").isNull())
    raw_feeds = good.select(
        F.regexp_extract("path", r"([^/]+?)(\.[^./]*)?$", 1).alias("feed_id"),
        F.col("path").alias("source_path"),
        F.trim(F.element_at("lines", 1)).alias("banner"),
        F.trim(F.element_at("lines", 3)).alias("heading"),
        F.when(has_footer, F.slice("body", 1, F.size("body") - 1)).otherwise(F.col("body")).alias("posts"),
        F.when(has_footer, F.trim(last)).alias("footer"),
        F.col("length").alias("bytes"),
        F.array().cast("array<string>").alias("ingest_errors"),
        F.col("dt"),
    )
    quarantine = parsed.where(F.col("reason").isNotNull()).select(
        F.col("path").alias("source"),
        F.lit("file").alias("locator"),
        F.col("reason"),
        F.col("length").alias("bytes"),
        F.lit("ingest_feeds").alias("stage"),
        F.col("dt"),
    )
    return raw_feeds, quarantine


def _drop_partitions(spark, table: str, dt: str, **extra: str) -> None:
    # Dynamic overwrite only replaces partitions that the new output has; a re-run that now
    # quarantines nothing must still remove the old quarantine rows of its dt.
    spec = ", ".join(f"{k}='{v}'" for k, v in {**extra, "dt": dt}.items())
    spark.sql(f"ALTER TABLE {table} DROP IF EXISTS PARTITION ({spec})")


def _spark_uri(column):
    """Spark writes local paths as file:/x; the lake (and quarantine rows) say file:///x."""
    from pyspark.sql import functions as F

    return F.regexp_replace(column, r"^file:/(?!/)", "file:///")


def run_ingest_feeds(spark, *, db: str, lake, partitions: list[str]) -> list[JobCounts]:
    """Ingest the feed dumps of the given dt partitions into ``raw_feeds`` (+ ``quarantine``).

    The input files are listed here, on the driver, because Spark's file sources skip
    empty files silently; listing them lets an empty file become a quarantine row and
    makes "files in" an independent count that the outputs must add up to.

    Returns:
        One checked :class:`JobCounts` per dt (files in = rows + quarantined files).
    """
    from pyspark.sql import functions as F

    ensure_tables(spark, db)
    counts = []
    for dt in sorted(partitions):
        uri = lake.raw("feeds", dt)
        listed = [
            entry for entry in lake.fs.ls(lake.fs_path(uri), detail=True)
            if entry["type"] == "file" and entry["name"].endswith(".txt")
        ]
        empty = [(f"{uri}/{e['name'].rsplit('/', 1)[-1]}", "file", "empty file", 0, "ingest_feeds", dt)
                 for e in listed if e["size"] == 0]
        files = (
            spark.read.format("binaryFile")
            .option("basePath", lake.raw("feeds"))
            .option("pathGlobFilter", "*.txt")
            .load(uri)
            .withColumn("path", _spark_uri(F.col("path")))
            .withColumn("dt", F.lit(dt))
        )
        raw_feeds, quarantine = build_raw_feeds(files)
        if empty:
            schema = "source string, locator string, reason string, bytes bigint, stage string, dt string"
            quarantine = quarantine.unionByName(spark.createDataFrame(empty, schema))
        raw_feeds = raw_feeds.cache()
        quarantine = quarantine.cache()
        for table, extra in ((f"{db}.raw_feeds", {}), (f"{db}.quarantine", {"stage": "ingest_feeds"})):
            _drop_partitions(spark, table, dt, **extra)
        raw_feeds.write.insertInto(f"{db}.raw_feeds", overwrite=True)
        quarantine.write.insertInto(f"{db}.quarantine", overwrite=True)
        counts.append(
            JobCounts("ingest_feeds", dt, rows_in=len(listed), rows_out=raw_feeds.count(),
                      quarantined=quarantine.count()).check()
        )
        raw_feeds.unpersist()
        quarantine.unpersist()
    return counts
