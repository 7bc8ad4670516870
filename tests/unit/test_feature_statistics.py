"""Per-split, per-feature statistics: exact, mergeable in any grouping, JSON only, checked."""

from __future__ import annotations

import json
import pickle
import random
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from features.artifacts import Artifacts
from features.spec import FeatureSpec, load_spec
from features.statistics import SpecStatistics, read_statistics, statistics_json
from features.statistics_blocks import NumericBlock, ValueCounts, exact_sums
from features.transform import transform
from pipelines.encode.shards import ShardPlan, batch_statistics

ROOT = Path(__file__).resolve().parents[2]
PLAN = ShardPlan({"train": 0.7, "eval": 0.3}, {"train": 2, "eval": 1})
TOPICS = ["nlp", "cv", "data", "systems", "other"]


@pytest.fixture(scope="module")
def posts():
    return load_spec(ROOT / "conf" / "features" / "posts.yaml")


def _rows(n: int, seed: int = 0) -> pa.RecordBatch:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(["spark", "关于", "beam", "é", "x"]) for _ in range(rng.randint(1, 9)))
             for _ in range(n)]
    return pa.RecordBatch.from_pydict({
        "doc_id": [f"doc-{seed}-{i:04d}" for i in range(n)], "text": texts,
        "topic": [rng.choice(TOPICS) for _ in range(n)], "length": [len(t) for t in texts]})


@pytest.mark.parametrize("values", [
    [0.1, 0.2, 0.3, -1e-300, 5e-324, 1e300, -1e300, 0.0, -0.0],
    list(np.random.default_rng(1).normal(1e6, 1e-3, 300)),        # a mean that swamps the spread
    list(np.random.default_rng(2).standard_cauchy(5000) * 1e5),  # a spread over 15 decades
    [3.0, 4.0, -7.0, 2.0 ** 40],                                  # integers: the int64 shortcut
])
def test_exact_sums_are_the_exact_sums_in_any_grouping(values):
    x = np.array(values, np.float64)
    total, squares = exact_sums(x)
    assert total == sum(Fraction(v) for v in values)
    assert squares == sum(Fraction(v) ** 2 for v in values)
    cut = len(x) // 3
    parts = [exact_sums(x[:cut]), exact_sums(x[cut:])]
    assert (parts[0][0] + parts[1][0], parts[0][1] + parts[1][1]) == (total, squares)


