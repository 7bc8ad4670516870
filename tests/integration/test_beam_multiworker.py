"""Beam with more than one worker: the DirectRunner's 2 worker processes write what in_memory writes.

``multi_processing`` runs the pipeline on Beam's portable runner with each worker an SDK
harness in a process of its own, so every DoFn, combiner and side input is pickled and
crosses a process boundary, as on Flink or Dataflow; analyzers merge accumulators that
different processes built. The shards and their indexes must not change, nor the
artifacts: vocabularies and quantile boundaries exactly; the moments of ``z_score`` up to
float rounding (partial sums merged in another order differ in the last bits of ``var``;
the float32 features computed from them do not).
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.lake import Lake
from features.spec import load_spec
from pipelines.beam.encode import run_encode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPLITS, SHARDS = {"train": 0.8, "eval": 0.2}, {"train": 3, "eval": 1}
SPEC = """
key: doc_id
on_error: quarantine
features:
  input_ids: {kind: text, source: text, tokenizer: bytes, max_tokens: 48, append_eos: false}
  topic: {kind: categorical, source: topic, computed_vocabulary: {top_k: 5}}
  length_bucket: {kind: bucketized, source: length, num_buckets: 4}
  length_z: {kind: numeric, source: length, normalize: z_score}
  topic_x_bucket: {kind: crossed, columns: [topic, length_bucket], hash_bucket_size: 16}
"""
TOPICS = ["nlp", "cv", "data", "systems", "other", "nlp", "cv"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """600 rows in 4 Parquet files (two null texts to quarantine), so both workers get some."""
    folder = tmp_path_factory.mktemp("beam-inputs")
    n = 600
    table = pa.table({
        "doc_id": [f"doc-{i:05d}" for i in range(n)],
        "text": [None if i in (17, 401) else f"post {i} 关于 Beam {'x' * (i % 37)}" for i in range(n)],
        "topic": [TOPICS[i % len(TOPICS)] for i in range(n)],
        "length": list(range(n)),
    })
    for part in range(4):
        pq.write_table(table.slice(part * 150, 150), folder / f"part-{part:05d}.parquet")
    spec_file = folder / "spec.yaml"
    spec_file.write_text(SPEC)
    return [f"{folder}/*.parquet"], load_spec(spec_file)


def _encode(root, inputs, options: dict):
    files, spec = inputs
    result = run_encode(lake=Lake(str(root)), inputs=files, spec=spec, dataset="posts", version="1",
                        splits=SPLITS, shards=SHARDS, options=options)
    dataset = root / "records" / "posts" / "v=1"
    written = {p.relative_to(dataset).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(dataset.glob("split=*/part-*"))}
    folder = root / "artifacts" / "posts" / "v=1"
    artifacts = json.loads((folder / "artifacts.json").read_text())
    artifacts["vocab.topic"] = (folder / "vocab.topic.txt").read_text()
    return result, written, artifacts


def test_two_worker_processes_write_the_shards_in_memory_writes(tmp_path, inputs):
    one = _encode(tmp_path / "in-memory", inputs,
                  {"direct_num_workers": 1, "direct_running_mode": "in_memory"})
    two = _encode(tmp_path / "two-processes", inputs,
                  {"direct_num_workers": 2, "direct_running_mode": "multi_processing"})
    (result, shards, artifacts), (result2, shards2, artifacts2) = one, two
    assert (result.rows_in, result.documents, result.quarantined) == (600, 598, 2)
    assert (result2.rows_in, result2.documents, result2.quarantined) == (600, 598, 2)
    assert len(shards) == 8 and shards2 == shards  # 4 shards and their .idx, byte for byte
    moments, moments2 = artifacts.pop("stats")["length_z"], artifacts2.pop("stats")["length_z"]
    assert artifacts2 == artifacts and artifacts["boundaries"]["length_bucket"]
    assert moments2 == pytest.approx(moments, rel=1e-12) and moments2["count"] == moments["count"]
