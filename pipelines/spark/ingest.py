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

from core.accounting import JobCounts
from pipelines.spark.sql_files import run_sql_file

__all__ = [
    "FOOTER_PATTERN",
    "QUARANTINE_SCHEMA",
    "build_raw_feeds",
    "drop_partitions",
    "ensure_tables",
    "list_raw_files",
    "parse_feeds",
    "run_ingest_feeds",
    "spark_uri",
    "split_feeds",
]

QUARANTINE_SCHEMA = "source string, locator string, reason string, bytes bigint, stage string, dt string"

# A pagination footer: page numbers ("1 2 3", "Page 1 of 4"), optionally between a
# "previous page" and a "next page" link ("上一页 1 2 3 下一页", "Page 1 of 4 · Next »").
FOOTER_PATTERN = (
    r"^\s*(?:(?:上一页|[Pp]rev(?:ious)?|[‹«])\s*)?(?:(?:\d+\s+)*\d+|Page \d+ of \d+)\s*(?:·\s*)?"
    r"(?:(?:下一页|[Nn]ext)\s*)?[›»]?\s*$"
)


def ensure_tables(spark, db: str) -> None:
    """Create the cleaning stage's Hive tables if they do not exist (and add new columns)."""
    run_sql_file(spark, "tables", db=db)
    # Lakes made before job_runs broke duplicates down by kind get the column added.
    if "duplicates_by_kind" not in spark.table(f"{db}.job_runs").columns:
        spark.sql(f"ALTER TABLE {db}.job_runs ADD COLUMNS (duplicates_by_kind MAP<STRING, BIGINT>)")


def parse_feeds(files):
    """Parse a ``binaryFile`` DataFrame (path, length, content, dt) of feed dumps, every file once.

    Returns:
        One row per file: the ``raw_feeds`` columns plus ``reason`` (null when the file
        parsed, else why it goes to quarantine). :func:`split_feeds` splits it in two.
    """
    from pyspark.sql import functions as F

    text = F.col("content").cast("string")
    # Split on \r?\n as a plain "\n" after removing each \r that ends a line: the same lines,
    # without compiling a Java regex for every file (String.split's slow path).
    lines = F.split(F.replace(text, F.lit("\r\n"), F.lit("\n")), "\n")
    # Posts are the non-blank lines after the heading.
    body = F.filter(F.slice("lines", 4, 1_000_000), lambda line: F.trim(line) != F.lit(""))
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
    # Column references, not the expressions again: each array is built once per file.
    last = F.element_at("body", -1)
    has_footer = (F.size("body") > 1) & last.rlike(FOOTER_PATTERN)
    return parsed.select(
        F.regexp_extract("path", r"([^/]+?)(\.[^./]*)?$", 1).alias("feed_id"),
        F.col("path").alias("source_path"),
        F.trim(F.element_at("lines", 1)).alias("banner"),
        F.trim(F.element_at("lines", 3)).alias("heading"),
        F.when(has_footer, F.slice("body", 1, F.size("body") - 1)).otherwise(F.col("body")).alias("posts"),
        F.when(has_footer, F.trim(last)).alias("footer"),
        F.col("length").alias("bytes"),
        F.array().cast("array<string>").alias("ingest_errors"),
        F.col("dt"),
        F.col("reason"),
    )


def split_feeds(parsed):
    """Split a :func:`parse_feeds` output into ``(raw_feeds, quarantine)``, in their tables' column order."""
    from pyspark.sql import functions as F

    raw_feeds = parsed.where(F.col("reason").isNull()).drop("reason")
    quarantine = parsed.where(F.col("reason").isNotNull()).select(
        F.col("source_path").alias("source"),
        F.lit("file").alias("locator"),
        F.col("reason"),
        F.col("bytes"),
        F.lit("ingest_feeds").alias("stage"),
        F.col("dt"),
    )
    return raw_feeds, quarantine


def build_raw_feeds(files):
    """Parse a ``binaryFile`` DataFrame (path, length, content, dt) of feed dumps.

    Returns:
        ``(raw_feeds, quarantine)`` DataFrames in the column order of their tables.
    """
    return split_feeds(parse_feeds(files))


def drop_partitions(spark, table: str, dt: str, **extra: str) -> None:
    """Drop one dt's partition(s) of ``table`` (``extra``: further partition columns)."""
    # Dynamic overwrite only replaces partitions that the new output has; a re-run that now
    # quarantines nothing must still remove the old quarantine rows of its dt.
    spec = ", ".join(f"{k}='{v}'" for k, v in {**extra, "dt": dt}.items())
    spark.sql(f"ALTER TABLE {table} DROP IF EXISTS PARTITION ({spec})")


def spark_uri(column):
    """Spark writes local paths as file:/x; the lake (and quarantine rows) say file:///x."""
    from pyspark.sql import functions as F

    return F.regexp_replace(column, r"^file:/(?!/)", "file:///")


