"""Three kinds of duplicates: two decided in one shuffle, the third by banded MinHash.

1. **exact**: the same ``doc_id`` (hash of the normalized text). The complete version
   wins over a truncated one, then the first by the caller's order.
2. **truncation**: a truncated excerpt whose text (marker removed) is a strict prefix of
   a longer text is a copy of it, cut shorter in another crawl; the longest version is
   kept. Excerpts shorter than ``prefix_key_chars`` are too short to claim identity and stay.
3. **near**: Jaccard similarity of character ``shingle_chars``-grams at or above
   ``near_dup_threshold``. :mod:`pipelines.spark.minhash` computes ``minhash_bands`` band
   keys of ``minhash_rows`` MinHashes each. Two texts are candidates only if a whole band
   matches (Spark ML's ``MinHashLSH`` join matches on any single hash, which on templated
   crawls makes most pairs candidates). Every candidate pair is then checked with the
   exact Jaccard of its shingle sets, so the threshold is exact and only recall is
   probabilistic. Of a pair, the longer text wins (then the smaller doc_id).

How: the rows are repartitioned once by their first ``prefix_key_chars`` characters
(exact copies share it, and so does an excerpt of at least that length with the text it
was cut from); :func:`pipelines.spark.dedup_batches.mark_partition` decides exact and
truncation duplicates per partition in ``mapInArrow`` and the same pass computes the band
keys of the rows it keeps. Only the candidate pairs' texts travel through the joins of
the near check (each band-key partition shingles its texts again: a text is ~7x smaller
than its set of 64-bit hashes). A 64-bit doc_id collision between texts with different
openings would now keep both (odds ~n²/2⁶⁵).

Both ``mapInArrow`` passes hold one whole shuffle partition (a prefix-key partition, a
band-key partition) in one Python worker's memory: on larger data, raise
``spark.sql.shuffle.partitions`` with it (a templated prefix shared by millions of posts
is the case to watch: a single prefix key cannot be split).

Two different posts that share a long opening and then diverge are neither: the
shorter is not a truncated excerpt of the other, and their shingle sets differ.
"""

from __future__ import annotations

from functools import partial

from core.config import CleanConfig
from pipelines.spark.broadcast import broadcast_budget, hint_if_fits

__all__ = ["KINDS", "deduplicate", "mark_duplicates", "near_duplicates"]

KINDS = ("exact", "truncation", "near")
_OUT_BATCH_ROWS = 10_000  # rows per Arrow batch handed back to the JVM (Spark's default size)


def _mark_batches(batches, *, clean: CleanConfig, order: list[str]):
    """``mapInArrow`` body: one whole partition in, its rows with ``kind``, ``winner`` and ``_bands`` out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.spark.dedup_batches import mark_partition
    from pipelines.spark.minhash import band_keys

    batches = list(batches)  # the decision needs every row of the prefix-key partition
    if not batches:
        return
    marked = mark_partition(pa.Table.from_batches(batches), key_chars=clean.prefix_key_chars, order=order)
    for batch in marked.to_batches(max_chunksize=_OUT_BATCH_ROWS):
        kept = batch.column("kind").is_null()
        if "reason" in batch.schema.names:
            kept = pc.and_(kept, batch.column("reason").is_null())
        # Only kept rows are signed: the others get "" (no shingles, so null band keys).
        texts = pc.if_else(kept, batch.column("text"), pa.scalar("", pa.string()))
        bands = band_keys(texts, k=clean.shingle_chars, bands=clean.minhash_bands, rows=clean.minhash_rows)
        yield pa.RecordBatch.from_arrays([*batch.columns, bands], names=[*batch.schema.names, "_bands"])


def _repartition_fixed(df, *columns):
    """``df.repartition`` by ``columns`` into exactly ``spark.sql.shuffle.partitions`` partitions.

    With a number given, adaptive execution does not coalesce the partitions: the
    ``mapInArrow`` passes after these shuffles cost CPU per row, not per byte, and a
    small shuffle coalesced into 3 partitions on 2 cores left one core idle half the time.
    """
    return df.repartition(int(df.sparkSession.conf.get("spark.sql.shuffle.partitions")), *columns)


def _mark_exact_and_truncation(df, clean: CleanConfig, *, order: list[str]):
    """``df`` plus ``kind`` (exact / truncation / null), ``winner`` (the doc_id a duplicate lost
    to) and ``_bands`` (MinHash band keys of the rows still kept, else null): one shuffle by
    prefix key, one ``mapInArrow``."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, LongType, StringType, StructField, StructType

    # A new StructType: StructType.add would change df.schema in place.
    schema = StructType([*df.schema.fields, StructField("kind", StringType()),
                         StructField("winner", StringType()), StructField("_bands", ArrayType(LongType()))])
    # Texts shorter than the key are keyed by themselves; no-text rows all share the null key.
    keyed = _repartition_fixed(df, F.substring("text", 1, clean.prefix_key_chars))
    return keyed.mapInArrow(partial(_mark_batches, clean=clean.model_copy(), order=list(order)), schema)


