"""features/: spec validation, the vectorized transform, and stable split assignment."""

from __future__ import annotations

import collections

import pyarrow as pa
import pytest

from core.config import load_config
from features.spec import BYTE_VOCAB_SIZE, SpecError, load_spec
from features.split import assign
from features.transform import byte_token_ids, encode_batch, transform_batch
from records.example_codec import decode_example


@pytest.fixture(scope="module")
def spec():
    cfg = load_config()
    return load_spec(cfg.resolve_path(cfg.feature_spec))


def _rows(**overrides):
    rows = {"doc_id": ["a1", "b2", "c3"], "text": ["RoPE 位置编码", "", "Spark"],
            "topic": ["nlp", "other", "data"], "length": [9, 0, 5]}
    rows.update(overrides)
    return pa.RecordBatch.from_pydict(rows)


@pytest.mark.parametrize(
    ("texts", "max_tokens", "eos", "expected"),
    [
        (["ab", ""], 8, False, [[100, 101], []]),
        (["ab", ""], 8, True, [[100, 101, 2], [2]]),
        (["abcdef"], 3, True, [[100, 101, 2]]),
        (["é"], 8, False, [[0xC3 + 3, 0xA9 + 3]]),  # UTF-8 bytes, not code points
    ],
)
def test_byte_token_ids(texts, max_tokens, eos, expected):
    ids = byte_token_ids(pa.array(texts), max_tokens=max_tokens, append_eos=eos)
    assert ids.to_pylist() == expected


def test_byte_token_ids_on_a_sliced_array():
    sliced = pa.array(["xx", "ab", "c"]).slice(1)
    assert byte_token_ids(sliced, max_tokens=8, append_eos=False).to_pylist() == [[100, 101], [102]]


def test_transform_encodes_every_feature(spec):
    out = transform_batch(_rows(), spec)
    assert out.column("topic").to_pylist() == [0, 4, 2]  # index in the vocabulary list
    assert out.column("length").to_pylist() == [9, 0, 5]
    ids = out.column("input_ids").to_pylist()
    assert ids[0] == [b + 3 for b in "RoPE 位置编码".encode()]
    assert max(max(r) for r in ids if r) < BYTE_VOCAB_SIZE


def test_encode_batch_round_trips_through_the_codec(spec):
    encoded = encode_batch(_rows(), spec)
    assert [key for key, _ in encoded] == ["a1", "b2", "c3"]
    decoded = decode_example(encoded[2][1])
    assert decoded["input_ids"].tolist() == [b + 3 for b in b"Spark"]
    assert decoded["topic"].tolist() == [2]
    assert decoded["length"].tolist() == [5]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"topic": ["nlp", "gardening", "data"]}, "'topic'.*row 1 \\(doc_id=b2\\).*'gardening' is not in the closed vocabulary"),
        ({"text": ["ok", None, "ok"]}, "'input_ids'.*row 1 \\(doc_id=b2\\): value is null"),
        ({"length": [1, 2, None]}, "'length'.*row 2 \\(doc_id=c3\\): value is null"),
    ],
)
def test_bad_values_name_feature_column_and_row(spec, overrides, message):
    with pytest.raises(ValueError, match=message):
        transform_batch(_rows(**overrides), spec)


def test_missing_column_is_named(spec):
    batch = _rows()
    batch = batch.drop_columns(["topic"])
    with pytest.raises(ValueError, match="input column 'topic' is missing"):
        transform_batch(batch, spec)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("key: k\nfeatures:\n  t: {kind: text, source: s, max_tokens: 0}\n", "features.t.text.max_tokens"),
        ("key: k\nfeatures:\n  t: {kind: colour, source: s}\n", "features.t"),
        ("key: k\nfeatures:\n  t: {kind: numeric, source: s, dtype: int64, scale: 2}\n", "unknown key"),
        ("features: {}\n", "key"),
    ],
)
def test_spec_errors_name_the_key(tmp_path, yaml_text, expected):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml_text)
    with pytest.raises(SpecError, match=expected):
        load_spec(path)


def test_split_assignment_is_stable_and_follows_ratios():
    splits, shards = {"train": 0.8, "eval": 0.2}, {"train": 4, "eval": 2}
    keys = [f"doc-{i}" for i in range(4000)]
    first = [assign(k, splits, shards) for k in keys]
    assert first == [assign(k, splits, shards) for k in reversed(keys)][::-1]
    per_split = collections.Counter(split for split, _ in first)
    assert 0.77 < per_split["train"] / len(keys) < 0.83
    assert {shard for split, shard in first if split == "eval"} == {0, 1}
    assert {shard for split, shard in first if split == "train"} == {0, 1, 2, 3}