def test_numeric_block_summary_and_any_merge_order_give_the_same_bits():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(3, 1, 4000), -rng.lognormal(1, 1, 500), np.zeros(50),
                             [np.nan, np.inf]])
    whole = NumericBlock().add(values)
    chunks = np.array_split(rng.permutation(values), 7)
    merged = NumericBlock()
    for chunk in reversed(chunks):
        merged.merge(NumericBlock().add(chunk))
    assert json.dumps(merged.summary()) == json.dumps(whole.summary())
    finite = values[np.isfinite(values)]
    summary = whole.summary()
    assert (summary["count"], summary["non_finite"], summary["zeros"]) == (len(finite), 2, 50)
    assert summary["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert summary["std"] == pytest.approx(finite.std(), rel=1e-12)
    assert (summary["min"], summary["max"]) == (finite.min(), finite.max())
    for q, value in summary["quantiles"]:  # read from 1%-wide log buckets
        exact = np.sort(finite)[min(int(np.ceil(q * len(finite))), len(finite) - 1)]
        assert value == pytest.approx(exact, rel=0.0101), q
    again = NumericBlock.from_data(json.loads(json.dumps(whole.to_data())), "block")
    assert again.to_data() == whole.to_data()


def test_integer_columns_take_a_shortcut_to_the_same_block():
    ints = np.concatenate([np.random.default_rng(4).integers(0, 1 << 16, 5000), [0, 0, 1]])
    shortcut, general = NumericBlock().add(ints), NumericBlock().add(ints.astype(np.float64))
    assert shortcut.to_data() == general.to_data() and shortcut.summary() == general.summary()
    wide = np.array([-5, 70000, 3])  # outside [0, 2**16): the general path
    assert NumericBlock().add(wide).to_data() == NumericBlock().add(wide * 1.0).to_data()


def test_value_counts_hold_small_negative_and_huge_ids():
    ids = np.array([3, 3, 0, -1, 2 ** 40, 2 ** 40, 2 ** 40, 7])
    counts = ValueCounts().add(ids[:4]).merge(ValueCounts().add(ids[4:]))
    assert counts.items() == [(-1, 1), (0, 1), (3, 2), (7, 1), (2 ** 40, 3)]
    assert ValueCounts.from_data(counts.to_data(), "v").items() == counts.items()
    with pytest.raises(ValueError, match="v: an id is counted twice"):
        ValueCounts.from_data([[1, 2], [1, 3]], "v")


def _stats_of(spec, batches, *, splits=PLAN):
    statistics = SpecStatistics(spec, list(splits.shards))
    accs = [batch_statistics(b, spec, None, splits, statistics) for b in batches]
    return statistics, statistics.extract(statistics.merge(accs))


def test_the_same_rows_give_the_same_file_however_they_are_batched(posts):
    rows = pa.Table.from_batches([_rows(400, seed=s) for s in range(3)]).combine_chunks()
    one = _stats_of(posts, rows.to_batches())[1]
    shuffled = rows.take(np.random.default_rng(0).permutation(rows.num_rows))
    many = _stats_of(posts, shuffled.to_batches(max_chunksize=37))[1]
    assert statistics_json(many) == statistics_json(one)
    assert sum(p["examples"] for p in one["splits"].values()) == 1200


def test_counts_lengths_and_labels_are_those_of_the_encoded_rows(posts):
    batch = _rows(300)
    statistics, doc = _stats_of(posts, [batch])
    encoded = transform(batch, posts).encoded
    split_of = PLAN.split_indices(PLAN.gids(encoded.column("doc_id")))
    for index, split in enumerate(PLAN.shards):
        part = doc["splits"][split]
        mine = encoded.filter(pa.array(split_of == index))
        topics = Counter(np.array(batch.column("topic").to_pylist())[split_of == index].tolist())
        assert part["examples"] == mine.num_rows > 0
        assert dict(part["features"]["topic"]["values"]["counts"]) == dict(topics)  # labels
        tokens = Counter(str(t) for t in mine.column("input_ids").flatten().to_pylist())
        assert dict(part["features"]["input_ids"]["values"]["counts"]) == dict(tokens)
        lengths = [len(ids) for ids in mine.column("input_ids").to_pylist()]
        assert part["features"]["input_ids"]["lengths"]["max"] == max(lengths)
        assert part["features"]["input_ids"]["lengths"]["mean"] == pytest.approx(np.mean(lengths))
        numbers = np.array(batch.column("length").to_pylist())[split_of == index]
        assert part["features"]["length"]["numeric"]["mean"] == pytest.approx(numbers.mean())
        assert part["features"]["length"]["numeric"]["std"] == pytest.approx(numbers.std())
    # The numpy path (no numba, no known width, or an id outside it) counts the same tokens.
    for widths in ({}, {"input_ids": 50}):  # byte ids reach 258: the kernel gives up
        statistics.widths = widths
        plain = statistics.extract(statistics.add_batch(statistics.create(), batch, encoded,
                                                        split_of))
        assert statistics_json(plain) == statistics_json(doc)


def test_quarantined_rows_are_left_out_and_oov_ids_are_labelled(tmp_path):
    spec = FeatureSpec.model_validate({"key": "doc_id", "on_error": "quarantine", "features": {
        "topic": {"kind": "categorical", "source": "topic", "vocabulary": ["nlp", "cv"],
                  "num_oov_buckets": 2},
        "score": {"kind": "numeric", "source": "score", "normalize": "z_score"},
        "photo": {"kind": "image", "source": "photo", "height": 1, "width": 2, "channels": 1,
                  "required": False}}})
    batch = pa.RecordBatch.from_pydict({
        "doc_id": [f"d{i}" for i in range(6)], "topic": ["nlp", "cv", "gardening", "nlp", "cv", None],
        "score": ["1.5", " 2.5", "3.5", "x", "4.5", "5.5"],
        "photo": [b"ab", None, b"cd", b"ef", None, b"gh"]})
    artifacts = Artifacts(vocabularies={"topic": ["nlp", "cv"]},
                          stats={"score": {"mean": 0.0, "std": 1.0}})
    one = ShardPlan({"train": 1.0}, {"train": 1})
    statistics = SpecStatistics(spec, ["train"])
    doc = statistics.extract(batch_statistics(batch, spec, artifacts, one, statistics), artifacts)
    part = doc["splits"]["train"]
    assert part["examples"] == 4  # "x" is not a number, the null topic is null: quarantined
    counts = dict(part["features"]["topic"]["values"]["counts"])
    assert sum(counts.values()) == 4 and counts["nlp"] == 1 and counts["cv"] == 2
    oov = {k: n for k, n in counts.items() if k.startswith("<oov ")}  # "gardening"
    assert list(oov.values()) == [1] and set(oov) <= {"<oov 0>", "<oov 1>"}
    assert part["features"]["score"]["numeric"]["mean"] == (1.5 + 2.5 + 3.5 + 4.5) / 4  # unscaled
    photo = part["features"]["photo"]
    assert (photo["present"], photo["missing"], photo["lengths"]["mean"]) == (2, 2, 2.0)


def test_accumulators_travel_as_checked_json_never_as_pickles(posts):
    statistics = SpecStatistics(posts, list(PLAN.shards))
    acc = batch_statistics(_rows(50), posts, None, PLAN, statistics)
    data = statistics.to_json(acc)
    back = statistics.from_json(data, source="partition 3")
    assert statistics_json(statistics.extract(back)) == statistics_json(statistics.extract(acc))
    with pytest.raises(ValueError, match="partition 3: not .* JSON .*never loaded"):
        statistics.from_json(pickle.dumps(acc), source="partition 3")
    doc = json.loads(data)
    del doc["splits"]["eval"]["features"]["topic"]
    with pytest.raises(ValueError, match=r"partition 3: splits.eval.features: \[.*\], expected"):
        statistics.from_json(json.dumps(doc).encode(), source="partition 3")
    doc = json.loads(data)
    doc["splits"]["train"]["features"]["length"]["numeric"]["count"] += 1  # tampered
    with pytest.raises(ValueError, match="splits.train.features.length.numeric: the histogram"):
        statistics.from_json(json.dumps(doc).encode(), source="partition 3")
    other = SpecStatistics(posts, ["train", "test"])
    with pytest.raises(ValueError, match=r"splits \['eval', 'train'\], expected \['train', 'test'\]"):
        other.from_json(data, source="partition 3")


def test_a_statistics_file_is_read_back_checked(posts):
    doc = _stats_of(posts, [_rows(20)])[1]
    assert read_statistics(statistics_json(doc)) == json.loads(statistics_json(doc))
    with pytest.raises(ValueError, match="format: expected 'shardforge.features.statistics/1'"):
        read_statistics(b'{"format": "something/else"}', source="s.json")
    broken = json.loads(statistics_json(doc))
    broken["splits"]["train"]["features"]["topic"]["present"] = "many"
    with pytest.raises(ValueError, match="splits.train.features.topic.present: expected int"):
        read_statistics(json.dumps(broken).encode(), source="s.json")


def test_route_counts_from_its_own_transform_exactly_as_a_fresh_transform(posts, monkeypatch):
    """route() hands the transform its examples came from to the statistics (one transform
    per batch, not two) and the statistics are the same bits as from a fresh transform."""
    import importlib

    import pipelines.encode.shards as shards

    transform_module = importlib.import_module("features.transform")

    batch = _rows(120, seed=5)
    statistics = SpecStatistics(posts, list(PLAN.shards))
    fresh = statistics_json(statistics.extract(batch_statistics(batch, posts, None, PLAN,
                                                                statistics)))
    calls = []
    real = transform_module.transform
    monkeypatch.setattr(transform_module, "transform", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(shards, "transform", transform_module.transform)
    routed = shards.route(batch, posts, None, PLAN, statistics)
    assert len(calls) == 1
    assert statistics_json(statistics.extract(routed.statistics)) == fresh
