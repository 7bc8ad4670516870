"""Synthetic crawled text for the sample corpus: feed-dump posts and article prose.

The text imitates what a crawler brings back from Chinese tech blogs: Chinese with
English technical terms mixed in, formulas and code dropped and replaced by
placeholders such as ``[公式]``, excerpts cut off with ``...``, and the same post
showing up again in later crawls -- byte-identical, cut at another length, or with
a tiny edit. Everything is drawn from a ``random.Random`` handed in by the caller,
so the same seed gives the same bytes.
"""

from __future__ import annotations

import datetime as _dt
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "BLOGS",
    "FOOTERS",
    "MIN_POSTS",
    "PLACEHOLDERS",
    "Blog",
    "make_sentences",
    "make_title",
    "write_feeds",
]

PLACEHOLDERS = ("[公式]", "[Math]", "[代码]", "[Formula]")
# A "latest updates" page often ends with its pager; it is not a post.
FOOTERS = ("1 2", "1 2 3 下一页", "上一页 1 2 3 4 5 下一页", "Page 1 of 4 · Next »")
# Smallest `posts` that still fits every guaranteed case (shared opening, English
# post, exact / truncation / near duplicate) into two crawls of one blog.
MIN_POSTS = 8
CRAWL_DAY = _dt.datetime(2026, 11, 1, tzinfo=_dt.UTC)


@dataclass(frozen=True)
class Blog:
    """One crawled blog: file slug, banner name, heading line, share of English posts."""

    slug: str
    name: str
    heading: str
    english: float


BLOGS = (
    Blog("jiqizhixin", "机器之心", "最新文章", 0.05),
    Blog("qbitai", "量子位", "最新更新", 0.05),
    Blog("dataeng", "数据工程笔记", "近期文章", 0.10),
    Blog("mlsys", "ML Systems Notes", "Latest posts", 0.60),
)

_FILL = {
    "topic": ("深度学习", "NLP", "CV", "数据工程", "分布式训练", "推荐系统", "大模型", "多模态"),
    "term": ("Transformer", "attention", "RoPE", "MoE", "LoRA", "FlashAttention", "KV cache",
             "LayerNorm", "BPE", "ViT", "CLIP", "diffusion", "beam search", "AdamW"),
    "tool": ("Spark", "Hive", "Beam", "TFRecord", "Parquet", "Airflow", "HDFS", "Arrow",
             "YARN", "NCCL", "CUDA", "Kafka"),
    "fw": ("PyTorch", "JAX", "TensorFlow"),
    "prec": ("FP16", "BF16", "FP8", "INT8"),
    "gpu": ("A100", "H100", "V100", "RTX 4090"),
    "size": ("1.3B", "7B", "13B", "70B"),
    "aspect": ("位置编码", "数值稳定性", "显存占用", "吞吐", "收敛速度", "长上下文外推",
               "通信开销", "数据倾斜", "分区裁剪", "小文件问题"),
    "metric": ("吞吐", "准确率", "BLEU", "困惑度", "训练速度", "召回率"),
    "math": ("旋转矩阵", "复数乘法", "贝叶斯公式", "泰勒展开", "信息论"),
    "en_task": ("pretraining", "retrieval", "image classification", "data cleaning",
                "speech recognition", "ranking"),
}
_ZH_TITLES = (
    "{term} 的{aspect}为什么选 {term2}？",
    "从零实现 {term}：{aspect}详解",
    "{topic}实践：用 {tool} 搞定{aspect}",
    "一文读懂 {term} 与 {term2} 的区别",
    "{tool} + {tool2} 构建{topic}流水线的踩坑记录",
    "{prec} 训练 {term} 模型，{metric}提升 {n}%",
    "如何在 {n} 张 {gpu} 上训练 {size} 的 {term}？",
    "{topic}周报：{term}、{term2} 与 {tool} 的最新进展",
)
_ZH_SENTENCES = (
    "本文从{math}出发推导 [公式] 的性质，并给出 {fw} 实现 [代码]。",
    "我们在 {n} 张 {gpu} 上用 {prec} 训练了 {size} 参数的模型，{metric}提升了 {pct}%。",
    "{tool} 作业先读取 Hive 分区表，再写成 TFRecord 交给 {fw} 训练。",
    "关键在于 {term} 的{aspect}：当序列长度超过 {ctx} 时，[Math] 会迅速衰减。",
    "下面的片段展示了如何在 {tool} 中配置 {term}：[代码]",
    "作者还讨论了 {term} 与 {term2} 组合时的{aspect}问题。",
    "完整推导见 [Formula]，其中 d 表示注意力头的维度。",
    "实测发现{aspect}是主要瓶颈，换成 {term} 之后好了很多。",
    "如果你的 {tool} 集群经常遇到{aspect}，这篇文章值得一读。",
    "损失函数写成 [公式]，梯度则由 [公式] 给出。",
)
_EN_TITLES = (
    "Why {term} beats {term2} for {en_task}",
    "Scaling {en_task} with {tool} and {tool2}",
    "A practical guide to {term} in {fw}",
    "{prec} training on {n} {gpu} GPUs: lessons learned",
)
_EN_SENTENCES = (
    "We derive [Formula] from first principles and then implement it in {fw}.",
    "On {n} {gpu} GPUs with {prec}, throughput went up by {pct}% for a {size} model.",
    "The {tool} job reads a partitioned Hive table and writes TFRecord shards for {fw}.",
    "The trick is how {term} handles long contexts: past {ctx} tokens, [Math] decays fast.",
    "The update rule is [Math], with the step size given by [Formula].",
    "We also compare {term} with {term2} and discuss where each one breaks down.",
)
# Full-width <-> ASCII punctuation: the edit a re-crawl of an edited post shows.
_PUNCT_SWAP = {"，": ",", "。": ".", "？": "?", "：": ":", ",": "，", ".": "。", ":": "："}


