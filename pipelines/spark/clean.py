"""Explode feed dumps into posts and clean the posts into ``clean_posts``.

``run_explode`` runs ``sql/explode_posts.sql`` (``LATERAL VIEW posexplode``).
``build_clean_posts`` normalizes each post with :func:`pipelines.spark.normalize.normalize`
(NFKC, placeholders, whitespace, truncation flag, language, length bounds, topic, doc_id)
and marks duplicates with :func:`pipelines.spark.dedup.mark_duplicates` (exact, truncation,
near), keeping the first copy by (feed_id, pos); :func:`split_cleaned` splits the one marked
DataFrame into kept rows, quarantine and duplicates.
"""

from __future__ import annotations

from core.accounting import JobCounts
from core.config import CleanConfig
from pipelines.spark.dedup import KINDS, mark_duplicates
from pipelines.spark.ingest import drop_partitions, ensure_tables
from pipelines.spark.normalize import TRUNCATION_MARKER, normalize, quarantine_rows
from pipelines.spark.sql_files import run_sql_file

__all__ = [
    "TRUNCATION_MARKER",
    "audit_rows",
    "build_clean_posts",
    "count_by_kind",
    "run_clean",
    "run_explode",
    "split_cleaned",
    "write_cleaned",
]

CLEAN_POSTS_COLUMNS = ("doc_id", "text", "truncated", "lang", "topic", "length", "feed_id", "pos", "dt")


def build_clean_posts(posts, clean: CleanConfig):
    """Clean a ``posts`` DataFrame (feed_id, pos, text, dt).

    Returns:
        ``(clean_posts, quarantine, duplicates)``: the first two in their tables' column
        order; ``duplicates`` holds the dropped duplicates with their ``kind``.
    """
    from pyspark.sql import functions as F

    return split_cleaned(
        normalize(posts, clean), clean, order=["feed_id", "pos"], columns=CLEAN_POSTS_COLUMNS,
        stage="clean_posts", source=F.col("feed_id"),
        locator=F.concat(F.lit("pos "), F.col("pos").cast("string")))


def split_cleaned(staged, clean: CleanConfig, *, order: list[str], columns, stage: str, source, locator):
    """Deduplicate a :func:`~pipelines.spark.normalize.normalize` output and split it three ways.

    Args:
        staged: normalized rows, the quarantined ones (non-null ``reason``) included: one
            pass (:func:`pipelines.spark.dedup.mark_duplicates`) decides every row.
        clean: the dedup settings.
        order: columns that decide which of several exact copies is kept (first wins).
        columns: the kept rows' columns, in their table's order.
        stage, source, locator: the quarantine rows' stage and where a row came from.

    Returns:
        ``(kept, quarantine, duplicates)``: ``kept`` has ``columns`` plus ``_bands`` (the
        MinHash band keys the cross-dt index stores); ``duplicates`` has the columns of the
        good rows plus ``kind``, ``winner`` (the doc_id it lost to) and ``similarity``.
    """
    from pyspark.sql import functions as F

    marked = mark_duplicates(staged, clean, order=order)
    good = F.col("reason").isNull()
    quarantine = quarantine_rows(marked, stage=stage, source=source, locator=locator)
    kept = marked.where(good & F.col("kind").isNull()).select(*columns, "_bands")
    duplicates = marked.where(good & F.col("kind").isNotNull()).drop("reason", "_bands")
    return kept, quarantine, duplicates


def count_by_kind(duplicates) -> dict[str, int]:
    """Count dropped duplicates per kind; every kind of :data:`KINDS` appears (0 if none)."""
    found = {row["kind"]: row["count"] for row in duplicates.groupBy("kind").count().collect()}
    return {kind: int(found.get(kind, 0)) for kind in KINDS}


