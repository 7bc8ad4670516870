"""Ingest JSONL articles (``raw/articles/dt=…/*.jsonl``) into the Hive table ``raw_articles``.

One JSON object per line::

    {"id": "a-000001", "title": "…", "tags": ["NLP", "Spark"],
     "sections": [{"heading": "背景", "paragraphs": ["…", "…"]}]}

``build_raw_articles`` holds the logic as Spark built-ins (``from_json`` with a
corrupt-record column, no Python UDF). Nothing is dropped without a row saying why:

* a file that is empty or not UTF-8 becomes one quarantine row (locator ``file``);
* a line that is not a JSON object (a malformed or cut-off line) becomes a quarantine
  row (locator ``line N``, its size in bytes), and the file's other lines still load;
* a JSON object without an ``id`` is quarantined the same way.

Blank lines are not records and are not counted. The unit of the accounting is the
record: a non-blank line of a readable file, or a whole unreadable file.
"""

from __future__ import annotations

from core.accounting import JobCounts, ReconciliationError
from pipelines.spark.ingest import drop_partitions, ensure_tables, list_raw_files

__all__ = ["ARTICLE_SCHEMA", "build_raw_articles", "run_ingest_articles"]

ARTICLE_SCHEMA = (
    "id string, title string, tags array<string>,"
    " sections array<struct<heading: string, paragraphs: array<string>>>,"
    " _corrupt_record string"
)
STAGE = "ingest_articles"


def build_raw_articles(files):
    """Parse a ``binaryFile`` DataFrame (path, length, content, dt) of JSONL article files.

    Returns:
        ``(raw_articles, quarantine, records)``: the first two in the column order of
        their tables; ``records`` has one row per record read (for the accounting).
    """
    from pyspark.sql import functions as F

    text = F.col("content").cast("string")
    checked = files.withColumn(
        "reason",
        F.when(F.col("length") == 0, F.lit("empty file"))
        .when(~F.is_valid_utf8(F.col("content")), F.lit("invalid UTF-8")),
    )
    bad_files = checked.where(F.col("reason").isNotNull()).select(
        F.col("path").alias("source"), F.lit("file").alias("locator"), "reason",
        F.col("length").alias("bytes"), F.lit(STAGE).alias("stage"), "dt",
    )
    lines = (
        checked.where(F.col("reason").isNull())
        .select("path", "dt", F.posexplode(F.split(text, r"\r?\n")).alias("pos", "line"))
        .where(F.trim("line") != F.lit(""))
        .withColumn("line_no", (F.col("pos") + 1).cast("int"))
        .withColumn("json", F.from_json(
            "line", ARTICLE_SCHEMA, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt_record"}))
        .withColumn(
            "reason",
            F.when(F.col("json._corrupt_record").isNotNull(), F.lit("malformed JSON line"))
            .when(F.col("json.id").isNull(), F.lit("unparseable: article without an id")),
        )
    )
    raw_articles = lines.where(F.col("reason").isNull()).select(
        F.col("json.id").alias("article_id"),
        F.col("json.title").alias("title"),
        F.col("json.tags").alias("tags"),
        F.col("json.sections").alias("sections"),
        F.col("path").alias("source_path"),
        F.col("line_no").alias("line"),
        F.octet_length("line").cast("bigint").alias("bytes"),
        "dt",
    )
    bad_lines = lines.where(F.col("reason").isNotNull()).select(
        F.col("path").alias("source"),
        F.concat(F.lit("line "), F.col("line_no").cast("string")).alias("locator"),
        "reason",
        F.octet_length("line").cast("bigint").alias("bytes"),
        F.lit(STAGE).alias("stage"),
        "dt",
    )
    records = lines.select("path").unionByName(bad_files.select(F.col("source").alias("path")))
    return raw_articles, bad_lines.unionByName(bad_files), records


def run_ingest_articles(spark, *, db: str, lake, partitions: list[str]) -> list[JobCounts]:
    """Ingest the JSONL articles of the given dt partitions into ``raw_articles`` (+ ``quarantine``).

    Returns:
        One checked :class:`JobCounts` per dt (records in = rows + quarantined).

    Raises:
        ReconciliationError: the records do not add up, or a listed file was not read.
    """
    ensure_tables(spark, db)
    counts = []
    for dt in sorted(partitions):
        listed, files, empty = list_raw_files(spark, lake, "articles", dt, suffix=".jsonl", stage=STAGE)
        files = files.cache()
        raw_articles, quarantine, records = build_raw_articles(files)
        if empty is not None:
            quarantine = quarantine.unionByName(empty)
        read = files.count() + (empty.count() if empty is not None else 0)
        if read != len(listed):
            raise ReconciliationError(f"{STAGE} dt={dt}: {len(listed)} files listed, {read} read")
        raw_articles = raw_articles.cache()
        quarantine = quarantine.cache()
        drop_partitions(spark, f"{db}.raw_articles", dt)
        drop_partitions(spark, f"{db}.quarantine", dt, stage=STAGE)
        # Sorted so that a re-run of a dt writes the same rows in the same order.
        raw_articles.orderBy("source_path", "line").write.insertInto(f"{db}.raw_articles", overwrite=True)
        quarantine.write.insertInto(f"{db}.quarantine", overwrite=True)
        rows_in = records.count() + (empty.count() if empty is not None else 0)
        counts.append(JobCounts(STAGE, dt, rows_in=rows_in, rows_out=raw_articles.count(),
                                quarantined=quarantine.count()).check())
        for frame in (files, raw_articles, quarantine):
            frame.unpersist()
    return counts
