"""Exact and truncation duplicates of one shuffle partition, over whole Arrow columns (no Spark, no Python row loop).

:func:`pipelines.spark.dedup.mark_duplicates` repartitions the cleaned rows by their
first ``prefix_key_chars`` characters and runs :func:`mark_partition` on each partition
inside ``mapInArrow``. Both kinds are local to that key: identical texts share every
prefix, and a truncated excerpt of at least ``prefix_key_chars`` characters shares its
first ``prefix_key_chars`` characters with the text it was cut from. So one shuffle
and two sorts decide both kinds:

1. **exact**: sorted by ``(doc_id, truncated, *order)`` (nulls first, as Spark's
   ascending order), every row after the first of its doc_id is a copy: the complete
   version wins over a truncated one, then the first by the caller's order.
2. **truncation**: the winners have distinct texts. In byte order (= code-point order
   for UTF-8) every text that has ``t`` as a strict prefix sorts right after ``t``, so a
   truncated ``t`` of at least ``key_chars`` characters is cut from a longer text iff
   the next text in that order starts with ``t``. The longest version is the one kept
   (each shorter link of a chain ``t1 ⊂ t2 ⊂ t3`` sees the next one after it).

Two different posts that share a long opening and then diverge are neither: the
shorter one does not end where the other continues (and a complete text is never an
excerpt).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.spark.arrow_text import utf8_buffers

__all__ = ["KIND_FIELD", "WINNER_FIELD", "mark_partition", "prefix_of_next"]

KIND_FIELD = pa.field("kind", pa.string())  # null: not a duplicate (kept, or quarantined)
# The doc_id of the copy a duplicate lost to (its own doc_id for an exact copy; for a
# truncation, the next longer text that starts with it, which may itself lose to a longer one).
WINNER_FIELD = pa.field("winner", pa.string())


@numba.njit(cache=True, nogil=True)
def _prefix_of_next_bytes(offsets, data, candidates):
    """:func:`prefix_of_next` on the UTF-8 buffers: each candidate stops at its first differing byte."""
    n = offsets.size - 1
    found = np.zeros(n, dtype=np.bool_)
    for i in range(n - 1):
        start, length = offsets[i], offsets[i + 1] - offsets[i]
        nxt = offsets[i + 1]
        if not candidates[i] or offsets[i + 2] - nxt <= length:
            continue
        same = True
        for b in range(length):
            if data[start + b] != data[nxt + b]:
                same = False
                break
        found[i] = same
    return found


def prefix_of_next(texts: pa.Array, candidates: np.ndarray) -> np.ndarray:
    """For each ``i`` with ``candidates[i]``: is ``texts[i]`` a strict prefix of ``texts[i + 1]``?

    Args:
        texts: non-null strings (any order; callers pass them sorted).
        candidates: bool mask of the rows to test; the others get False.

    Returns:
        A bool array of ``len(texts)``. Compares bytes in a compiled loop that leaves a
        candidate at its first difference (numpy compared every byte of every candidate,
        half of the partition's marking time).
    """
    offsets, data = utf8_buffers(texts)
    return _prefix_of_next_bytes(offsets, data, np.asarray(candidates, dtype=np.bool_))


def _exact_kinds(doc_ids: pa.Array) -> np.ndarray:
    """Rows (sorted by doc_id, best copy first) whose doc_id equals the previous row's."""
    same = np.zeros(len(doc_ids), dtype=bool)
    if len(doc_ids) > 1:
        same[1:] = pc.fill_null(pc.equal(doc_ids[1:], doc_ids[:-1]), False).to_numpy(zero_copy_only=False)
    return same


def mark_partition(table: pa.Table, *, key_chars: int, order: Sequence[str]) -> pa.Table:
    """Mark the exact and truncation duplicates among the rows of one prefix-key partition.

    Args:
        table: rows with ``doc_id``, ``text``, ``truncated``, ``length`` and the ``order``
            columns; rows with a non-null ``reason`` (if that column exists) are
            quarantined: they are passed through and never compared.
        key_chars: only truncated texts of at least this many characters can be excerpts.
        order: columns that decide which of several exact copies is kept (first wins).

    Returns:
        All rows of ``table`` plus a ``kind`` column ("exact", "truncation" or null) and a
        ``winner`` column (the doc_id the duplicate lost to, else null), the compared rows first, sorted by ``(doc_id, truncated, *order)``, so the same
        partition always comes out in the same order.
    """
    for name in ("doc_id", "text", "truncated", "length", *order):
        if name not in table.schema.names:
            raise ValueError(f"mark_partition: missing column {name!r} (got {table.schema.names})")
    if "reason" in table.schema.names:
        has_reason = table.column("reason").is_valid()
        passed = table.filter(has_reason)
        table = table.filter(pc.invert(has_reason))
    else:
        passed = table.slice(0, 0)
    keys = [(c, "ascending", "at_start") for c in ("doc_id", "truncated", *order)]  # Spark: asc, nulls first
    table = table.take(pc.sort_indices(table, sort_keys=keys))

    kinds = np.full(len(table), None, dtype=object)
    doc_ids = table.column("doc_id").combine_chunks().cast(pa.string())
    exact = _exact_kinds(doc_ids)
    kinds[exact] = "exact"
    winner_of = np.full(len(table), -1, dtype=np.int64)  # row index of the copy each row lost to
    winner_of[exact] = np.flatnonzero(exact)  # an exact copy's winner has its own doc_id
    winners = np.flatnonzero(~exact)
    texts = table.column("text").take(winners)
    by_text = pc.sort_indices(texts).to_numpy()
    cut = pc.and_(pc.fill_null(table.column("truncated"), False),
                  pc.greater_equal(table.column("length"), key_chars))
    cut = pc.fill_null(cut, False).take(winners).to_numpy(zero_copy_only=False)
    truncation = prefix_of_next(texts.take(by_text), cut[by_text])
    excerpts = np.flatnonzero(truncation)
    kinds[winners[by_text[excerpts]]] = "truncation"
    winner_of[winners[by_text[excerpts]]] = winners[by_text[excerpts + 1]]

    lost = winner_of >= 0
    winner = pa.array(np.where(lost, doc_ids.take(np.maximum(winner_of, 0)).to_numpy(zero_copy_only=False),
                               None), pa.string())
    marked = (table.append_column(KIND_FIELD, pa.array(kinds, pa.string()))
              .append_column(WINNER_FIELD, winner))
    passed = (passed.append_column(KIND_FIELD, pa.nulls(len(passed), pa.string()))
              .append_column(WINNER_FIELD, pa.nulls(len(passed), pa.string())))
    return pa.concat_tables([marked, passed.select(marked.schema.names)])
