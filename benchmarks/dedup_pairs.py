"""Labelled post pairs for near-duplicate dedup quality: does a tool merge the pairs it should?

``labelled_pairs(n, seed)`` returns ``n`` pairs of crawled tech-blog posts (80–400
characters, Chinese and English, six topics), an equal number per category and language:

- ``near_edit`` (duplicate): ``b`` is a re-crawl of ``a`` with 2–4 small edits spread
  through the text (a word or character replaced, a punctuation mark swapped between
  full-width and ASCII, a crawler placeholder such as ``[公式]`` or ``[Math]`` from
  ``shardforge.sample_text.PLACEHOLDERS`` inserted); character-4-gram Jaccard >= 0.8.
- ``truncated`` (duplicate): ``b`` is ``a`` cut by the feed at 50–90% of its length,
  ending with ``...`` or ``…``.
- ``diverging_openings`` (not duplicate): two posts of a series that share an opening of
  85–92% of the shorter one and then diverge; both are cut by the feed with ``...``.
- ``unrelated`` (not duplicate): two posts on the same topic.

Posts come from their own templates, not ``sample_text.make_sentences``: its 10 Chinese
and 6 English sentence templates make random posts share whole sentences, and datatrove
then merged texts of different pairs (107 clusters over 2000 pairs). Here every text of a
pair stays below character-4-gram Jaccard ``CROSS_PAIR_LIMIT`` with every text of every
other pair (pairs are drawn again until so), so a tool merging a pair's texts means it
merged them with each other. ``score(pairs, merged)`` turns decisions into precision / recall.
"""

from __future__ import annotations

import os
import random
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from shardforge.sample_text import PLACEHOLDERS

__all__ = ["CATEGORIES", "LANGS", "Pair", "char_jaccard", "labelled_pairs", "score"]

