"""Deterministic sample corpus: what the crawlers would deliver to ``raw/`` for one dt.

``write_sample_corpus`` writes three small corpora that exercise every cleaning
path of the pipeline on a laptop: feed dumps of Chinese tech blogs (duplicates of
three kinds, crawler placeholders, pagers, an empty and a non-UTF-8 file), an
articles JSONL file (empty and missing sections, one truncated line), and labelled
shape images with masks (truncated, duplicated, grayscale and tiny images). Every
defect that was planted is reported in ``SampleSummary.dirty`` so tests downstream
can check that each one was quarantined or deduplicated, not silently lost.

The same ``seed`` and sizes give byte-identical files: randomness comes only from
seeded ``random.Random`` / ``numpy`` generators (one per corpus, so changing the
image count leaves the text untouched), never from the clock or ``hash()``.

Example::

    lake = Lake("./lake")
    summary = write_sample_corpus(
        lambda corpus: lake.fs_path(lake.raw(corpus, "2026-11-01")), fs=lake.fs)
"""

from __future__ import annotations

import json
import posixpath
import random
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import numpy as np

from shardforge.sample_images import MIN_IMAGES, write_images
from shardforge.sample_text import MIN_POSTS, make_sentences, make_title, write_feeds

__all__ = ["CORPORA", "SampleSummary", "write_sample_corpus"]

CORPORA = ("feeds", "articles", "images")
ARTICLES_FILE = "articles-0000.jsonl"
_TAGS = ("深度学习", "NLP", "CV", "数据工程", "分布式训练", "Spark", "Beam", "PyTorch",
         "Transformer", "MoE", "LoRA", "CUDA", "TFRecord", "Hive")
_HEADINGS = ("背景", "方法", "实验", "工程实现", "踩坑记录", "总结", "Background", "Results")


@dataclass(frozen=True)
class SampleSummary:
    """What ``write_sample_corpus`` wrote.

    Attributes:
        files: corpus -> files written (dirty files and image masks included).
        posts: post lines written into the valid feed dumps.
        articles: valid JSON article lines written (the malformed line excluded).
        images: image files written, dirty ones included (masks excluded).
        dirty: path relative to the corpus dir -> defect it carries; a bad line in
            a JSONL file is keyed ``"<file>:line N"`` (1-based).
    """

    files: dict[str, int]
    posts: int
    articles: int
    images: int
    dirty: dict[str, str]


class _CorpusWriter:
    """Writes named files under one directory through ``fs`` and counts them."""

    def __init__(self, fs: fsspec.AbstractFileSystem, directory: str) -> None:
        self._fs = fs
        self._dir = directory.rstrip("/")
        self._made: set[str] = set()
        self.count = 0

    def __call__(self, name: str, data: bytes) -> None:
        path = posixpath.join(self._dir, name)
        parent = posixpath.dirname(path)
        if parent not in self._made:
            self._fs.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        with self._fs.open(path, "wb") as f:
            f.write(data)
        self.count += 1


def _article(rng: random.Random, index: int, taken: set[str], sections: str) -> dict:
    english = rng.random() < 0.1
    doc: dict = {
        "id": f"a-{index:06d}",
        "title": make_title(rng, english=english, taken=taken),
        "tags": rng.sample(_TAGS, rng.randint(1, 4)),
    }
    if sections == "missing":
        return doc
    doc["sections"] = [] if sections == "empty" else [
        {"heading": rng.choice(_HEADINGS),
         "paragraphs": [make_sentences(rng, rng.randint(1, 4), english=english)
                        for _ in range(rng.randint(1, 3))]}
        for _ in range(rng.randint(1, 4))
    ]
    return doc


def _write_articles(write: Callable[[str, bytes], None], count: int, rng: random.Random
                    ) -> dict[str, str]:
    """Writes ``count`` valid article lines plus one truncated line to ``ARTICLES_FILE``.

    At least one article has ``"sections": []`` and exactly one has no ``sections``
    key; the malformed line is an extra article cut in half (still valid UTF-8, so
    only the JSON parser rejects it).
    """
    empty_at, missing_at, broken_at = rng.sample(range(count + 1), 3)
    taken: set[str] = set()
    lines: list[str] = []
    for i in range(count + 1):
        kind = ("empty" if i == empty_at or rng.random() < 0.08 else "full")
        kind = "missing" if i == missing_at else kind
        line = json.dumps(_article(rng, i + 1, taken, kind), ensure_ascii=False, sort_keys=True)
        # Cut by characters, not bytes: a prefix of a JSON object is never valid JSON.
        lines.append(line[: len(line) // 2] if i == broken_at else line)
    write(ARTICLES_FILE, ("\n".join(lines) + "\n").encode("utf-8"))
    return {f"{ARTICLES_FILE}:line {broken_at + 1}": "malformed-json"}


def _check_size(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} to hold every planted case, got {value}")


def write_sample_corpus(
    target: Callable[[str], str],
    *,
    fs: fsspec.AbstractFileSystem,
    posts: int = 3000,
    images: int = 200,
    seed: int = 0,
) -> SampleSummary:
    """Writes the deterministic sample corpora, one directory per corpus.

    Files are written as delivered (plain ``fs.open(path, "wb")``, no temporary
    names): this is ``raw/``, the input of the pipeline. Existing files with the
    same names are overwritten; other files in the directories are left alone.

    Args:
        target: maps a corpus name in ``CORPORA`` to the directory (a path ``fs``
            understands, e.g. ``/lake/raw/feeds/dt=2026-11-01``) for its files.
        fs: the filesystem every file is written through.
        posts: post lines over all feed dumps, at least 8. Articles: ``posts // 10``
            (at least 3) valid lines.
        images: images written, the 5 dirty ones included; at least 6.
        seed: non-negative; the same seed and sizes give byte-identical files.

    Returns:
        The counts written and every planted defect; see ``SampleSummary``.

    Raises:
        TypeError: a size or the seed is not an int.
        ValueError: a size is below its minimum or the seed is negative.
    """
    _check_size("posts", posts, MIN_POSTS)
    _check_size("images", images, MIN_IMAGES)
    _check_size("seed", seed, 0)
    writers = {corpus: _CorpusWriter(fs, target(corpus)) for corpus in CORPORA}
    # One generator per corpus, seeded from (seed, corpus): sizes of one corpus do
    # not shift the random stream of another. str seeds are hashed with SHA-512 by
    # `random`, not with the randomized hash().
    post_lines, dirty = write_feeds(writers["feeds"], posts, random.Random(f"{seed}:feeds"))
    article_count = max(3, posts // 10)
    dirty |= _write_articles(writers["articles"], article_count, random.Random(f"{seed}:articles"))
    dirty |= write_images(writers["images"], images, np.random.default_rng([seed, 3]))
    return SampleSummary(
        files={corpus: writer.count for corpus, writer in writers.items()},
        posts=post_lines,
        articles=article_count,
        images=images,
        dirty=dict(sorted(dirty.items())),
    )
