"""The Beam encode pipeline on the DirectRunner: Parquet rows → analyzed, committed TFRecord dataset."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config import load_config
from core.lake import Lake
from features.artifacts import load_artifacts
from features.exports import decode_spec
from features.spec import load_spec
from features.split import assign
from pipelines.beam.encode import run, run_encode
from pipelines.validate.checks import check_dataset
from records.example_codec import decode_example
from records.framing import iter_records
from shardforge.cli import main

pytestmark = pytest.mark.integration

SPLITS, SHARDS = {"train": 0.75, "eval": 0.25}, {"train": 3, "eval": 1}
OPTIONS = {"direct_num_workers": 1, "direct_running_mode": "in_memory"}
DT = "2026-11-01"


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


def _encode(tmp_path, inputs, spec, version="1"):
    return run_encode(lake=Lake(str(tmp_path)), inputs=inputs, spec=spec, dataset="posts",
                      version=version, splits=SPLITS, shards=SHARDS, options=OPTIONS)


def _records(dataset_dir):
    return {p.relative_to(dataset_dir).as_posix(): list(iter_records(str(p)))
            for p in sorted(dataset_dir.glob("split=*/part-*.tfrecord"))}


def test_encode_writes_a_complete_deterministic_dataset(tmp_path, spec):
    rows = _rows(60)
    result = _encode(tmp_path, _write_inputs(tmp_path / "in", rows), spec)
    dataset = tmp_path / "records" / "posts" / "v=1"
    assert result.rows_in == 60 and sum(result.records.values()) == 60 == result.documents
    assert (dataset / "_SUCCESS").exists()
    assert not list((tmp_path / "records" / "posts").glob("_staging-*"))
    shards = _records(dataset)
    assert sorted(shards) == ["split=eval/part-00000-of-00001.tfrecord"] + [
        f"split=train/part-{i:05d}-of-00003.tfrecord" for i in range(3)]
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert {s: m["records"] for s, m in manifest["splits"].items()} == result.records
    assert manifest["artifacts"] == result.artifacts
    assert manifest["feature_spec"] == {k: v.to_dict() for k, v in decode_spec(spec).items()}
    assert (tmp_path / "artifacts" / "posts" / "v=1" / "artifacts.json").exists()
    # Every row lands in the split and shard its key hashes to, once, sorted by key.
    seen = {}
    for path, records in shards.items():
        split, shard = path.split("/")[0][6:], int(path.split("part-")[1][:5])
        lengths = [int(decode_example(r)["length"][0]) for r in records]
        assert lengths == sorted(lengths)
        for record in records:
            example = decode_example(record)
            length = int(example["length"][0])
            assert assign(f"doc-{length:04d}", SPLITS, SHARDS) == (split, shard)
            seen[length] = example
    assert sorted(seen) == list(range(60))
    assert bytes(b - 3 for b in seen[7]["input_ids"].tolist()).decode() == "post 7 关于 Spark"

    # Same rows in another order and file split → the same bytes.
    reordered = {k: v[::-1] for k, v in rows.items()}
    _encode(tmp_path, _write_inputs(tmp_path / "in2", reordered, files=3), spec, version="2")
    assert _records(tmp_path / "records" / "posts" / "v=2") == shards


def test_bad_row_fails_naming_the_row_and_commits_nothing(tmp_path, spec):
    rows = _rows(10, topic=lambda i: "gardening" if i == 4 else "nlp")
    with pytest.raises(Exception, match="doc_id=doc-0004.*'gardening' is not in the closed vocabulary"):
        _encode(tmp_path, _write_inputs(tmp_path / "in", rows, files=1), spec)
    assert not (tmp_path / "records" / "posts" / "v=1").exists()
    assert not list((tmp_path / "records" / "posts").glob("_staging-*"))


def test_quarantine_and_computed_vocabulary_reconcile(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("key: doc_id\non_error: quarantine\nfeatures:\n"
                         "  input_ids: {kind: text, source: text}\n"
                         "  topic: {kind: categorical, source: topic, "
                         "computed_vocabulary: {min_frequency: 2}}\n")
    spec = load_spec(spec_file)
    rows = _rows(40, topic=lambda i: "rare" if i == 9 else ["nlp", "cv"][i % 2])
    rows["text"][3] = None
    rows["doc_id"][5] = None
    result = _encode(tmp_path, _write_inputs(tmp_path / "in", rows), spec)
    # rare (seen once) is below min_frequency: outside the computed vocabulary, quarantined.
    assert (result.rows_in, result.documents, result.quarantined) == (40, 37, 3)
    artifacts = load_artifacts(Lake(str(tmp_path)), "posts", "1")
    vocab = artifacts.vocabularies["topic"]
    assert sorted(vocab) == ["cv", "nlp"] and 0 < artifacts.rows < 40  # train rows only
    quarantine = pq.read_table(tmp_path / "records/posts/v=1/quarantine/part-00000-of-00001.parquet")
    assert sorted(zip(quarantine.column("_feature").to_pylist(),
                      quarantine.column("_reason").to_pylist(), strict=True)) == [
        ("doc_id", "key is null"), ("input_ids", "value is null"),
        ("topic", f"'rare' is not in the closed vocabulary {vocab}")]
    # The dataset gate sizes label ranges from the saved vocabulary (2 ids), not the spec.
    results = check_dataset(result.uri, spec=spec)
    assert [r.success for r in results] == [True, True]


def _lake_with_documents(tmp_path, rows):
    """A lake whose documents table (what the posts dataset is built from) holds ``rows``."""
    from pipelines.encode.inputs import write_documents_snapshot

    lake = Lake(str(tmp_path / "lake"))
    lake.local_path(lake.raw("feeds", DT)).mkdir(parents=True)
    folder = lake.local_path(lake.table("shardforge", "documents")) / f"first_seen_dt={DT}"
    _write_inputs(folder, rows, files=1)
    write_documents_snapshot(lake, "shardforge", {"snapshot": "test", "dts": [DT]})
    return lake


def test_run_argv_as_airflow_calls_it(tmp_path, capsys):
    lake = _lake_with_documents(tmp_path, _rows(12))
    result = run(["--lake", lake.root, "--dt", DT, "--runner", "DirectRunner",
                  "--direct_num_workers=1"])
    assert (result.rows_in, result.documents) == (12, 12)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows_in"] == 12
    assert (lake.local_path(lake.records("posts", "1")) / "_SUCCESS").exists()


def test_cli_encode_on_beam(tmp_path, capsys):
    lake = _lake_with_documents(tmp_path, _rows(8))
    assert main(["encode", "--lake", lake.root, "--engine", "beam"]) == 0
    assert "encode: 8 rows" in capsys.readouterr().err.replace("\n", "")
    assert main(["encode", "--lake", lake.root, "--engine", "flink"]) == 2
