"""The text normalization every cleaned table shares (posts, paragraphs): whole Arrow batches, not rows.

:func:`normalize_batch` is a pure function from a ``pyarrow.RecordBatch`` with a
``text`` column to the cleaned columns, built only from ``pyarrow.compute`` kernels
(RE2 regexes, utf8proc's NFKC), so it runs in C++ over the whole batch and can be
tested without Spark. :func:`normalize` runs it inside ``mapInArrow`` (the JVM's SQL
functions have no NFKC, and forty ``instr`` calls per row for the topic rules cost more
than the rest of the job together):

1. NFKC, placeholder removal (``[公式]``…, from config), whitespace folding;
2. ``truncated`` when the excerpt was cut with ``...``/``…`` (the marker removed);
3. ``lang`` by the ratio of Han to Latin letters (zh / en / mixed);
4. ``reason`` for rows outside the length bounds or without text (→ quarantine);
5. ``topic`` from keyword rules (case-insensitive substring; the first rule that matches wins);
6. ``doc_id`` = first 16 hex digits of sha256(normalized text) (Spark's ``sha2``, in the JVM).
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import CleanConfig
from pipelines.spark.arrow_text import utf8_buffers
from pipelines.spark.script_kernels import han_and_latin_counts

__all__ = ["CLEAN_COLUMNS", "TRUNCATION_MARKER", "normalize", "normalize_batch", "quarantine_rows"]

TRUNCATION_MARKER = r"(\.\.\.|…)\s*$"
# The columns normalize() adds, in the order every clean_* table starts with.
CLEAN_COLUMNS = ("doc_id", "text", "truncated", "lang", "topic", "length")
# What normalize_batch adds (doc_id comes after, from the JVM's sha2).
_BATCH_COLUMNS = (("text", pa.string()), ("truncated", pa.bool_()), ("lang", pa.string()),
                  ("topic", pa.string()), ("length", pa.int32()), ("reason", pa.string()))


def _topic_patterns(clean: CleanConfig) -> list[tuple[str, str]]:
    """(topic, RE2 alternation of its lowercased, escaped keywords), in rule order."""
    return [(topic, "|".join(re.escape(k.lower()) for k in keywords))
            for topic, keywords in clean.topics.items() if keywords]


@functools.cache
def _han_table() -> np.ndarray:
    """``table[cp]``: is code point ``cp`` in RE2's ``\\p{Han}``? (bool, 0x110000 entries).

    Built once per Python worker by asking RE2 about every code point from U+0800 (Han has
    none in 1- or 2-byte UTF-8) to U+3FFFF (Unicode assigns no Han beyond plane 3), so it
    agrees with the regex.
    """
    points = np.concatenate([np.arange(0x800, 0xD800), np.arange(0xE000, 0x40000)])
    encoded = "".join(map(chr, points.tolist())).encode("utf-8")
    widths = np.where(points < 0x10000, 3, 4)
    offsets = np.zeros(len(points) + 1, dtype=np.int32)
    np.cumsum(widths, out=offsets[1:])
    chars = pa.StringArray.from_buffers(len(points), pa.py_buffer(offsets), pa.py_buffer(encoded))
    table = np.zeros(0x110000, dtype=bool)
    table[points] = pc.match_substring_regex(chars, r"\p{Han}").to_numpy(zero_copy_only=False)
    return table


def _han_and_latin_counts(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per row: characters in ``\\p{Han}`` and in ``[A-Za-z]`` (0 for null rows).

    Counted on the UTF-8 bytes in one compiled pass (:mod:`pipelines.spark.script_kernels`):
    ``count_substring_regex`` costs ~20x more.
    """
    offsets, data = utf8_buffers(text)
    # A null row's bytes may be anything: its counts are zeroed.
    han, latin = han_and_latin_counts(offsets, data, _han_table())
    if text.null_count:
        missing = np.asarray(text.is_null())
        han[missing], latin[missing] = 0, 0
    return han, latin