def _fill(template: str, rng: random.Random) -> str:
    picks = {key: rng.choice(values) for key, values in _FILL.items()}
    picks["term"], picks["term2"] = rng.sample(_FILL["term"], 2)
    picks["tool"], picks["tool2"] = rng.sample(_FILL["tool"], 2)
    picks.update(n=rng.randint(2, 64), pct=rng.randint(3, 40),
                 ctx=rng.choice((2048, 4096, 8192, 32768)))
    return template.format(**picks)


def make_title(rng: random.Random, *, english: bool = False, taken: set[str] | None = None) -> str:
    """Returns a post or article title; if ``taken`` is given, one not in it (and adds it).

    Titles are unique per corpus so that two different posts never look like a
    truncation of one another just because a cut fell inside a shared title.
    """
    templates = _EN_TITLES if english else _ZH_TITLES
    title = _fill(rng.choice(templates), rng)
    if taken is None:
        return title
    attempt = 1
    while title in taken:
        attempt += 1
        title = _fill(rng.choice(templates), rng)
        if attempt > 20:  # the template space is nearly used up: number the sequel
            title = f"{title}（{attempt}）" if not english else f"{title} ({attempt})"
    taken.add(title)
    return title


def make_sentences(rng: random.Random, count: int, *, english: bool = False) -> str:
    """Returns ``count`` prose sentences (with crawler placeholders) joined as one excerpt."""
    pool = _EN_SENTENCES if english else _ZH_SENTENCES
    # Without replacement: a repeated template would read as a crawler glitch.
    sentences = [_fill(template, rng) for template in rng.sample(pool, min(count, len(pool)))]
    return (" " if english else "").join(sentences)


@dataclass(frozen=True)
class _Post:
    text: str  # title + " " + full excerpt, before any cut
    cut_from: int  # shortest cut that keeps the whole title plus a little excerpt


def _new_post(rng: random.Random, english: bool, taken: set[str]) -> _Post:
    title = make_title(rng, english=english, taken=taken)
    body = make_sentences(rng, rng.randint(2, 4), english=english)
    return _Post(f"{title} {body}", len(title) + 12)


def _render(post: _Post, rng: random.Random, *, truncate: bool) -> str:
    """Renders a post as the crawler saw it, cut with ``...`` at a random length if asked."""
    last = len(post.text) - 8
    if not truncate or last <= post.cut_from:
        return post.text
    return post.text[: rng.randint(post.cut_from, last)].rstrip() + "..."


def _recut(post: _Post, seen: str, rng: random.Random) -> str:
    """Renders ``post`` again, cut at a length different from the line ``seen``."""
    for _ in range(16):
        line = _render(post, rng, truncate=seen == post.text or rng.random() < 0.75)
        if line != seen:
            return line
    return post.text if seen != post.text else post.text[: post.cut_from] + "..."


def _near_edit(line: str, rng: random.Random) -> str:
    """Returns ``line`` with one punctuation mark or one technical term changed."""
    body = line[:-3] if line.endswith("...") else line
    # Skip the dot inside numbers such as "1.3B": that would change a fact, not punctuation.
    marks = [i for i, ch in enumerate(body) if ch in _PUNCT_SWAP
             and not (ch == "." and body[i - 1 : i].isdigit() and body[i + 1 : i + 2].isdigit())]
    if marks:
        i = rng.choice(marks)
        return line[:i] + _PUNCT_SWAP[line[i]] + line[i + 1 :]
    for term in _FILL["term"]:
        if term in body:
            other = rng.choice([t for t in _FILL["term"] if t != term])
            return line.replace(term, other, 1)
    return body + "！" + line[len(body) :]


def _shared_opening_pair(rng: random.Random) -> tuple[str, str]:
    """Two different posts of one series: same long opening (>= 40 chars), then diverging.

    Both tails are several sentences long, so a near-duplicate detector should see
    them as distinct documents, and neither line is a prefix of the other.
    """
    opening = ("大规模预训练数据工程实践系列 本系列记录我们在 Spark 与 Beam 上"
               "清洗万亿 token 语料、再写成 TFRecord 的完整经验，")
    tails = ("这一篇讲 Hive 分区表的设计与小文件合并。", "这一篇讲 TFRecord 分片、索引与 CRC 校验。")
    # Disjoint sentence templates, so the two tails share no boilerplate either.
    templates = rng.sample(_ZH_SENTENCES, 6)
    first, second = (opening + tail + "".join(_fill(t, rng) for t in templates[k : k + 3])
                     for tail, k in zip(tails, (0, 3), strict=True))
    return first, second