def _read_binary(spark, lake, corpus: str, dt: str, paths, *, suffix: str):
    """``binaryFile`` rows (path as the lake writes URIs, modificationTime, length, content, dt)
    of ``paths``: a folder URI or a list of file URIs under ``raw/<corpus>``."""
    from pyspark.sql import functions as F

    return (
        spark.read.format("binaryFile")
        .option("basePath", lake.raw(corpus))
        .option("pathGlobFilter", f"*{suffix}")
        .load(paths)
        .withColumn("path", spark_uri(F.col("path")))
        .withColumn("dt", F.lit(dt))
    )


def list_raw_files(spark, lake, corpus: str, dt: str, *, suffix: str, stage: str):
    """List ``raw/<corpus>/dt=<dt>/*<suffix>`` on the driver and read them as ``binaryFile``.

    Spark's file sources skip empty files silently; listing them here lets an empty
    file become a quarantine row and makes "files in" an independent count.

    Returns:
        ``(listed, files, empty)``: the listed entries (fsspec dicts, each with ``uri``
        added: the file's URI as the ``path`` column and the quarantine say it), a
        DataFrame (path, modificationTime, length, content, dt) of the files, and a
        quarantine DataFrame of the empty files (``None`` if there are none).
    """
    uri = lake.raw(corpus, dt)
    listed = [
        {**entry, "uri": f"{uri}/{entry['name'].rsplit('/', 1)[-1]}"}
        for entry in lake.fs.ls(lake.fs_path(uri), detail=True)
        if entry["type"] == "file" and entry["name"].endswith(suffix)
    ]
    empty = [(e["uri"], "file", "empty file", 0, stage, dt) for e in listed if e["size"] == 0]
    files = _read_binary(spark, lake, corpus, dt, uri, suffix=suffix)
    return listed, files, (spark.createDataFrame(empty, QUARANTINE_SCHEMA) if empty else None)


def _rejected_feeds(spark, lake, dt: str, listed: list[dict], landed: set[str], empty):
    """Quarantine rows of the listed feed dumps that are not in ``landed`` (raw_feeds' source paths).

    Only those files are read and parsed again, to say why; an empty file already has its
    row in ``empty``. A listed file that is neither landed nor given a reason here leaves
    the counts short, and the job's reconciliation fails.
    """
    listed_uris = {e["uri"] for e in listed}
    if stray := landed - listed_uris:
        # Also guards the comparison below: URIs spelled unlike the listing's would mark
        # every file rejected, and the counts would still add up.
        raise RuntimeError(f"raw_feeds dt={dt} holds {len(stray)} source paths that were not "
                           f"listed, e.g. {min(stray)!r}; listed e.g. {min(listed_uris, default=None)!r}")
    rejected = [e["uri"] for e in listed if e["uri"] not in landed and e["size"] > 0]
    quarantine = None
    if rejected:
        files = _read_binary(spark, lake, "feeds", dt, rejected, suffix=".txt")
        quarantine = build_raw_feeds(files)[1]
    if empty is not None:
        quarantine = empty if quarantine is None else quarantine.unionByName(empty)
    return quarantine if quarantine is not None else spark.createDataFrame([], QUARANTINE_SCHEMA)


def run_ingest_feeds(spark, *, db: str, lake, partitions: list[str]) -> list[JobCounts]:
    """Ingest the feed dumps of the given dt partitions into ``raw_feeds`` (+ ``quarantine``).

    The input files are listed on the driver (:func:`list_raw_files`), so an empty
    file becomes a quarantine row and "files in" is a count the outputs must add up to.
    The files are read and parsed once, straight into ``raw_feeds``; only the listed
    files that did not land there (a handful: bad dumps) are read again, for their
    quarantine reason. (Caching the parsed posts for both outputs cost more than the
    parse itself.)

    Returns:
        One checked :class:`JobCounts` per dt (files in = rows + quarantined files).
    """
    from pyspark.sql import functions as F

    ensure_tables(spark, db)
    counts = []
    for dt in sorted(partitions):
        listed, files, empty = list_raw_files(spark, lake, "feeds", dt, suffix=".txt", stage="ingest_feeds")
        raw_feeds, _ = build_raw_feeds(files)
        for table, extra in ((f"{db}.raw_feeds", {}), (f"{db}.quarantine", {"stage": "ingest_feeds"})):
            drop_partitions(spark, table, dt, **extra)
        raw_feeds.write.insertInto(f"{db}.raw_feeds", overwrite=True)
        # rows out: read back from the table just written, not from the parse.
        landed = [row[0] for row in spark.table(f"{db}.raw_feeds").where(F.col("dt") == dt)
                  .select("source_path").collect()]
        quarantine = _rejected_feeds(spark, lake, dt, listed, set(landed), empty).cache()
        quarantine.write.insertInto(f"{db}.quarantine", overwrite=True)
        counts.append(
            JobCounts("ingest_feeds", dt, rows_in=len(listed), rows_out=len(landed),
                      quarantined=quarantine.count()).check()
        )
        quarantine.unpersist()
    return counts