def normalize_batch(batch: pa.RecordBatch, clean: CleanConfig) -> pa.RecordBatch:
    """Normalize ``batch.text`` and add the cleaned columns.

    Args:
        batch: any batch with a string column ``text`` (nulls allowed: they get a reason).
        clean: placeholders, length bounds and topic rules.

    Returns:
        The batch's other columns, in order, then ``text`` (normalized), ``truncated``,
        ``lang``, ``topic``, ``length`` and ``reason`` (null when the row is good, else
        why it goes to quarantine).
    """
    if "text" not in batch.schema.names:
        raise ValueError(f"normalize: expected a 'text' column, got {batch.schema.names}")
    text = pc.utf8_normalize(batch.column("text").cast(pa.string()), "NFKC")
    if clean.placeholders:
        text = pc.replace_substring_regex(text, "|".join(re.escape(t) for t in clean.placeholders), " ")
    # Same result as replacing every run of \s+ with " ", but a lone space (most matches of
    # \s+) is left alone: RE2's replace costs per match, so this is ~8x faster.
    text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s\s+|[\t\n\f\r]", " "))
    truncated = pc.match_substring_regex(text, TRUNCATION_MARKER)
    text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, TRUNCATION_MARKER, ""))

    han, latin = _han_and_latin_counts(text)
    share = han / np.maximum(han + latin, 1)
    lang = np.where(share >= 0.8, "zh", np.where(share <= 0.2, "en", "mixed")).astype(object)

    lowered = pc.utf8_lower(text)
    topic = np.full(len(text), clean.default_topic, dtype=object)
    undecided = np.ones(len(text), dtype=bool)
    for name, pattern in _topic_patterns(clean):
        hit = pc.fill_null(pc.match_substring_regex(lowered, pattern), False).to_numpy(zero_copy_only=False)
        topic[hit & undecided] = name
        undecided &= ~hit

    length = pc.utf8_length(text)
    length_np = pc.fill_null(length, 0).to_numpy(zero_copy_only=False)
    missing = np.asarray(text.is_null())
    reason = np.full(len(text), None, dtype=object)
    reason[length_np > clean.max_chars] = f"too long (> {clean.max_chars} chars)"
    reason[length_np < clean.min_chars] = f"too short (< {clean.min_chars} chars)"
    reason[missing] = "no text"
    lang[missing], topic[missing] = None, None  # nothing to say about a missing text

    rest = [(f, batch.column(i)) for i, f in enumerate(batch.schema) if f.name not in CLEAN_COLUMNS
            and f.name != "reason"]
    added = [text, truncated, pa.array(lang, pa.string()), pa.array(topic, pa.string()),
             length.cast(pa.int32()), pa.array(reason, pa.string())]
    fields = [f for f, _ in rest] + [pa.field(n, t) for n, t in _BATCH_COLUMNS]
    return pa.RecordBatch.from_arrays([c for _, c in rest] + added, schema=pa.schema(fields))


def normalize(df, clean: CleanConfig):
    """Normalize ``df.text`` and add the cleaned columns (Spark: ``mapInArrow`` + ``sha2``).

    Args:
        df: any DataFrame with a string column ``text`` (NULL allowed: it gets a reason).
        clean: placeholders, length bounds and topic rules.

    Returns:
        ``df`` with ``text`` replaced by the normalized text, the columns of
        :data:`CLEAN_COLUMNS` first, then the other columns of ``df``, then ``reason``
        (NULL when the row is good, else why it goes to quarantine).
    """
    from pyspark.sql import functions as F

    if "text" not in df.columns:
        raise ValueError(f"normalize: expected a 'text' column, got {df.columns}")
    rest = [f for f in df.schema.fields if f.name not in CLEAN_COLUMNS and f.name != "reason"]
    schema = ", ".join([f"`{f.name}` {f.dataType.simpleString()}" for f in rest] + [
        "text string", "truncated boolean", "lang string", "topic string", "length int", "reason string"])
    settings = clean.model_copy()  # a plain picklable value for the executors

    def normalize_batches(batches):
        for batch in batches:
            yield normalize_batch(batch, settings)

    staged = df.mapInArrow(normalize_batches, schema)
    return staged.select(
        F.substring(F.sha2("text", 256), 1, 16).alias("doc_id"),
        "text", "truncated", "lang", "topic", "length",
        *[f.name for f in rest],
        "reason",
    )


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