def _hint_if_small(cached, budget: int):
    """``cached`` (a cached DataFrame, filled here) with a broadcast hint if its rows fit
    ``budget`` bytes (:mod:`pipelines.spark.broadcast`)."""
    return hint_if_fits(cached, cached.count(), budget)


def _group_batches(batches, *, clean: CleanConfig):
    """``mapInArrow`` body: whole band groups in, every similar pair's (loser, winner, similarity) out."""
    import pyarrow as pa

    from pipelines.spark.minhash import group_pairs

    batches = list(batches)  # a group's pairs need all of its rows
    if batches:
        pairs = group_pairs(pa.Table.from_batches(batches), k=clean.shingle_chars,
                            threshold=clean.near_dup_threshold)
        yield from pairs.to_batches()


def near_duplicates(signed, clean: CleanConfig, *, broadcast_bytes: int | None = None):
    """The doc_ids that lose a near-duplicate pair, among ``signed`` (doc_id, length, truncated,
    text, _bands), each with the copy it lost to.

    Rows with null ``_bands`` (no shingles) are never candidates. Most band keys belong to
    one text only, so the steps shrink the data before texts move:

    1. count the texts per band key (a hash aggregate of longs) and keep the shared keys;
    2. join the candidates' texts (only theirs) onto their (band, doc_id) rows;
    3. per band group, :func:`~pipelines.spark.minhash.group_pairs` shingles each text
       once and checks the exact Jaccard of every pair of the group in ``mapInArrow``
       (and drops pairs of excerpts that share an opening, then diverge).
       Texts travel once per shared band key, not once per candidate pair (two million
       pairs among 180k candidates in a 1M-post crawl).

    The shared keys and the candidate ids are broadcast when they fit ``broadcast_bytes``
    (:func:`pipelines.spark.broadcast.broadcast_budget` of the session by default), so the
    other texts never leave their partitions; larger sets are shuffled.

    Returns:
        A cached DataFrame ``(doc_id, winner, similarity)``, one row per losing doc_id,
        already computed: of the copies it lost to, the most similar (then the smallest
        doc_id).
    """
    from pyspark.sql import functions as F

    budget = broadcast_budget(signed.sparkSession) if broadcast_bytes is None else broadcast_bytes
    signed = signed.where(F.col("_bands").isNotNull())
    banded = signed.select("doc_id", F.explode("_bands").alias("_band"))
    shared = banded.groupBy("_band").count().where(F.col("count") > 1).select("_band").cache()
    # Cached: the candidate ids and the final join both read it, and recomputing it means
    # exploding every text's bands again (that cost more than the pair checks).
    members = banded.join(_hint_if_small(shared, budget), "_band", "left_semi").cache()
    ids = members.select("doc_id").distinct().cache()
    texts = signed.join(_hint_if_small(ids, budget), "doc_id", "left_semi").select(
        "doc_id", F.col("length").cast("int").alias("length"), "truncated", "text")
    id_type = signed.schema["doc_id"].dataType.simpleString()
    pairs = (
        _repartition_fixed(members.join(texts, "doc_id").select("_band", "doc_id", "length", "truncated", "text"),
                           "_band")
        .mapInArrow(partial(_group_batches, clean=clean.model_copy()),
                    f"loser {id_type}, winner {id_type}, similarity double")
    )
    best = F.min(F.struct(F.negative("similarity").alias("s"), F.col("winner").alias("w")))
    losers = (
        pairs.groupBy(F.col("loser").alias("doc_id")).agg(best.alias("_best"))
        .select("doc_id", F.col("_best.w").alias("winner"), F.negative("_best.s").alias("similarity"))
        .cache()  # few rows, and counted: the join that marks them can broadcast it
    )
    losers.count()
    for frame in (shared, members, ids):
        frame.unpersist()
    return losers