def run_explode(spark, *, db: str, dt: str) -> int:
    """Explode ``raw_feeds`` of one dt into ``posts``; returns the posts written."""
    ensure_tables(spark, db)
    drop_partitions(spark, f"{db}.posts", dt)
    run_sql_file(spark, "explode_posts", args={"dt": dt}, db=db)
    expected = spark.sql(
        f"SELECT COALESCE(SUM(size(posts)), 0) FROM {db}.raw_feeds WHERE dt = :dt", args={"dt": dt}
    ).first()[0]
    written = spark.table(f"{db}.posts").where(f"dt = '{dt}'").count()
    JobCounts("explode_posts", dt, rows_in=int(expected), rows_out=written).check()
    return written


def write_cleaned(spark, *, db: str, dt: str, table: str, kept, quarantine, duplicates,
                  rows_in: int, clear_cache: bool = True) -> JobCounts:
    """Replace ``table``'s and its quarantine's dt partitions; return the checked counts.

    With ``clear_cache=False`` the dedup decision stays cached for the caller's next step
    (the cross-dt links read the kept rows again); it then calls ``spark.catalog.clearCache()``.
    """
    from pyspark.sql import functions as F

    drop_partitions(spark, f"{db}.{table}", dt)
    drop_partitions(spark, f"{db}.quarantine", dt, stage=table)
    # No global sort: mark_duplicates partitions by text and sorts each partition by
    # doc_id, so a re-run writes the same rows in the same order.
    kept.drop("_bands").write.insertInto(f"{db}.{table}", overwrite=True)
    quarantine.write.insertInto(f"{db}.quarantine", overwrite=True)
    by_kind = count_by_kind(duplicates)
    # rows out and quarantined: read back from the partitions just written (Parquet
    # footers), which also spares two more passes over the marked rows.
    written = spark.table(f"{db}.{table}").where(F.col("dt") == dt).count()
    quarantined = spark.table(f"{db}.quarantine").where((F.col("stage") == table) & (F.col("dt") == dt)).count()
    counts = JobCounts(
        table, dt, rows_in=rows_in, rows_out=written, quarantined=quarantined,
        duplicates_dropped=sum(by_kind.values()), duplicates_by_kind=by_kind,
    ).check()
    if clear_cache:
        spark.catalog.clearCache()
    return counts


def audit_rows(duplicates):
    """``duplicates`` table rows: one per dropped copy, with the copy it lost to."""
    from pyspark.sql import functions as F

    return duplicates.select("feed_id", "pos", F.col("doc_id").alias("member_id"), "kind",
                             F.col("winner").alias("winner_id"), "similarity", "dt")


def run_clean(spark, *, db: str, dt: str, clean: CleanConfig) -> JobCounts:
    """Clean the posts of one dt into ``clean_posts``, ``quarantine`` and the ``duplicates``
    audit, then link its posts with every other dt's (:func:`pipelines.spark.crossday.run_link`).

    The dt's ``dedup_index`` partition is dropped first and committed last, so the
    documents (:func:`pipelines.spark.documents.rebuild_documents`) see this dt whole or not
    at all.

    Returns:
        The dt's checked counts within the dt (exact, truncation, near); the copies of posts
        of other dts (kind ``seen``) are known once the documents are rebuilt.
    """
    from pyspark.sql import functions as F

    from pipelines.spark.crossday import run_link

    ensure_tables(spark, db)
    drop_partitions(spark, f"{db}.dedup_index", dt)
    posts = spark.table(f"{db}.posts").where(F.col("dt") == dt)
    kept, quarantine, duplicates = build_clean_posts(posts, clean)
    drop_partitions(spark, f"{db}.duplicates", dt)
    audit_rows(duplicates).write.insertInto(f"{db}.duplicates", overwrite=True)
    counts = write_cleaned(spark, db=db, dt=dt, table="clean_posts", kept=kept, quarantine=quarantine,
                           duplicates=duplicates, rows_in=posts.count(), clear_cache=False)
    try:
        run_link(spark, db=db, dt=dt, day=kept, clean=clean)
    finally:
        spark.catalog.clearCache()
    return counts
