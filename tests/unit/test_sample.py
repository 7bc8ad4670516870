"""Unit tests for shardforge.sample: the deterministic sample corpus."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from shardforge.sample import ARTICLES_FILE, CORPORA, SampleSummary, write_sample_corpus
from shardforge.sample_images import DEFECTS, MIN_IMAGES, SHAPES
from shardforge.sample_text import BLOGS, FOOTERS, MIN_POSTS, PLACEHOLDERS

BANNER = re.compile(r"^(【.+】最新更新 \| |\[.+\] )Latest updates — crawled "
                    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
DUMP_NAME = re.compile(r"^feed-([a-z]+)-(\d{4})\.txt$")


def _write(root: Path, **sizes: int) -> SampleSummary:
    return write_sample_corpus(lambda corpus: str(root / corpus),
                               fs=fsspec.filesystem("file"), **sizes)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleSummary]:
    root = tmp_path_factory.mktemp("sample")
    return root, _write(root)


def _feed_posts(feeds: Path) -> dict[str, list[str]]:
    """Blog slug -> post lines over all valid dumps, checking each dump's frame."""
    posts: dict[str, list[str]] = {}
    for path in sorted(feeds.iterdir()):
        match = DUMP_NAME.match(path.name)
        if match is None:
            continue
        lines = path.read_text(encoding="utf-8").split("\n")
        assert BANNER.match(lines[0]), (path.name, lines[0])
        assert lines[1] == ""
        assert lines[2] in {blog.heading for blog in BLOGS}
        assert lines[-1] == "", "a dump ends with a newline"
        body = lines[3:-1]
        if body and body[-1] in FOOTERS:
            body = body[:-1]
        assert body and all(body), path.name
        posts.setdefault(match.group(1), []).extend(body)
    return posts


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _truncation_of(a: str, b: str) -> bool:
    return a != b and a.endswith("...") and b.startswith(a[:-3])


def _overlap(tail: str, other: str, k: int = 8) -> float:
    """Share of the k-char shingles of ``tail`` that also occur in ``other``."""
    shingles = [tail[i : i + k] for i in range(len(tail) - k + 1)]
    return sum(s in other for s in shingles) / len(shingles)


def _relation(a: str, b: str) -> str | None:
    """How two distinct post lines of one blog relate, if they do."""
    if _truncation_of(a, b) or _truncation_of(b, a):
        return "truncation"
    head = _common_prefix(a, b)
    tail_a, tail_b = a[head:].removesuffix("..."), b[head:].removesuffix("...")
    same_end = _common_prefix(tail_a[::-1], tail_b[::-1])
    if max(len(tail_a), len(tail_b)) - same_end <= 16:
        return "near"  # one small edit (a mark, one term), everything else identical
    # Two edits of one post share almost all their text after the opening; two
    # different posts share little of it.
    if head >= 40 and min(len(tail_a), len(tail_b)) >= 40 \
            and _overlap(tail_a, b) < 0.5 and _overlap(tail_b, a) < 0.5:
        return "shared-opening"
    return None


def _pair_kinds(lines: list[str]) -> set[str]:
    """Which duplicate relations occur between the post lines of one blog."""
    kinds = {"exact"} if any(n > 1 for n in Counter(lines).values()) else set()
    groups: dict[tuple[str, str], list[str]] = {}
    for line in dict.fromkeys(lines):  # distinct lines, in order
        # An edit near the start breaks the head key, so near pairs also meet by tail.
        groups.setdefault(("head", line[:8]), []).append(line)
        groups.setdefault(("tail", line[-8:]), []).append(line)
    for group in groups.values():
        for i, a in enumerate(group):
            kinds.update(_relation(a, b) for b in group[i + 1 :])
    kinds.discard(None)
    return kinds


def test_same_seed_gives_identical_bytes(tmp_path, corpus):
    root, summary = corpus
    again = _write(tmp_path)
    assert again == summary
    first, second = _tree(root), _tree(tmp_path)
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []


def test_other_seed_changes_every_corpus(tmp_path):
    small = {"posts": 40, "images": MIN_IMAGES}
    _write(tmp_path / "a", seed=0, **small)
    _write(tmp_path / "b", seed=1, **small)
    for name in ("feeds/feed-jiqizhixin-0000.txt", f"articles/{ARTICLES_FILE}",
                 "images/img-00001.png"):
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()


def test_image_count_does_not_shift_the_text(tmp_path, corpus):
    root, _ = corpus
    _write(tmp_path, images=MIN_IMAGES)
    for corpus_name in ("feeds", "articles"):
        assert _tree(tmp_path / corpus_name) == _tree(root / corpus_name)


def test_writes_only_through_fs(corpus):
    root, summary = corpus
    fs = fsspec.filesystem("memory")
    base = "/sample-test-memory"
    try:
        assert write_sample_corpus(lambda c: f"{base}/{c}", fs=fs) == summary
        for name, data in _tree(root).items():
            assert fs.cat_file(f"{base}/{name}") == data, name
    finally:
        fs.rm(base, recursive=True)


def test_layout_and_counts_match_summary(corpus):
    root, summary = corpus
    tree = _tree(root)
    per_corpus = Counter(name.split("/", 1)[0] for name in tree)
    assert set(summary.files) == set(CORPORA)
    assert dict(per_corpus) == summary.files
    feeds = _feed_posts(root / "feeds")
    assert sum(map(len, feeds.values())) == summary.posts == 3000
    assert sorted(feeds) == sorted(blog.slug for blog in BLOGS)
    assert summary.files["feeds"] == len([n for n in tree if DUMP_NAME.match(n.removeprefix("feeds/"))]) + 2
    assert summary.files["articles"] == 1 and summary.articles == 300
    assert summary.images == 200
    assert summary.files["images"] == 2 * summary.images + 1  # images, masks, manifest


