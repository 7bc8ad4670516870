"""Dedup across dt partitions: one dt's copies against every copy of every other dt, by index.

A *member* is one ``clean_posts`` row: a distinct copy of a post as one dt's crawls brought
it (the dt's own clean already dropped its exact, truncation and near copies of each other).
Documents are built over the members of every dt (:mod:`pipelines.spark.documents`) from
the relations between members of different dts, which this module finds:

- **exact**: the same text hash (``member_id``, the member's ``clean_posts.doc_id``);
- **truncation**: a truncated member of at least ``prefix_key_chars`` (K) characters is a
  strict prefix of a longer member (either side may be the day's). The index keeps the hash
  of each member's first K, 2K, 4K, … characters (:func:`prefix_keys`); an excerpt of L
  characters and any text it opens share the hash at the longest of those lengths ≤ L, so
  candidates share at least half of the excerpt (a templated 20-character opening shared by
  thousands of posts made every pair of them a candidate), then Spark's ``startswith``
  decides;
- **near**: the two share a MinHash band key, the exact Jaccard of their shingle sets
  reaches ``near_dup_threshold``, and they are not two excerpts that share an opening and
  then diverge (:func:`pipelines.spark.minhash.tail_divergent`), the same rule as a
  dt's own near check.

Each relation is a pure function of the two texts, so which dt's job finds it does not
matter: the pair is found by the job of whichever of the two dts runs later, and a re-run
finds it again. Of a related pair the *winner* is the first by :func:`winner_order`: the longer
copy, then the smaller member_id, the complete over the truncated, the earlier dt.

A day's job joins only its own keys against the index (``dedup_index``: hashes and band
keys, no text); the texts of the other dts are read only for the candidates.
"""

from __future__ import annotations

from functools import partial

from core.accounting import JobCounts
from pipelines.spark.broadcast import broadcast_budget, hint_if_fits

__all__ = ["LINK_COLUMNS", "find_links", "index_rows", "run_link", "winner_order"]

# The columns of dedup_links (after found_dt, its partition column, is added).
LINK_COLUMNS = ("loser_dt", "loser_id", "winner_dt", "winner_id", "kind", "similarity")


def winner_order(prefix: str = ""):
    """The winner order of a member as one comparable struct (smaller wins)."""
    from pyspark.sql import functions as F

    return F.struct(F.negative(F.col(f"{prefix}length")), F.col(f"{prefix}member_id"),
                    F.col(f"{prefix}truncated"), F.col(f"{prefix}dt"))


def prefix_keys(text, length, key_chars: int, max_chars: int):
    """``array<bigint>``: the hash of the first ``key_chars * 2**i`` characters, for every such
    length the text reaches (shortest first; empty below ``key_chars``)."""
    from pyspark.sql import functions as F

    lengths, n = [], key_chars
    while n <= max_chars:
        lengths.append(n)
        n *= 2
    hashes = [F.when(length >= n, F.xxhash64(F.substring(text, 1, n), F.lit(n))) for n in lengths]
    return F.filter(F.array(*hashes), lambda h: h.isNotNull())


def index_rows(kept, clean, *extra: str):
    """``dedup_index`` rows of a dt's kept rows (``clean_posts`` columns plus ``_bands``),
    then the ``extra`` columns of ``kept``."""
    from pyspark.sql import functions as F

    return kept.select(
        F.col("doc_id").alias("member_id"),
        prefix_keys(F.col("text"), F.col("length"), clean.prefix_key_chars, clean.max_chars).alias("prefix_keys"),
        F.coalesce("truncated", F.lit(False)).alias("truncated"), "length",
        F.col("_bands").alias("bands"), "feed_id", "pos", "dt", *extra)


def _pair_batches(batches, *, k: int, threshold: float):
    """``mapInArrow`` body: candidate pairs with both texts in, the near pairs' similarity out
    (:func:`pipelines.spark.minhash.near_pairs`: the rule a dt's own near check applies)."""
    import pyarrow as pa

    from pipelines.spark.minhash import near_pairs

    for batch in batches:
        if batch.num_rows == 0:
            continue
        similarity, near = near_pairs(batch.column("a_text"), batch.column("b_text"), batch.column("a_truncated"),
                                      batch.column("b_truncated"), k=k, threshold=threshold)
        keep = pa.array(near)
        yield pa.RecordBatch.from_arrays([batch.column("pair").filter(keep), pa.array(similarity).filter(keep)],
                                         names=["pair", "similarity"])


