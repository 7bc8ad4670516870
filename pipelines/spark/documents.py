"""The ``documents`` table: every post once, however many dts' crawls brought it.

Built from the members (``dedup_index``: one row per ``clean_posts`` row of every committed
dt) and the relations between members of different dts (``dedup_links``, found by
:mod:`pipelines.spark.crossday`):

1. each member that loses a relation points at its best winner (the first of its winners
   by :func:`pipelines.spark.crossday.winner_order`: the longest copy, then the smallest member_id,
   the complete over the truncated, the earlier dt);
2. following the pointers ends at a member that loses nothing: the *root*, whose text is
   the document's (the longest, least truncated copy);
3. a document is a root and every member that reaches it. Its identity is its first-seen
   copy, the first by (dt, feed_id, pos): ``doc_id`` is that copy's text hash, so a later,
   fuller copy upgrades the text but keeps the doc_id (and so the dataset split), and a
   backfilled older copy becomes the identity, as if the dts had been processed in order.

Every step is a function of the set of members and relations, never of the order the dts
were processed in: days in any order, backfills, re-runs or all at once give the same
rows. Both tables are rewritten whole (narrow rows, one pass); ``_SNAPSHOT.json`` beside the
documents names the dts and counts they were built from (:func:`snapshot`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from core.accounting import JobCounts
from pipelines.spark.crossday import LINK_COLUMNS, winner_order

__all__ = ["DocumentsBuild", "rebuild_documents", "roots_of"]


@dataclass(frozen=True)
class DocumentsBuild:
    """What a rebuild produced: counts per dt and the snapshot that names its inputs."""

    members: int
    documents: int
    seen_by_dt: dict[str, int] = field(default_factory=dict)  # members that are copies, per dt
    members_by_dt: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> dict:
        """The inputs of this build as JSON: its id is a hash of them (no clock, no order)."""
        body = {"dts": sorted(self.members_by_dt), "members_by_dt": dict(sorted(self.members_by_dt.items())),
                "members": self.members, "documents": self.documents}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        return {"snapshot": digest, **body}

    def counts(self) -> JobCounts:
        """members in = documents out + copies seen in another dt."""
        return JobCounts("documents", "all", rows_in=self.members, rows_out=self.documents,
                         duplicates_dropped=self.members - self.documents,
                         duplicates_by_kind={"seen": self.members - self.documents}).check()


def roots_of(losers: np.ndarray, winners: np.ndarray) -> np.ndarray:
    """For each loser, the end of its winner chain (pointer jumping over integer keys).

    Args:
        losers, winners: equal-length arrays of integer keys; ``winners[i]`` is the one
            winner of ``losers[i]`` (a loser appears once). The winner order is strict, so
            the chains have no cycles.

    Returns:
        The root key of each ``losers[i]``.

    Raises:
        ValueError: a loser appears twice, or the pointers cycle.
    """
    keys, inverse = np.unique(np.concatenate([losers, winners]), return_inverse=True)
    n = len(losers)
    parent = np.arange(len(keys))
    if len(np.unique(inverse[:n])) != n:
        raise ValueError("roots_of: a loser has more than one winner")
    parent[inverse[:n]] = inverse[n:]
    for _ in range(64):  # each round halves every chain: 64 rounds cover any length
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return keys[parent[inverse[:n]]]
        parent = grand
    raise ValueError("roots_of: the winner pointers form a cycle")


def _best_winners(spark, members, links):
    """One row per losing member: its best winner, with the relation's kind and similarity."""
    from pyspark.sql import functions as F

    keys = members.select("dt", "member_id")
    links = (links.select(*LINK_COLUMNS).distinct()
             # A re-run may have removed a member: its links no longer count.
             .join(keys.toDF("loser_dt", "loser_id"), ["loser_dt", "loser_id"], "left_semi")
             .join(keys.toDF("winner_dt", "winner_id"), ["winner_dt", "winner_id"], "left_semi"))
    winner = members.select(*[F.col(c).alias(f"w_{c}") for c in ("dt", "member_id", "length", "truncated")])
    best = F.min(F.struct(winner_order("w_").alias("order"), "winner_dt", "winner_id", "kind", "similarity"))
    return (links.join(winner, (F.col("winner_dt") == F.col("w_dt")) & (F.col("winner_id") == F.col("w_member_id")))
            .groupBy("loser_dt", "loser_id").agg(best.alias("_b"))
            .select("loser_dt", "loser_id", "_b.winner_dt", "_b.winner_id", "_b.kind", "_b.similarity"))