def _dump_sizes(posts: int, rng: random.Random) -> list[int]:
    sizes: list[int] = []
    remaining = posts
    while remaining > 0:
        size = rng.randint(12, 40)
        if remaining - size < 12:  # no runt dump at the end: fold it into this one
            size = remaining
        sizes.append(size)
        remaining -= size
    if len(sizes) == 1:  # duplicates need a second crawl of the same blog
        sizes = [math.ceil(posts / 2), posts // 2]
    return sizes


def _crawl_lines(rng: random.Random, size: int, kinds: list[str], history: list[tuple[_Post, str]],
                 blog: Blog, taken: set[str]) -> list[str]:
    """Post lines of one crawl: ``kinds`` forced first, the rest drawn at random."""
    while len(kinds) < size:
        roll = rng.random()
        if not history or roll < 0.55:
            kinds.append("new")
        else:
            kinds.append("exact" if roll < 0.75 else "trunc" if roll < 0.92 else "near")
    kinds = kinds[:size]
    repeats = [k for k in kinds if k in ("exact", "trunc", "near")]
    # Distinct sources when history allows it, so each forced pair is its own post.
    sources = (rng.sample(history, len(repeats)) if len(history) >= len(repeats)
               else [rng.choice(history) for _ in repeats])
    pair = iter(_shared_opening_pair(rng) if "shared" in kinds else ())
    fresh: list[str] = []
    for kind in kinds:
        if kind == "english" or kind == "new":
            english = kind == "english" or rng.random() < blog.english
            post = _new_post(rng, english, taken)
            line = _render(post, rng, truncate=rng.random() < 0.55)
            history.append((post, line))
            fresh.append(line)
        elif kind == "shared":
            fresh.append(next(pair))  # kept out of history: never repeated
    rng.shuffle(fresh)
    again: list[str] = []
    for kind, (post, seen) in zip(repeats, sources, strict=True):
        if kind == "exact":
            again.append(seen)
        elif kind == "trunc":
            again.append(_recut(post, seen, rng))
        else:
            again.append(_near_edit(seen, rng))
    # A "latest updates" page lists the new posts above the ones it showed before.
    return fresh + again


def _banner(blog: Blog, when: _dt.datetime) -> str:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    if blog.english > 0.5:
        return f"[{blog.name}] Latest updates — crawled {stamp}"
    return f"【{blog.name}】最新更新 | Latest updates — crawled {stamp}"


def write_feeds(write: Callable[[str, bytes], None], posts: int, rng: random.Random
                ) -> tuple[int, dict[str, str]]:
    """Writes the feed dumps ``feed-<blog>-<crawl>.txt`` plus two dirty files.

    Each dump is one crawl of a blog's latest-updates page: banner, blank line,
    heading, one post per line, sometimes a pager footer. The first crawl of every
    blog holds an English post, that of the first blog also a shared-opening pair;
    the second crawl of every blog holds an exact, a truncation and a near
    duplicate of its earlier posts (later crawls repeat posts at random).

    Args:
        write: called as ``write(name, data)`` for every file, in a fixed order.
        posts: post lines to write over all valid dumps, at least ``MIN_POSTS``.
        rng: the only source of randomness.

    Returns:
        ``(post_lines_written, dirty)`` where ``dirty`` maps file name to defect.
    """
    sizes = _dump_sizes(posts, rng)
    per_blog = max(2, math.ceil(len(sizes) / len(BLOGS)))
    step = _dt.timedelta(minutes=max(1, 24 * 60 // (per_blog + 1)))
    histories: dict[str, list[tuple[_Post, str]]] = {}
    taken: set[str] = set()
    written = 0
    for i, size in enumerate(sizes):
        blog, crawl = BLOGS[i // per_blog], i % per_blog
        history = histories.setdefault(blog.slug, [])
        kinds = {0: ["english"], 1: ["exact", "trunc", "near"]}.get(crawl, [])
        if i == 0:
            kinds = ["shared", "shared", *kinds]
        lines = _crawl_lines(rng, size, list(kinds), history, blog, taken)
        written += len(lines)
        when = CRAWL_DAY + step * (crawl + 1) + _dt.timedelta(seconds=7 * (i // per_blog))
        page = [_banner(blog, when), "", blog.heading, *lines]
        if rng.random() < 0.35:
            page.append(rng.choice(FOOTERS))
        write(f"feed-{blog.slug}-{crawl:04d}.txt", ("\n".join(page) + "\n").encode("utf-8"))
    write("feed-empty.txt", b"")
    broken = f"{_banner(BLOGS[0], CRAWL_DAY)}\n\n{BLOGS[0].heading}\n".encode()
    write("feed-broken-utf8.txt", broken + b"\xff\xfe\xc3\x28\n")
    return written, {"feed-empty.txt": "empty", "feed-broken-utf8.txt": "invalid-utf8"}