CATEGORIES = ("near_edit", "truncated", "diverging_openings", "unrelated")
DUPLICATE = {"near_edit": True, "truncated": True, "diverging_openings": False, "unrelated": False}
LANGS = ("zh", "en")
MIN_CHARS, MAX_CHARS = 80, 400
# Texts of different pairs stay below this character-4-gram Jaccard: no tool should merge them.
CROSS_PAIR_LIMIT = 0.4
_BUCKETS = 4096
# Technical terms by topic (Chinese tech blogs write them in English too), "|"-separated.
TOPICS = {name: tuple(terms.split("|")) for name, terms in {
    "training": "mixed precision|gradient checkpointing|ZeRO|FSDP|AdamW|loss scaling|warmup|BF16",
    "inference": "KV cache|speculative decoding|paged attention|continuous batching|INT4|vLLM|TensorRT",
    "data": "Spark|Hive|Parquet|Airflow|Kafka|Beam|Iceberg|TFRecord|Flink",
    "vision": "ViT|CLIP|diffusion|ResNet|SAM|DETR|ControlNet|YOLO",
    "nlp": "BPE|RoPE|Transformer|LoRA|RLHF|tokenizer|MoE|DPO",
    "systems": "CUDA|NCCL|Triton|RDMA|NVLink|FlashAttention|cuBLAS|Kubernetes",
}.items()}
# Per language: slot fillers ("|"-separated), titles and sentence templates; {t1}/{t2} are
# terms of the post's topic. Slots every few words keep posts of one template apart.
_SLOTS = {
    "zh": {
        "opener": "上周|最近|这次|复盘时|线上排查时|迁移集群时|做压测时|读源码时",
        "issue": "显存溢出|吞吐下降|数据倾斜|收敛变慢|延迟抖动|精度损失|小文件过多|通信阻塞|负载不均|缓存命中率低",
        "action": "调大批大小|升级驱动|重写分区逻辑|加一层缓存|改成异步写入|拆成两个阶段|关掉冗余日志|重新设计索引",
        "scenario": "长上下文|小集群|多租户环境|离线批处理|实时服务|冷启动|低资源语言",
        "metric": "吞吐|延迟|准确率|显存占用|训练速度|成本|召回率",
        "place": "线上集群|测试环境|单机八卡|小规模实验|生产流水线|离线任务",
        "outcome": "基本消失了|缓解了一半|反而更严重|没有变化|只在高峰期出现",
        "degree": "略差|稍好|差不多|明显更差", "gain": "最稳定|最明显|最便宜|最容易复现",
        "proof": "推导|证明|粗略估算|性能剖析", "doc": "清单|表格|流程图|脚本",
    },
    "en": {
        "opener": "Last week|Recently|This time|During the postmortem|While load testing|During the migration",
        "issue": "out-of-memory errors|a throughput drop|data skew|slow convergence|latency spikes"
                 "|accuracy loss|too many small files|communication stalls|load imbalance",
        "action": "raise the batch size|upgrade the driver|rewrite the partitioning|add a cache layer"
                  "|switch to async writes|split the job in two|drop the verbose logging|redesign the index",
        "scenario": "long contexts|small clusters|multi-tenant setups|offline batch jobs|online serving|cold starts",
        "metric": "throughput|latency|accuracy|memory use|training speed|cost|recall",
        "place": "the production cluster|a staging box|a single 8-GPU node|a small experiment|the nightly pipeline",
        "outcome": "went away|halved|got worse|did not change|only showed up at peak load",
        "degree": "a bit worse|slightly better|about the same|much worse",
        "gain": "steadiest|largest|cheapest|most reproducible",
        "proof": "The derivation|A proof|A rough estimate|The profile",
        "adj": "main|nastiest|subtlest|most common|first", "rule": "update rule|loss|cost model|schedule",
    },
}
_TITLES = {
    "zh": ("{t1} 实战：{issue}的排查与优化", "从 {t2} 迁移到 {t1} 的踩坑记录", "{t1} 与 {t2}：{scenario}下怎么选？",
           "{t1} 让{metric}提升了 {pct}%", "{scenario}场景的 {t1} 调优笔记"),
    "en": ("{t1} in practice: debugging {issue}", "Moving from {t2} to {t1}: lessons learned",
           "{t1} vs {t2} for {scenario}", "How {t1} improved our {metric} by {pct}%", "Tuning {t1} for {scenario}"),
}
_SENTENCES = {
    "zh": (
        "{opener}我们在{place}上试了 {t1}，{issue}{outcome}。", "{t1} 和 {t2} 一起用时，最容易踩的坑是{issue}。",
        "解决办法是{action}，{metric}提升了 {pct}%。", "只看{metric}的话 {t1} {degree}，但{issue}{outcome}。",
        "有读者问 {t1} 能否替代 {t2}，答案取决于{scenario}。", "关键配置见 [代码]，{t1} 的参数要按{scenario}来调。",
        "{proof}见 [公式]，{issue}主要来自 {t1}。", "在{place}跑了 {n} 轮，{action}的改善{gain}。",
        "面对{scenario}，建议先{action}，再考虑引入 {t2}。", "社区版 {t2} 在{place}上还有{issue}，需要自己打补丁。",
        "{opener}顺手对比了 {t2}，它在{scenario}下{metric}{degree}。", "{issue}的排查步骤整理成了{doc}，{t1} 相关的放在文末。",
    ),
    "en": (
        "{opener}, we tried {t1} on {place} and {issue} {outcome}.",
        "The {adj} pitfall when pairing {t1} with {t2} is {issue}.",
        "Our fix was to {action}, which improved {metric} by {pct}%.",
        "On {metric} alone {t1} is {degree}, but {issue} {outcome}.",
        "A reader asked if {t1} can replace {t2}; that depends on {scenario}.",
        "{proof} in [Math] shows that {issue} comes mostly from {t1}.",
        "After {n} runs on {place}, choosing to {action} gave the {gain} gain.",
        "For {scenario}, first {action}, then consider adding {t2}.",
        "The stock {t2} build still has {issue} on {place}.",
        "{opener}, we also compared {t2}: its {metric} is {degree} for {scenario}.",
        "The {rule} is [Formula]; {t1} only changes one {adj} term.",
    ),
}
_PLACEHOLDER = {"zh": [p for p in PLACEHOLDERS if not p.isascii()], "en": [p for p in PLACEHOLDERS if p.isascii()]}
# Full-width <-> ASCII punctuation, the edit a re-crawl of a re-published post shows.
_PUNCT = {"，": ",", "。": ".", "？": "?", "：": ":", ",": "，", ".": "。", ":": "："}
_ZH_CHARS = "的了在是和与对把从将"
_EN_WORDS = ("faster", "simpler", "larger", "newer", "cleaner", "better", "smaller")


@dataclass(frozen=True)
class Pair:
    """Two post texts and whether a near-duplicate dedup should merge them."""

    a: str
    b: str
    duplicate: bool
    category: str
    lang: str


def char_jaccard(a: str, b: str, k: int = 4) -> float:
    """Jaccard similarity of the two texts' character k-gram sets."""
    sa, sb = ({t[i : i + k] for i in range(max(1, len(t) - k + 1))} for t in (a, b))
    return len(sa & sb) / len(sa | sb)


def _fill(template: str, rng: random.Random, lang: str, topic: str) -> str:
    t1, t2 = rng.sample(TOPICS[topic], 2)
    picks = {slot: rng.choice(words.split("|")) for slot, words in _SLOTS[lang].items()}
    return template.format(t1=t1, t2=t2, n=rng.randint(3, 60), pct=rng.randint(3, 45), **picks)


