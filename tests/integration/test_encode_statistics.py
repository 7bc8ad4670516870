"""Spark, Beam and one in-process pass give the same ``statistics.json`` for the same rows.

Each engine cuts the rows its own way (Spark partitions, Beam bundles); the in-process pass
counts them as one batch. Statistics merge exactly, so the three files are equal byte for
byte, and each split counts exactly the rows its shards hold (quarantined rows left out).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.lake import Lake
from features.artifacts import read_artifacts, static_artifacts
from features.spec import load_spec
from features.statistics import SpecStatistics, read_statistics, statistics_json
from pipelines.beam.encode import run_encode as beam_encode
from pipelines.encode.shards import ShardPlan, batch_statistics
from pipelines.spark.encode import run_encode as spark_encode
from records.manifest import load_manifest
from records.uri import resolve

pytestmark = pytest.mark.integration

SPLITS, SHARDS = {"train": 0.75, "eval": 0.25}, {"train": 3, "eval": 1}
MIXED = """
key: doc_id
on_error: quarantine
features:
  input_ids: {kind: text, source: text, tokenizer: bpe, vocab_size: 300, max_tokens: 48}
  topic: {kind: categorical, source: topic, computed_vocabulary: {top_k: 3}}
  length_bucket: {kind: bucketized, source: length, num_buckets: 4}
  score: {kind: numeric, source: score, normalize: z_score}
  lang: {kind: hashed, source: lang, hash_bucket_size: 8}
  topic_x_lang: {kind: crossed, columns: [topic, lang], hash_bucket_size: 16}
  photo: {kind: image, source: photo, height: 2, width: 2, channels: 1, required: false}
"""
PACKED = """
key: doc_id
on_error: quarantine
features:
  input_ids: {kind: text, source: text, max_tokens: 40, layout: packed, block_size: 16}
"""


def _inputs(folder: Path, n: int = 240) -> tuple[list[str], pa.Table]:
    """Rows over three Parquet files (so the engines batch them differently), some bad."""
    rng = random.Random("statistics")
    words = ["spark", "beam", "关于", "lake", "é", "tensor", "the"]
    table = pa.table({
        "doc_id": [f"doc-{i:04d}" for i in range(n)],
        "text": [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(n)],
        "topic": [rng.choice(["nlp", "cv", "data", "systems", "other"]) for _ in range(n)],
        "length": [rng.randint(5, 400) for _ in range(n)],
        "score": [None if i % 53 == 7 else rng.gauss(3.0, 2.0) for i in range(n)],  # null: bad
        "lang": [rng.choice(["zh", "en", "mixed"]) for _ in range(n)],
        "photo": pa.array([None if i % 3 else bytes(rng.randrange(256) for _ in range(4 - (i % 31 == 0)))
                           for i in range(n)], pa.binary()),  # 1 in 3 has one; a few wrong-sized
    })
    folder.mkdir(parents=True)
    for i in range(3):
        pq.write_table(table.take(np.arange(i, n, 3)), folder / f"part-{i}.parquet",
                       row_group_size=29)
    return [f"{folder}/*.parquet"], table


def _spec(tmp_path: Path, text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return load_spec(path)


def _statistics_bytes(uri: str) -> bytes:
    return (Path(resolve(uri)[1]) / "statistics.json").read_bytes()


def _engines(spark, tmp_path, spec, inputs):
    lake = Lake(str(tmp_path / "lake"))
    common = dict(lake=lake, inputs=inputs, spec=spec, dataset="posts", splits=SPLITS, shards=SHARDS)
    return beam_encode(version="beam", **common), spark_encode(spark, version="spark",
                                                               partitions=3, **common)


def test_every_engine_and_one_pass_in_process_give_equal_statistics(spark, tmp_path):
    spec = _spec(tmp_path, MIXED)
    inputs, table = _inputs(tmp_path / "in")
    beam, spark_result = _engines(spark, tmp_path, spec, inputs)
    assert beam.quarantined == spark_result.quarantined > 0
    assert _statistics_bytes(beam.uri) == _statistics_bytes(spark_result.uri)
    # The same statistics from one in-process pass over all the rows (the "local writer").
    artifacts = read_artifacts(load_manifest(beam.uri).artifacts["features"])
    statistics = SpecStatistics(spec, list(SHARDS))
    rows = table.combine_chunks().to_batches()[0]
    local = batch_statistics(rows, spec, artifacts, ShardPlan(SPLITS, SHARDS), statistics)
    assert statistics_json(statistics.extract(local, artifacts)) == _statistics_bytes(beam.uri)

    doc = read_statistics(_statistics_bytes(beam.uri))
    manifest = load_manifest(beam.uri)
    assert beam.artifacts["statistics"] == f"{beam.uri}/statistics.json" == \
        manifest.artifacts["statistics"]
    for split, part in doc["splits"].items():
        assert part["examples"] == manifest.splits[split].records > 0  # quarantine left out
        photo = part["features"]["photo"]
        assert photo["present"] + photo["missing"] == part["examples"] and photo["present"] > 0
        assert photo["lengths"]["min"] == photo["lengths"]["max"] == 4  # wrong sizes quarantined
        vocabulary = set(artifacts.vocabularies["topic"])  # top_k 3: the others quarantined
        assert {v for v, _ in part["features"]["topic"]["values"]["counts"]} <= vocabulary
        assert part["features"]["score"]["numeric"]["count"] == part["examples"]
    assert sum(p["examples"] for p in doc["splits"].values()) == beam.documents


def test_packed_text_counts_documents_not_blocks_on_both_engines(spark, tmp_path):
    spec = _spec(tmp_path, PACKED)
    inputs, table = _inputs(tmp_path / "in", n=90)
    beam, spark_result = _engines(spark, tmp_path, spec, inputs)
    assert _statistics_bytes(beam.uri) == _statistics_bytes(spark_result.uri)
    doc = read_statistics(_statistics_bytes(beam.uri))
    assert sum(p["examples"] for p in doc["splits"].values()) == beam.documents == 90
    local = SpecStatistics(spec, list(SHARDS))
    acc = batch_statistics(table.combine_chunks().to_batches()[0], spec, static_artifacts(spec),
                           ShardPlan(SPLITS, SHARDS), local)
    assert statistics_json(local.extract(acc)) == _statistics_bytes(spark_result.uri)
    lengths = doc["splits"]["train"]["features"]["input_ids"]["lengths"]
    assert lengths["max"] <= 40 and lengths["min"] >= 1  # per document, not the 16-token blocks