def find_links(day, others, texts, clean, *, broadcast_bytes: int | None = None):
    """The relations between a dt's members and the members of other dts.

    Args:
        day: the dt's members: ``dedup_index`` columns plus ``text``.
        others: ``dedup_index`` rows of every other dt (no text).
        texts: ``clean_posts`` of the other dts (``dt``, ``doc_id``, ``text``): only the
            candidates' texts are read from it.
        clean: the dedup settings (prefix key length, shingles, threshold).
        broadcast_bytes: the day's sides (members, their prefix keys, their band rows) are
            broadcast when their estimated size fits this
            (:func:`pipelines.spark.broadcast.broadcast_budget` of the session by default);
            larger ones are shuffled.

    Returns:
        A DataFrame of :data:`LINK_COLUMNS`: one row per related pair, the most specific kind
        (exact, then truncation, then near); ``similarity`` is the Jaccard of a near pair,
        1.0 for an exact one and null for a truncation.
    """
    from pyspark.sql import functions as F

    side = ("member_id", "length", "truncated", "dt")
    a = day.select(*[F.col(c).alias(f"a_{c}") for c in (*side, "prefix_keys", "bands", "text")])
    b = others.select(*[F.col(c).alias(f"b_{c}") for c in (*side, "prefix_keys", "bands")])
    budget = broadcast_budget(day.sparkSession) if broadcast_bytes is None else broadcast_bytes
    def items(column: str):  # size(null) is -1 or null, depending on the SQL mode
        return F.sum(F.when(F.col(column).isNotNull(), F.size(column)).otherwise(0))

    sizes = day.agg(F.count(F.lit(1)).alias("rows"), items("prefix_keys").alias("keys"),
                    items("bands").alias("bands")).first()  # one pass: each side's rows
    rows, keys, bands = (int(sizes[c] or 0) for c in ("rows", "keys", "bands"))
    a_side = a.select(*[f"a_{c}" for c in side])
    b_side = b.select(*[f"b_{c}" for c in side])

    exact = (b_side.join(hint_if_fits(a_side, rows, budget), F.col("a_member_id") == F.col("b_member_id"))
             .select(*[f"{s}_{c}" for s in "ab" for c in side])
             .withColumn("kind", F.lit("exact")).withColumn("similarity", F.lit(1.0)))

    # An excerpt's longest prefix key against every prefix key of the longer texts, both ways.
    key = clean.prefix_key_chars

    def excerpts(frame, s: str):
        cut = F.col(f"{s}_truncated") & (F.col(f"{s}_length") >= key)
        return frame.where(cut).select(*[f"{s}_{c}" for c in side],
                                       F.element_at(f"{s}_prefix_keys", -1).alias("_key"))

    def opened(frame, s: str):
        return frame.select(*[f"{s}_{c}" for c in side], F.explode(f"{s}_prefix_keys").alias("_key"))

    day_cut = hint_if_fits(excerpts(a, "a"), rows, budget)  # at most one key per member
    day_keys = hint_if_fits(opened(a, "a"), keys, budget)
    prefix_pairs = (opened(b, "b").join(day_cut, "_key").where(F.col("b_length") > F.col("a_length"))
                    .unionByName(excerpts(b, "b").join(day_keys, "_key")
                                 .where(F.col("a_length") > F.col("b_length")))
                    .select(*[f"{s}_{c}" for s in "ab" for c in side]))

    a_bands = a.select("a_member_id", F.explode("a_bands").alias("band"))
    b_bands = b.where(F.col("b_bands").isNotNull()).select("b_member_id", "b_dt",
                                                          F.explode("b_bands").alias("band"))
    band_pairs = (b_bands.join(hint_if_fits(a_bands, bands, budget), "band")
                  .select("a_member_id", "b_member_id", "b_dt").distinct()
                  .where(F.col("a_member_id") != F.col("b_member_id")))
    band_pairs = band_pairs.join(a_side, "a_member_id").join(b_side, ["b_member_id", "b_dt"])

    # One read of the other dts' texts, for both kinds of candidate.
    candidates = (prefix_pairs.withColumn("_prefix", F.lit(True))
                  .unionByName(band_pairs.withColumn("_prefix", F.lit(False))))
    wanted = candidates.select(F.col("b_dt").alias("dt"), F.col("b_member_id").alias("doc_id")).distinct()
    b_texts = (texts.select("dt", "doc_id", "text").join(wanted, ["dt", "doc_id"], "left_semi")
               .select(F.col("dt").alias("b_dt"), F.col("doc_id").alias("b_member_id"),
                       F.col("text").alias("b_text")))
    with_texts = (candidates.join(b_texts, ["b_dt", "b_member_id"])
                  .join(a.select("a_member_id", "a_text"), "a_member_id")).cache()

    longer_text = F.when(F.col("a_length") < F.col("b_length"), F.col("b_text")).otherwise(F.col("a_text"))
    shorter_text = F.when(F.col("a_length") < F.col("b_length"), F.col("a_text")).otherwise(F.col("b_text"))
    truncation = (with_texts.where(F.col("_prefix") & F.startswith(longer_text, shorter_text))
                  .select(*[f"{s}_{c}" for s in "ab" for c in side])
                  .withColumn("kind", F.lit("truncation"))
                  .withColumn("similarity", F.lit(None).cast("double")))

    pair_key = F.struct(*[F.col(f"{s}_{c}") for s in "ab" for c in side])
    near_in = with_texts.where(~F.col("_prefix")).select(
        pair_key.alias("pair"), "a_text", "b_text", "a_truncated", "b_truncated")
    pair_type = near_in.schema["pair"].dataType.simpleString()
    near_out = near_in.mapInArrow(
        partial(_pair_batches, k=clean.shingle_chars, threshold=clean.near_dup_threshold),
        f"pair {pair_type}, similarity double")
    near = near_out.select(*[F.col(f"pair.{s}_{c}").alias(f"{s}_{c}") for s in "ab" for c in side],
                           F.lit("near").alias("kind"), "similarity")

    related = exact.unionByName(truncation).unionByName(near)
    rank = F.when(F.col("kind") == "exact", 0).when(F.col("kind") == "truncation", 1).otherwise(2)
    pair = [f"{s}_{c}" for s in "ab" for c in ("member_id", "dt")]
    best = related.withColumn("_rank", rank).groupBy(*pair).agg(
        F.min(F.struct("_rank", "kind", "similarity", *[f"{s}_{c}" for s in "ab" for c in ("length", "truncated")]))
        .alias("_r"))
    flat = best.select(*pair, *[F.col(f"_r.{s}_{c}").alias(f"{s}_{c}") for s in "ab"
                                for c in ("length", "truncated")], "_r.kind", "_r.similarity")
    a_wins = winner_order("a_") < winner_order("b_")
    return flat.select(
        F.when(a_wins, F.col("b_dt")).otherwise(F.col("a_dt")).alias("loser_dt"),
        F.when(a_wins, F.col("b_member_id")).otherwise(F.col("a_member_id")).alias("loser_id"),
        F.when(a_wins, F.col("a_dt")).otherwise(F.col("b_dt")).alias("winner_dt"),
        F.when(a_wins, F.col("a_member_id")).otherwise(F.col("b_member_id")).alias("winner_id"),
        "kind", "similarity")