def _sentences(rng: random.Random, lang: str, topic: str, count: int) -> str:
    """``count`` sentences of different templates (a repeated template reads as a glitch)."""
    templates = rng.sample(_SENTENCES[lang], count)
    return ("" if lang == "zh" else " ").join(_fill(t, rng, lang, topic) for t in templates)


def _post(rng: random.Random, lang: str, topic: str, taken: set[str], lo: int = MIN_CHARS,
          hi: int = MAX_CHARS) -> str:
    """A new post on ``topic``: unique title + 2–8 sentences, lo..hi characters."""
    while True:
        title = _fill(rng.choice(_TITLES[lang]), rng, lang, topic)
        text = f"{title} {_sentences(rng, lang, topic, rng.randint(2, 8 if lang == 'zh' else 4))}"
        if title not in taken and lo <= len(text) <= hi:
            taken.add(title)
            return text


def _edit(text: str, start: int, end: int, lang: str, rng: random.Random) -> str:
    """One small edit at a position in text[start:end], outside placeholders."""
    inside = {i for m in re.finditer(r"\[[^\]]*\]", text) for i in range(m.start(), m.end())}
    spots = [i for i in range(start, end) if i not in inside]
    kinds = {
        "punct": [i for i in spots if text[i] in _PUNCT
                  and not (text[i] == "." and text[i - 1 : i].isdigit() and text[i + 1 : i + 2].isdigit())],
        "word": ([i for i in spots if "\u4e00" <= text[i] <= "\u9fff"] if lang == "zh" else
                 [m.start() for m in re.finditer(r"\b[a-z]{3,}\b", text) if m.start() in spots]),
        "placeholder": ([i for i in spots if "\u4e00" <= text[i - 1 : i] <= "\u9fff"] if lang == "zh"
                        else [i for i in spots if text[i] == " "]),
    }
    kind = rng.choice([k for k, found in kinds.items() if found] or ["none"])
    if kind == "none":
        return text
    i = rng.choice(kinds[kind])
    if kind == "punct":
        return text[:i] + _PUNCT[text[i]] + text[i + 1 :]
    if kind == "placeholder":
        mark = rng.choice(_PLACEHOLDER[lang])
        return text[:i] + (mark if lang == "zh" else " " + mark) + text[i:]
    if lang == "zh":
        return text[:i] + rng.choice([c for c in _ZH_CHARS if c != text[i]]) + text[i + 1 :]
    word = re.match(r"[a-z]+", text[i:]).group()
    return text[:i] + rng.choice([w for w in _EN_WORDS if w != word]) + text[i + len(word) :]


def _near_edit(rng: random.Random, lang: str, topic: str, taken: set[str]) -> tuple[str, str]:
    while True:
        a = _post(rng, lang, topic, taken, lo=120)
        edits = rng.randint(2, 4)
        b, step, done = a, len(a) // edits, 0
        for j in reversed(range(edits)):  # from the end: earlier positions stay valid
            edited = _edit(b, j * step + 1, (j + 1) * step, lang, rng)
            b, done = edited, done + (edited != b)
        if done >= 2 and len(b) <= MAX_CHARS and char_jaccard(a, b) >= 0.8:
            return a, b


