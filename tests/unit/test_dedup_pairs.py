"""benchmarks/dedup_pairs.py (labelled pairs, precision / recall) and dedup_peer's corpus conversion."""

from __future__ import annotations

import json
import os
import random
import unicodedata
from collections import Counter

import pytest

from benchmarks.dedup_pairs import CATEGORIES, CROSS_PAIR_LIMIT, LANGS, Pair, labelled_pairs, score

N = 96  # 12 pairs per category and language


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    return labelled_pairs(N, seed=7)


def grams(text: str) -> set[str]:
    return {text[i : i + 4] for i in range(len(text) - 3)}


def jaccard(a: str, b: str) -> float:
    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def of(pairs: list[Pair], category: str) -> list[Pair]:
    found = [p for p in pairs if p.category == category]
    assert found
    return found


def test_same_seed_gives_the_same_pairs(pairs):
    assert labelled_pairs(N, seed=7) == pairs
    assert labelled_pairs(N, seed=8) != pairs


def test_categories_and_languages_are_balanced(pairs):
    assert Counter((p.category, p.lang) for p in pairs) == {(c, lang): N // 8 for c in CATEGORIES for lang in LANGS}
    assert all(p.duplicate == (p.category in ("near_edit", "truncated")) for p in pairs)
    # Shuffled, not grouped by category.
    assert [p.category for p in pairs[: N // 4]] != [pairs[0].category] * (N // 4)


def test_posts_are_80_to_400_characters_and_in_their_language(pairs):
    for p in pairs:
        for text in (p.a, p.b):
            assert 80 <= len(text) <= 400, text
            chinese = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
            assert (chinese > 10) == (p.lang == "zh"), text


def test_truncated_b_is_a_strict_prefix_of_a_cut_at_50_to_90_percent(pairs):
    markers = Counter()
    for p in of(pairs, "truncated"):
        a, b = (unicodedata.normalize("NFKC", t) for t in (p.a, p.b))
        markers[p.b[-1] == "…"] += 1
        assert b.endswith("...") and not a.endswith("...")
        body = b[: -len("...")]
        assert a.startswith(body) and len(body) < len(a)
        assert 0.45 <= len(body) / len(a) <= 0.9
    assert markers[True] and markers[False]  # both "..." and "…"


def test_diverging_openings_share_85_percent_then_differ(pairs):
    for p in of(pairs, "diverging_openings"):
        assert p.a.endswith("...") and p.b.endswith("...")
        a, b = p.a[: -len("...")], p.b[: -len("...")]
        common = len(os.path.commonprefix([a, b]))
        assert common >= 0.85 * min(len(a), len(b)), (a, b)
        assert common < min(len(a), len(b))  # they differ before either ends


def test_near_edits_keep_jaccard_at_least_0_8(pairs):
    for p in of(pairs, "near_edit"):
        assert p.a != p.b
        assert jaccard(p.a, p.b) >= 0.8, (p.a, p.b)
        assert not p.b.endswith(("...", "…"))


def test_unrelated_posts_are_far_apart(pairs):
    for p in of(pairs, "unrelated"):
        assert jaccard(p.a, p.b) < 0.5, (p.a, p.b)


def test_texts_of_different_pairs_are_unrelated(pairs):
    texts = [(i, grams(t)) for i, p in enumerate(pairs) for t in (p.a, p.b)]
    worst = max(len(ga & gb) / len(ga | gb) for n, (i, ga) in enumerate(texts) for j, gb in texts[n + 1 :] if i != j)
    assert worst < CROSS_PAIR_LIMIT + 0.05


def test_n_must_split_evenly_over_categories_and_languages():
    with pytest.raises(ValueError, match="multiple of 8"):
        labelled_pairs(12, seed=0)


def test_score_on_hand_made_decisions():
    def pair(category: str, lang: str) -> Pair:
        return Pair("a", "b", category in ("near_edit", "truncated"), category, lang)

    pairs = [pair("near_edit", "zh"), pair("near_edit", "en"), pair("truncated", "zh"), pair("truncated", "en"),
             pair("diverging_openings", "zh"), pair("diverging_openings", "en"), pair("unrelated", "zh"),
             pair("unrelated", "en")]
    merged = [True, False, True, True, True, False, False, False]
    result = score(pairs, merged)
    assert result["overall"] == {"pairs": 8, "merged": 4, "tp": 3, "fp": 1, "fn": 1,
                                 "precision": 0.75, "recall": 0.75}
    assert (result["near_edit"]["precision"], result["near_edit"]["recall"]) == (1.0, 0.5)
    assert (result["truncated"]["precision"], result["truncated"]["recall"]) == (1.0, 1.0)
    assert result["diverging_openings"] == {"pairs": 2, "merged": 1, "tp": 0, "fp": 1, "fn": 0,
                                            "precision": 0.0, "recall": None}
    assert (result["unrelated"]["merged"], result["unrelated"]["precision"]) == (0, None)
    # zh: near + trunc + diverging merged (tp 2, fp 1); en: trunc merged, near missed.
    assert (result["lang:zh"]["precision"], result["lang:zh"]["recall"]) == (0.6667, 1.0)
    assert (result["lang:en"]["precision"], result["lang:en"]["recall"]) == (1.0, 0.5)
    with pytest.raises(ValueError, match="7 decisions for 8 pairs"):
        score(pairs, merged[:-1])


def test_feed_dumps_become_one_jsonl_document_per_post(tmp_path):
    from benchmarks.dedup_peer import feeds_to_jsonl
    from shardforge.sample_text import write_feeds

    feeds = tmp_path / "feeds"
    feeds.mkdir()
    lines, _ = write_feeds(lambda name, data: (feeds / name).write_bytes(data), 300, random.Random(3))
    assert feeds_to_jsonl(feeds, tmp_path / "jsonl") == lines
    docs = [json.loads(line) for path in sorted((tmp_path / "jsonl").glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(docs) == lines and len({d["id"] for d in docs}) == lines
    assert len(list((tmp_path / "jsonl").glob("*.jsonl"))) == 2
    assert not any(d["text"].startswith(("【", "[ML Systems")) or d["text"] in ("最新文章", "Latest posts")
                   for d in docs)