def test_feeds_have_placeholders_truncations_english_and_footers(corpus):
    root, _ = corpus
    lines = [line for posts in _feed_posts(root / "feeds").values() for line in posts]
    text = "\n".join(lines)
    for placeholder in PLACEHOLDERS:
        assert placeholder in text, placeholder
    assert sum(line.endswith("...") for line in lines) > len(lines) // 5
    assert any(line.isascii() for line in lines), "no English-only post"
    assert any(re.search(r"[\u4e00-\u9fff].*[A-Za-z]{4}", line) for line in lines)
    dumps = [p.read_text("utf-8") for p in (root / "feeds").glob("feed-*-*.txt")
             if DUMP_NAME.match(p.name)]
    assert any(d.rstrip("\n").rsplit("\n", 1)[-1] in FOOTERS for d in dumps)


@pytest.mark.parametrize("posts", [MIN_POSTS, 50, 3000])
def test_feeds_hold_every_duplicate_kind(tmp_path, corpus, posts):
    feeds = (corpus[0] if posts == 3000 else tmp_path) / "feeds"
    if posts != 3000:
        assert _write(tmp_path, posts=posts, images=MIN_IMAGES).posts == posts
    found = set().union(*map(_pair_kinds, _feed_posts(feeds).values()))
    assert found == {"exact", "truncation", "near", "shared-opening"}


@pytest.mark.parametrize("defect", ["empty", "invalid-utf8", "malformed-json", *DEFECTS])
def test_each_defect_is_planted_once(corpus, defect):
    _, summary = corpus
    assert list(summary.dirty.values()).count(defect) == 1


def _dirty_path(summary: SampleSummary, defect: str) -> str:
    return next(path for path, kind in summary.dirty.items() if kind == defect)


def test_dirty_feed_files(corpus):
    root, summary = corpus
    assert (root / "feeds" / _dirty_path(summary, "empty")).stat().st_size == 0
    broken = (root / "feeds" / _dirty_path(summary, "invalid-utf8")).read_bytes()
    assert BANNER.match(broken.split(b"\n", 1)[0].decode("utf-8"))
    with pytest.raises(UnicodeDecodeError):
        broken.decode("utf-8")


def test_articles(corpus):
    root, summary = corpus
    key = _dirty_path(summary, "malformed-json")
    name, line_no = re.fullmatch(r"(.+):line (\d+)", key).groups()
    assert name == ARTICLES_FILE
    lines = (root / "articles" / name).read_text("utf-8").splitlines()
    assert len(lines) == summary.articles + 1
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[int(line_no) - 1])
    docs = [json.loads(line) for i, line in enumerate(lines, 1) if i != int(line_no)]
    assert [d["id"] for d in docs] == sorted({d["id"] for d in docs})
    assert all(re.fullmatch(r"a-\d{6}", d["id"]) and d["title"] and d["tags"] for d in docs)
    assert sum("sections" not in d for d in docs) == 1
    assert any(d.get("sections") == [] for d in docs)
    full = [s for d in docs for s in d.get("sections", [])]
    assert full and all(s["heading"] and s["paragraphs"] for s in full)
    assert lines[0] == json.dumps(docs[0], ensure_ascii=False, sort_keys=True)


def _manifest(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "images" / "manifest.jsonl").read_text().splitlines()]


def test_manifest_points_to_images_and_masks(corpus):
    root, summary = corpus
    entries = _manifest(root)
    assert len(entries) == summary.images
    for entry in entries:
        image, mask = root / "images" / entry["image"], root / "images" / entry["mask"]
        assert image.is_file() and mask.is_file() and entry["label"] in SHAPES
        with Image.open(mask) as m:
            assert m.mode == "L"
            values, mask_size = set(np.unique(np.asarray(m)).tolist()), m.size
        assert values <= {0, SHAPES.index(entry["label"]) + 1}, entry
        assert SHAPES.index(entry["label"]) + 1 in values, entry
        if entry["image"] in summary.dirty:
            continue
        with Image.open(image) as im:
            assert im.mode == "RGB" and min(im.size) >= 32 and max(im.size) <= 64
            assert im.size == mask_size


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_dirty_images(corpus):
    root, summary = corpus
    images = root / "images"
    clean = [e["image"] for e in _manifest(root) if e["image"] not in summary.dirty]
    with pytest.raises((OSError, SyntaxError)), Image.open(
            io.BytesIO((images / _dirty_path(summary, "truncated-png")).read_bytes())) as im:
        im.load()
    exact = (images / _dirty_path(summary, "exact-duplicate")).read_bytes()
    assert any((images / name).read_bytes() == exact for name in clean)
    near = _pixels(images / _dirty_path(summary, "near-duplicate"))
    close = [name for name in clean if _pixels(images / name).shape == near.shape
             and 0 < np.abs(_pixels(images / name) - near).mean() <= 6]
    assert close, "no clean image the near duplicate is close to"
    with Image.open(images / _dirty_path(summary, "grayscale")) as im:
        assert im.mode == "L"
    with Image.open(images / _dirty_path(summary, "tiny")) as im:
        assert im.size == (4, 4)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"posts": MIN_POSTS - 1}, ValueError),
    ({"images": MIN_IMAGES - 1}, ValueError),
    ({"seed": -1}, ValueError),
    ({"posts": True}, TypeError),
    ({"images": 10.0}, TypeError),
])
def test_rejects_bad_sizes(tmp_path, kwargs, error):
    with pytest.raises(error):
        _write(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir()), "nothing is written before the arguments are checked"