def _truncated(rng: random.Random, lang: str, topic: str, taken: set[str]) -> tuple[str, str]:
    a = _post(rng, lang, topic, taken, lo=2 * MIN_CHARS)
    cut = rng.randint(len(a) // 2, len(a) * 9 // 10)
    return a, a[:cut].rstrip() + rng.choice(("...", "…"))


def _diverging(rng: random.Random, lang: str, topic: str, taken: set[str]) -> tuple[str, str]:
    """Title + opening sentences, then two tails of other templates; cut so the opening is 85–92%."""
    join = (lambda parts: "".join(parts)) if lang == "zh" else " ".join
    while True:
        templates = rng.sample(_SENTENCES[lang], 4 + rng.randint(2, 5 if lang == "zh" else 3))
        title = _fill(rng.choice(_TITLES[lang]), rng, lang, topic)
        opening = f"{title} {join(_fill(t, rng, lang, topic) for t in templates[4:])}"
        tails = [join(_fill(t, rng, lang, topic) for t in templates[j : j + 2]) for j in (0, 2)]
        shorter = round(len(opening) / rng.uniform(0.86, 0.91))
        cuts = [shorter, rng.randint(shorter, shorter + 30)]
        rng.shuffle(cuts)
        a, b = (join((opening, tail))[:cut].rstrip() for tail, cut in zip(tails, cuts, strict=True))
        common, short = len(os.path.commonprefix([a, b])), min(len(a), len(b))
        if (title not in taken and 0.85 <= common / short <= 0.92 and common < short
                and short + 3 >= MIN_CHARS and max(len(a), len(b)) + 3 <= MAX_CHARS):
            taken.add(title)
            return a + "...", b + "..."


def _unrelated(rng: random.Random, lang: str, topic: str, taken: set[str]) -> tuple[str, str]:
    return _post(rng, lang, topic, taken), _post(rng, lang, topic, taken)


_MAKERS: dict[str, Callable[[random.Random, str, str, set[str]], tuple[str, str]]] = {
    "near_edit": _near_edit, "truncated": _truncated, "diverging_openings": _diverging, "unrelated": _unrelated,
}


def _shingles(texts: Sequence[str]):
    """One row per text: its character 4-grams hashed (crc32) into ``_BUCKETS`` 0/1 columns."""
    rows = np.zeros((len(texts), _BUCKETS), np.float32)
    for row, text in enumerate(texts):
        rows[row, [zlib.crc32(text[j : j + 4].encode()) % _BUCKETS for j in range(len(text) - 3)]] = 1
    return rows


def _clashing(grams, owner, rows, *, later_only: bool) -> set[int]:
    """Owners (pair indices) of ``rows`` whose text is as close as ``CROSS_PAIR_LIMIT`` to another pair's.

    Texts are compared within their language (one half of the rows each, languages in order);
    hashed shingles make the Jaccard estimate a little high, never much low.
    """
    found: set[int] = set()
    sizes, half = grams.sum(1), len(grams) // len(LANGS)
    for lo in range(0, len(grams), half):
        cols = slice(lo, lo + half)
        mine = rows[(rows >= lo) & (rows < lo + half)]
        for start in range(0, len(mine), 1024):
            block = mine[start : start + 1024]
            inter = grams[block] @ grams[cols].T
            close = inter >= CROSS_PAIR_LIMIT * (sizes[block][:, None] + sizes[None, cols] - inter)
            pair, others = owner[block][:, None], owner[None, cols]
            close &= pair > others if later_only else pair != others
            found.update(int(owner[block[r]]) for r in np.nonzero(close.any(1))[0])
    return found


def labelled_pairs(n: int, seed: int) -> list[Pair]:
    """``n`` labelled pairs, ``n / 8`` per category and language, in a seeded random order.

    A pair with a text too close to a text of another pair is drawn again, until none is.
    """
    groups = len(CATEGORIES) * len(LANGS)
    if n <= 0 or n % groups:
        raise ValueError(f"n must be a positive multiple of {groups} (categories x languages), got {n}")
    rng, taken = random.Random(seed), set()

    def draw(category: str, lang: str) -> Pair:
        topic = rng.choice(list(TOPICS))
        return Pair(*_MAKERS[category](rng, lang, topic, taken), DUPLICATE[category], category, lang)

    pairs = [draw(category, lang) for lang in LANGS for category in CATEGORIES for _ in range(n // groups)]
    grams = _shingles([t for p in pairs for t in (p.a, p.b)])
    owner = np.repeat(np.arange(n), 2)
    redraw = _clashing(grams, owner, np.arange(2 * n), later_only=True)
    for _ in range(100):
        if not redraw:
            break
        for i in sorted(redraw):
            pairs[i] = draw(pairs[i].category, pairs[i].lang)
            grams[2 * i : 2 * i + 2] = _shingles((pairs[i].a, pairs[i].b))
        rows = np.array([r for i in sorted(redraw) for r in (2 * i, 2 * i + 1)])
        redraw = _clashing(grams, owner, rows, later_only=False)
    else:
        raise RuntimeError(f"{len(redraw)} pairs still clash with other pairs")
    rng.shuffle(pairs)
    return pairs


def _pr(rows: Sequence[tuple[Pair, bool]]) -> dict:
    tp = sum(1 for p, m in rows if m and p.duplicate)
    fp = sum(1 for p, m in rows if m and not p.duplicate)
    fn = sum(1 for p, m in rows if not m and p.duplicate)
    return {"pairs": len(rows), "merged": tp + fp, "tp": tp, "fp": fp, "fn": fn,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None}


def score(pairs: Sequence[Pair], merged: Sequence[bool]) -> dict[str, dict]:
    """Precision / recall of one tool's decisions (``merged[i]``: it merged pair i).

    Returns ``{"overall": …, "<category>": …, "lang:<lang>": …}``, each with pairs, merged,
    tp, fp, fn, precision (None when nothing was merged) and recall (None for a
    category without duplicates, where ``merged`` / ``pairs`` is the false-merge rate).
    """
    if len(merged) != len(pairs):
        raise ValueError(f"{len(merged)} decisions for {len(pairs)} pairs")
    rows = list(zip(pairs, (bool(m) for m in merged), strict=True))
    return {"overall": _pr(rows), **{c: _pr([r for r in rows if r[0].category == c]) for c in CATEGORIES},
            **{f"lang:{lang}": _pr([r for r in rows if r[0].lang == lang]) for lang in LANGS}}