def _roots(spark, best):
    """``(dt, member_id, root_dt, root_id)`` of every losing member (on the driver: narrow rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = best.select("loser_dt", "loser_id", "winner_dt", "winner_id").toArrow()
    schema = "dt string, member_id string, root_dt string, root_id string"
    if table.num_rows == 0:
        return spark.createDataFrame([], schema)
    loser = pc.binary_join_element_wise(table["loser_dt"], table["loser_id"], "/")
    winner = pc.binary_join_element_wise(table["winner_dt"], table["winner_id"], "/")
    names = pc.unique(pa.concat_arrays([loser.combine_chunks(), winner.combine_chunks()]))
    codes = [pc.index_in(side, value_set=names).to_numpy(zero_copy_only=False) for side in (loser, winner)]
    root = names.take(pa.array(roots_of(*codes)))
    parts = pc.split_pattern(root, "/", max_splits=1)
    rows = pa.table({"dt": table["loser_dt"], "member_id": table["loser_id"],
                     "root_dt": pc.list_element(parts, 0), "root_id": pc.list_element(parts, 1)})
    return spark.createDataFrame(rows, schema)


def rebuild_documents(spark, *, db: str) -> DocumentsBuild:
    """Rewrite ``document_members`` and ``documents`` from the index and the links.

    Returns:
        The counts: members = documents + copies (checked), per dt.
    """
    from pyspark.sql import functions as F

    members = spark.table(f"{db}.dedup_index").select("dt", "member_id", "length", "truncated",
                                                      "feed_id", "pos").cache()
    best = _best_winners(spark, members, spark.table(f"{db}.dedup_links")).cache()
    roots = _roots(spark, best)
    assigned = (members.join(roots, ["dt", "member_id"], "left")
                .withColumn("root_dt", F.coalesce("root_dt", "dt"))
                .withColumn("root_id", F.coalesce("root_id", "member_id")))
    identity = F.min(F.struct("dt", "feed_id", "pos", "member_id"))
    groups = assigned.groupBy("root_dt", "root_id").agg(
        identity.alias("_first"), F.max("dt").alias("last_seen_dt"), F.count("*").alias("times_seen"))
    groups = groups.select("root_dt", "root_id", F.col("_first.member_id").alias("doc_id"),
                           F.col("_first.dt").alias("first_seen_dt"), "last_seen_dt", "times_seen").cache()

    doc_members = (assigned.join(groups.select("root_dt", "root_id", "doc_id"), ["root_dt", "root_id"])
                   .join(best.withColumnRenamed("loser_dt", "dt").withColumnRenamed("loser_id", "member_id"),
                         ["dt", "member_id"], "left")
                   .select("member_id", "doc_id",
                           F.when(F.col("winner_id").isNull(), F.lit("kept")).otherwise(F.lit("seen")).alias("role"),
                           "winner_dt", "winner_id", "kind", "similarity", "dt"))
    posts = spark.table(f"{db}.clean_posts").select(
        F.col("dt").alias("root_dt"), F.col("doc_id").alias("root_id"), "text", "truncated", "lang",
        "topic", "length", "feed_id", "pos")
    documents = groups.join(posts, ["root_dt", "root_id"]).select(
        "doc_id", "text", "truncated", "lang", "topic", "length", "feed_id", "pos",
        F.col("root_dt").alias("source_dt"), "last_seen_dt", "times_seen", "first_seen_dt")

    for table, rows in (("document_members", doc_members), ("documents", documents)):
        spark.sql(f"TRUNCATE TABLE {db}.{table}")
        rows.write.insertInto(f"{db}.{table}", overwrite=True)
    written = spark.table(f"{db}.document_members")
    by_dt = {r["dt"]: (int(r["members"]), int(r["seen"])) for r in written.groupBy("dt").agg(
        F.count("*").alias("members"), F.sum(F.when(F.col("role") == "seen", 1).otherwise(0)).alias("seen")
    ).collect()}
    build = DocumentsBuild(
        members=members.count(), documents=spark.table(f"{db}.documents").count(), seen_by_dt={dt: s for dt, (_, s) in by_dt.items()},
        members_by_dt={dt: m for dt, (m, _) in by_dt.items()})
    members.unpersist()
    best.unpersist()
    groups.unpersist()
    if sum(build.members_by_dt.values()) != build.members:
        raise RuntimeError(f"documents: {build.members} members but {sum(build.members_by_dt.values())} "
                           "assigned to a document")
    build.counts()
    return build
