"""Why a post was dropped or kept: ``shardforge dedup explain DOC_ID|TEXT-PREFIX``.

Reads the audit the clean stage leaves (no recomputation): ``duplicates`` (a dt's own copies
it dropped, each with the copy it lost to), ``document_members`` (every kept copy and the
document it belongs to, with the relation that made it a copy) and ``documents``.

A query of 6 to 16 hex digits is a prefix of a member_id (a copy's text hash) or a doc_id;
anything else is the opening of a post's text, matched against the raw posts (as crawled)
and the cleaned texts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Explanation", "explain"]

_HEX = re.compile(r"^[0-9a-f]{6,16}$")


@dataclass(frozen=True)
class Explanation:
    """The story of one copy: where it came from and what became of it, as lines to print."""

    copy: str  # "dt=… feed … pos …" or "member … of dt=…"
    lines: tuple[str, ...]
    doc_id: str | None  # the document it ended in (None: quarantined, or not found)


def _document_line(doc) -> str:
    return (f"document {doc['doc_id']}: first seen {doc['first_seen_dt']}, last seen {doc['last_seen_dt']}, "
            f"{doc['times_seen']} cop{'y' if doc['times_seen'] == 1 else 'ies'}; text from dt={doc['source_dt']} "
            f"feed {doc['feed_id']} pos {doc['pos']} ({doc['length']} chars"
            f"{', truncated' if doc['truncated'] else ''}): {doc['text'][:80]!r}")


def _similarity(value) -> str:
    return "" if value is None else f", Jaccard {value:.3f}"


def _member_story(spark, db: str, dt: str, member_id: str, lines: list[str]) -> str | None:
    """Append what became of member (dt, member_id); returns its doc_id."""
    from pyspark.sql import functions as F

    rows = (spark.table(f"{db}.document_members").where((F.col("dt") == dt) & (F.col("member_id") == member_id))
            .collect())
    if not rows:
        lines.append(f"member {member_id} of dt={dt}: not in the documents (its dt is not committed: re-run clean)")
        return None
    m = rows[0]
    if m["role"] == "kept":
        lines.append(f"member {member_id} of dt={dt}: kept, its text is the document's")
    else:
        lines.append(f"member {member_id} of dt={dt}: a copy ({m['kind']}{_similarity(m['similarity'])}) of "
                     f"member {m['winner_id']} of dt={m['winner_dt']}")
    doc = spark.table(f"{db}.documents").where(F.col("doc_id") == m["doc_id"]).collect()
    if doc:
        lines.append(_document_line(doc[0].asDict()))
    return m["doc_id"]


def _dropped_story(spark, db: str, row, lines: list[str]) -> str | None:
    """A copy its own dt dropped: follow what it lost to within the dt to a kept copy (a
    member), then that member's story."""
    from pyspark.sql import functions as F

    dt, current, visited = row["dt"], row, set()
    while current["winner_id"] not in visited:
        visited.add(current["winner_id"])
        lines.append(f"dropped by the clean of dt={dt}: {current['kind']}{_similarity(current['similarity'])} "
                     f"of member {current['winner_id']}")
        # The copy it lost to was kept (a member), or lost in turn (the first copy of a text
        # is dropped only as a truncation or near duplicate, never as an exact one).
        nxt = (spark.table(f"{db}.duplicates")
               .where((F.col("dt") == dt) & (F.col("member_id") == current["winner_id"]) & (F.col("kind") != "exact"))
               .limit(1).collect())
        if not nxt:
            break
        current = nxt[0]
    return _member_story(spark, db, dt, current["winner_id"], lines)


def explain(spark, *, db: str, query: str, limit: int = 10) -> list[Explanation]:
    """Explain every copy the query names (at most ``limit``), oldest dt first.

    Raises:
        ValueError: an empty query.
    """
    from pyspark.sql import functions as F

    query = query.strip()
    if not query:
        raise ValueError("dedup explain: give a doc_id (6-16 hex digits) or the opening of a post's text")
    out: list[Explanation] = []
    if _HEX.match(query):
        members = (spark.table(f"{db}.document_members")
                   .where(F.col("member_id").startswith(query) | F.col("doc_id").startswith(query))
                   .orderBy("dt", "member_id").limit(limit).collect())
        for m in members:
            lines: list[str] = []
            doc_id = _member_story(spark, db, m["dt"], m["member_id"], lines)
            out.append(Explanation(f"member {m['member_id']} of dt={m['dt']}", tuple(lines), doc_id))
        dropped = (spark.table(f"{db}.duplicates").where(F.col("member_id").startswith(query))
                   .orderBy("dt", "feed_id", "pos").limit(limit).collect())
    else:
        copies = (spark.table(f"{db}.posts").where(F.col("text").startswith(query))
                  .select("dt", "feed_id", "pos").unionByName(
                      spark.table(f"{db}.clean_posts").where(F.col("text").startswith(query))
                      .select("dt", "feed_id", "pos")).distinct())
        kept = (spark.table(f"{db}.clean_posts").join(copies, ["dt", "feed_id", "pos"])
                .orderBy("dt", "feed_id", "pos").limit(limit).collect())
        for row in kept:
            lines = [f"kept by the clean of dt={row['dt']} as member {row['doc_id']}"]
            doc_id = _member_story(spark, db, row["dt"], row["doc_id"], lines)
            out.append(Explanation(f"dt={row['dt']} feed {row['feed_id']} pos {row['pos']}", tuple(lines), doc_id))
        dropped = (spark.table(f"{db}.duplicates").join(copies, ["dt", "feed_id", "pos"])
                   .orderBy("dt", "feed_id", "pos").limit(limit).collect())
        quarantined = (spark.table(f"{db}.quarantine").where(F.col("stage") == "clean_posts")
                       .join(copies.select(F.col("dt"), F.col("feed_id").alias("source"),
                                           F.concat(F.lit("pos "), F.col("pos").cast("string")).alias("locator")),
                             ["dt", "source", "locator"]).limit(limit).collect())
        for q in quarantined:
            out.append(Explanation(f"dt={q['dt']} feed {q['source']} {q['locator']}",
                                   (f"quarantined by the clean of dt={q['dt']}: {q['reason']}",), None))
    for row in dropped:
        lines = []
        doc_id = _dropped_story(spark, db, row, lines)
        out.append(Explanation(f"dt={row['dt']} feed {row['feed_id']} pos {row['pos']}", tuple(lines), doc_id))
    return out[:limit]
