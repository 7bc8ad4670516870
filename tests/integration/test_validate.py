"""Great Expectations gates on real GE 1.x: each suite passes on good data and fails on
bad data with a message naming the expectation and the column; Data Docs are written."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config import load_config
from features.exports import decode_spec
from features.spec import load_spec
from features.transform import encode_batch
from pipelines.validate.checks import check_clean_images, check_clean_posts, check_dataset
from pipelines.validate.gate import ValidationFailed
from records.example_codec import encode_example
from records.index import index_path
from records.manifest import load_manifest
from records.writer import DatasetWriter

pytestmark = pytest.mark.integration

TOPICS = ["nlp", "cv", "data", "systems", "other"]


@pytest.fixture(scope="module")
def spec():
    cfg = load_config()
    return load_spec(cfg.resolve_path(cfg.feature_spec))


def _clean_partition(root, **overrides):
    rows = {"doc_id": ["a1", "b2", "c3"], "text": ["RoPE 位置编码 explained", "Spark joins 101",
                                                   "Beam on Flink"],
            "length": [19, 15, 13], "lang": ["mixed", "en", "en"], "topic": ["nlp", "data", "data"],
            "truncated": [False, True, False]}
    rows.update(overrides)
    (root / "dt=2026-11-01").mkdir(parents=True)
    pq.write_table(pa.table(rows), root / "dt=2026-11-01" / "part-0.parquet")
    return [str(root / "dt=2026-11-01")]


def test_clean_posts_gate_passes_and_writes_data_docs(tmp_path):
    result = check_clean_posts(_clean_partition(tmp_path / "t"), min_chars=8, max_chars=100,
                               topics=TOPICS, docs_dir=str(tmp_path / "docs"))
    assert result.success and result.evaluated == 6
    index = tmp_path / "docs" / "clean_posts" / "index.html"
    assert index.exists() and "clean_posts" in index.read_text()


@pytest.mark.parametrize(
    ("override", "expectation", "column"),
    [
        ({"doc_id": ["a1", "a1", "c3"]}, "expect_column_values_to_be_unique", "doc_id"),
        ({"text": ["x" * 9, None, "y" * 9]}, "expect_column_values_to_not_be_null", "text"),
        ({"length": [19, 3, 13]}, "expect_column_values_to_be_between", "length"),
        ({"lang": ["mixed", "fr", "en"]}, "expect_column_values_to_be_in_set", "lang"),
        ({"topic": ["nlp", "cooking", "data"]}, "expect_column_values_to_be_in_set", "topic"),
    ],
)
def test_clean_posts_gate_names_the_failed_expectation(tmp_path, override, expectation, column):
    with pytest.raises(ValidationFailed) as info:
        check_clean_posts(_clean_partition(tmp_path / "t", **override), min_chars=8,
                          max_chars=100, topics=TOPICS)
    message = str(info.value)
    assert f"{expectation} on {column} failed" in message
    assert len(info.value.result.failures) == 1, message


def _dataset(tmp_path, spec, texts):
    batch = pa.RecordBatch.from_pydict({
        "doc_id": [f"d{i}" for i in range(len(texts))], "text": texts,
        "topic": ["nlp"] * len(texts), "length": [len(t) for t in texts]})
    uri = str(tmp_path / "records" / "posts" / "v=1")
    with DatasetWriter(uri=uri, dataset="posts", version="1",
                       feature_spec=decode_spec(spec), max_records_per_shard=4) as writer:
        for _, example in encode_batch(batch, spec):
            writer.write("train", example)
    return uri


def test_dataset_gates_pass_on_encoded_posts(tmp_path, spec):
    uri = _dataset(tmp_path, spec, [f"post number {i} 位置" for i in range(10)])
    results = check_dataset(uri, spec=spec, docs_dir=str(tmp_path / "docs"))
    assert [(r.suite, r.success) for r in results] == [
        ("dataset_shards", True), ("dataset_examples", True)]
    assert (tmp_path / "docs" / "dataset_examples" / "index.html").exists()


def test_dataset_gate_catches_an_index_that_disagrees_with_the_manifest(tmp_path, spec):
    uri = _dataset(tmp_path, spec, [f"post number {i}" for i in range(10)])
    shard = load_manifest(uri).split("train").shards[0]
    idx = tmp_path / "records" / "posts" / "v=1" / index_path(shard.path)
    idx.write_text("\n".join(idx.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(ValidationFailed, match="manifest_records/index_records"):
        check_dataset(uri, spec=spec)


def test_dataset_gate_catches_token_ids_and_labels_out_of_range(tmp_path, spec):
    # What a buggy encoder would write: id 300 >= the byte vocabulary (259), topic id 7 >= 5.
    uri = str(tmp_path / "records" / "posts" / "v=1")
    with DatasetWriter(uri=uri, dataset="posts", version="1",
                       feature_spec=decode_spec(spec)) as writer:
        writer.write("train", encode_example({"input_ids": [5, 300], "topic": [1], "length": [2]}))
        writer.write("train", encode_example({"input_ids": [5, 6], "topic": [7], "length": [2]}))
    with pytest.raises(ValidationFailed) as info:
        check_dataset(uri, spec=spec)
    message = str(info.value)
    assert "on max_token_id failed" in message and "on topic failed" in message


IMAGE_LABELS = ["circle", "square", "triangle"]


def _images_partition(root, **overrides):
    """Three clean_images rows of 4x2 RGB pixels; the last one has no mask."""
    rows = {"image_id": ["i1", "i2", "i3"], "content_sha256": ["a" * 64, "b" * 64, "c" * 64],
            "label": ["circle", "square", "circle"], "height": [2, 2, 2], "width": [4, 4, 4],
            "channels": [3, 3, 3], "image": [bytes(24), bytes(range(24)), bytes(24)],
            "mask": [bytes(8), bytes(8), None], "phash": ["0f" * 8, "f0" * 8, "ff" * 8]}
    rows.update(overrides)
    folder = root / "clean_images" / "dt=2026-11-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.table(rows), folder / "part-00000-of-00001.parquet")
    (folder / "_SUCCESS").write_bytes(b"")  # the committer's marker is not a data file
    return [str(folder)]


def test_clean_images_gate_passes_and_writes_data_docs(tmp_path):
    result = check_clean_images(_images_partition(tmp_path / "t"), height=2, width=4,
                                labels=IMAGE_LABELS, docs_dir=str(tmp_path / "docs"))
    assert result.success and result.evaluated == 10
    assert (tmp_path / "docs" / "clean_images" / "index.html").exists()


@pytest.mark.parametrize(
    ("override", "expectation", "column"),
    [
        ({"image_id": ["i1", "i1", "i3"]}, "expect_column_values_to_be_unique", "image_id"),
        ({"label": ["circle", "hexagon", "circle"]}, "expect_column_values_to_be_in_set", "label"),
        ({"width": [4, 5, 4]}, "expect_column_values_to_be_between", "width"),
        ({"height": [2, 2, 3]}, "expect_column_values_to_be_between", "height"),
        ({"channels": [3, 1, 3]}, "expect_column_values_to_be_between", "channels"),
        ({"image": [bytes(24), bytes(23), bytes(24)]}, "expect_column_values_to_be_between",
         "image_bytes"),
        ({"mask": [bytes(8), bytes(24), None]}, "expect_column_values_to_be_between",
         "mask_bytes"),
        ({"phash": ["0f" * 8, "f0" * 7, "ff" * 8]}, "expect_column_value_lengths_to_equal",
         "phash"),
    ],
)
def test_clean_images_gate_names_the_failed_expectation(tmp_path, override, expectation, column):
    with pytest.raises(ValidationFailed) as info:
        check_clean_images(_images_partition(tmp_path / "t", **override), height=2, width=4,
                           labels=IMAGE_LABELS)
    message = str(info.value)
    assert f"{expectation} on {column} failed" in message
    assert len(info.value.result.failures) == 1, message


def test_clean_images_gate_needs_its_partitions(tmp_path):
    with pytest.raises(FileNotFoundError, match="clean_images partition"):
        check_clean_images([str(tmp_path / "nope")], height=2, width=4, labels=IMAGE_LABELS)