def mark_duplicates(df, clean: CleanConfig, *, order: list[str]):
    """``df`` with the dedup decision of each row: ``kind`` (null if it is kept), ``winner``
    (the doc_id of the copy it lost to), ``similarity`` (Jaccard of a near pair, 1.0 for an
    exact copy, null for a truncation) and ``_bands`` (the MinHash band keys of a kept row).

    Args:
        df: cleaned rows (doc_id, text, truncated, length, …). Rows with a non-null
            ``reason`` column (if there is one) are quarantined: they pass through with
            a null ``kind`` and are never compared.
        clean: the dedup settings (prefix key, shingles, threshold, bands).
        order: columns that decide which of several exact copies is kept (first wins).

    Returns:
        A DataFrame with the columns of ``df`` plus ``kind``, ``winner``, ``similarity`` and
        ``_bands``. Within each partition the rows come sorted by doc_id, and the
        partitioning depends only on the texts, so a re-run writes the same rows in the
        same order. The decided rows are cached; ``spark.catalog.clearCache()`` frees them.
    """
    from pyspark.sql import functions as F

    # Cached: the near check, the kept rows, the duplicates and the quarantine all read it.
    decided = _mark_exact_and_truncation(df, clean, order=order).cache()
    # Filled now, before the near check: that query's stages run concurrently, and each
    # would otherwise wait for (or recompute) the partitions it reads.
    decided.count()
    still_kept = decided.where(F.col("kind").isNull())
    if "reason" in df.columns:
        still_kept = still_kept.where(F.col("reason").isNull())
    losers = near_duplicates(still_kept, clean).select(
        "doc_id", F.col("winner").alias("_near_winner"), F.col("similarity").alias("_near_sim"))
    near = F.col("kind").isNull() & F.col("_near_winner").isNotNull()
    if "reason" in df.columns:
        near = near & F.col("reason").isNull()
    similarity = (F.when(near, F.col("_near_sim"))
                  .when(F.col("kind") == "exact", F.lit(1.0)).otherwise(F.lit(None).cast("double")))
    return (decided.join(losers, "doc_id", "left")
            .withColumn("similarity", similarity)
            .withColumn("winner", F.when(near, F.col("_near_winner")).otherwise(F.col("winner")))
            .withColumn("kind", F.when(near, F.lit("near")).otherwise(F.col("kind")))
            .withColumn("_bands", F.when(F.col("kind").isNull(), F.col("_bands")))
            .select(*df.columns, "kind", "winner", "similarity", "_bands"))


def deduplicate(df, clean: CleanConfig, *, order: list[str]):
    """Drop the three kinds of duplicates from cleaned rows (see :func:`mark_duplicates`).

    Returns:
        ``(kept, dropped)``: ``kept`` has the columns of ``df``; ``dropped`` has them plus
        ``kind`` (one of :data:`KINDS`). Every input row is in exactly one of them.
    """
    from pyspark.sql import functions as F

    marked = mark_duplicates(df, clean, order=order).drop("winner", "similarity", "_bands")
    return marked.where(F.col("kind").isNull()).drop("kind"), marked.where(F.col("kind").isNotNull())
