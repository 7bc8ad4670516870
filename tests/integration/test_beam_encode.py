"""The Beam encode pipeline on the DirectRunner: Parquet rows → committed TFRecord dataset."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.spec import load_spec
from features.split import assign
from pipelines.beam.encode import run_encode
from records.example_codec import decode_example
from records.framing import iter_records
from shardforge.config import load_config

pytestmark = pytest.mark.integration

SPLITS, SHARDS = {"train": 0.75, "eval": 0.25}, {"train": 3, "eval": 1}


@pytest.fixture(scope="module")
def spec():
    cfg = load_config()
    return load_spec(cfg.resolve_path(cfg.feature_spec))


def _write_inputs(folder, rows, files=2):
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(rows)
    step = -(-len(table) // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), folder / f"part-{i:05d}.parquet")
    return [f"{folder}/*.parquet"]


def _rows(n, topic=lambda i: ["nlp", "cv", "data", "systems", "other"][i % 5]):
    return {"doc_id": [f"doc-{i:04d}" for i in range(n)], "text": [f"post {i} 关于 Spark" for i in range(n)],
            "topic": [topic(i) for i in range(n)], "length": list(range(n))}


def _encode(tmp_path, inputs, spec, name="v=1"):
    return run_encode(inputs=inputs, output_uri=(tmp_path / "records" / "posts" / name).as_uri(), spec=spec,
                      dataset="posts", version="1", splits=SPLITS, shards=SHARDS,
                      options={"direct_num_workers": 1, "direct_running_mode": "in_memory"})


def _records(dataset_dir):
    return {p.relative_to(dataset_dir).as_posix(): list(iter_records(str(p)))
            for p in sorted(dataset_dir.glob("split=*/part-*.tfrecord"))}


def test_encode_writes_a_complete_deterministic_dataset(tmp_path, spec):
    rows = _rows(60)
    result = _encode(tmp_path, _write_inputs(tmp_path / "in", rows), spec)
    dataset = tmp_path / "records" / "posts" / "v=1"
    assert result.rows_in == 60 and sum(result.records.values()) == 60
    assert (dataset / "_SUCCESS").exists()
    assert not list((tmp_path / "records" / "posts").glob("_staging-*"))
    shards = _records(dataset)
    assert sorted(shards) == ["split=eval/part-00000-of-00001.tfrecord"] + [
        f"split=train/part-{i:05d}-of-00003.tfrecord" for i in range(3)]
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert {s: m["records"] for s, m in manifest["splits"].items()} == result.records
    # Every row lands in the split and shard its key hashes to, once.
    seen = {}
    for path, records in shards.items():
        split, shard = path.split("/")[0][6:], int(path.split("part-")[1][:5])
        for record in records:
            example = decode_example(record)
            length = int(example["length"][0])
            assert assign(f"doc-{length:04d}", SPLITS, SHARDS) == (split, shard)
            seen[length] = example
    assert sorted(seen) == list(range(60))
    assert bytes(b - 3 for b in seen[7]["input_ids"].tolist()).decode() == "post 7 关于 Spark"

    # Same rows in another order and file split → the same bytes.
    reordered = {k: v[::-1] for k, v in rows.items()}
    _encode(tmp_path, _write_inputs(tmp_path / "in2", reordered, files=3), spec, name="v=2")
    assert _records(tmp_path / "records" / "posts" / "v=2") == shards


def test_bad_row_fails_naming_the_row_and_commits_nothing(tmp_path, spec):
    rows = _rows(10, topic=lambda i: "gardening" if i == 4 else "nlp")
    with pytest.raises(Exception, match="doc_id=doc-0004.*'gardening' is not in the closed vocabulary"):
        _encode(tmp_path, _write_inputs(tmp_path / "in", rows, files=1), spec)
    assert not (tmp_path / "records" / "posts" / "v=1").exists()