def run_link(spark, *, db: str, dt: str, day, clean) -> int:
    """Find and write the relations of dt ``dt``'s members (``day``: its kept rows with
    ``_bands``) with every other dt's, then commit the dt's ``dedup_index`` partition.

    The dt's index partition is dropped first and written last: until it is back, the dt
    has no members, so a failure in between leaves the documents without this dt (never
    half of it); the re-run replaces the dt's links and index whole.

    Returns:
        The number of links written.
    """
    from pyspark.sql import functions as F

    from pipelines.spark.ingest import drop_partitions

    index = f"{db}.dedup_index"
    drop_partitions(spark, index, dt)
    spark.sql(f"ALTER TABLE {db}.dedup_links DROP IF EXISTS PARTITION (found_dt='{dt}')")
    members = index_rows(day, clean, "text").cache()  # the index rows carry no text; links need it
    others = spark.table(index).where(F.col("dt") != dt)
    texts = spark.table(f"{db}.clean_posts").where(F.col("dt") != dt)
    links = find_links(members, others, texts, clean).withColumn("found_dt", F.lit(dt)).cache()
    written = links.count()
    links.write.insertInto(f"{db}.dedup_links", overwrite=True)
    members.drop("text").select(*spark.table(index).columns).write.insertInto(index, overwrite=True)
    links.unpersist()
    members.unpersist()
    JobCounts("dedup_index", dt, rows_in=day.count(), rows_out=spark.table(index).where(F.col("dt") == dt).count()
              ).check()
    return written
