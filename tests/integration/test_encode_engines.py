"""Beam and Spark encode the same spec on the same input into the same bytes.

The posts are ``clean_posts``-shaped: sample-corpus posts through the clean job's own
normalization (the whole Spark clean job would cost a minute here; ``test_cli`` runs it).
Images are ``clean_images``-shaped rows, read back with records/'s PyTorch reader.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.lake import Lake
from features.spec import load_spec
from pipelines.beam.encode import run_encode as beam_encode
from pipelines.spark.encode import run_encode as spark_encode
from records.example_codec import decode_example
from records.framing import iter_records
from records.inspect import verify
from records.reader import RecordDataset
from records.uri import resolve
from shardforge import stages

pytestmark = pytest.mark.integration

DT, DB = "2026-09-21", "shardforge"
SPLITS, SHARDS = {"train": 0.8, "eval": 0.2}, {"train": 3, "eval": 1}
ANALYZED = """
key: doc_id
on_error: quarantine
features:
  input_ids: {kind: text, source: text, tokenizer: bpe, vocab_size: 300, max_tokens: 64}
  topic: {kind: categorical, source: topic, computed_vocabulary: {top_k: 3}}
  length_bucket: {kind: bucketized, source: length, num_buckets: 4}
  length_scaled: {kind: numeric, source: length, normalize: min_max}
  lang: {kind: hashed, source: lang, hash_bucket_size: 8}
  topic_x_lang: {kind: crossed, columns: [topic, lang], hash_bucket_size: 16}
"""
PACKED = """
key: doc_id
on_error: quarantine
features:
  input_ids: {kind: text, source: text, max_tokens: 40, layout: packed, block_size: 16}
"""


@pytest.fixture(scope="module")
def clean_posts(spark_config, tmp_path_factory):
    """A ``clean_posts`` partition: sample-corpus posts through the clean job's own
    :func:`normalize_batch` (NFKC, placeholders, lang, topic, length), keyed as Spark keys them."""
    from pipelines.spark.normalize import normalize_batch
    from shardforge.sample_text import make_sentences, make_title

    rng = random.Random("encode-engines")
    english = [i % 3 == 0 for i in range(80)]
    texts = [f"{make_title(rng, english=en)} {make_sentences(rng, 1 + i % 4, english=en)}"
             for i, en in enumerate(english)]
    clean = normalize_batch(pa.RecordBatch.from_pydict({"text": texts}), spark_config.clean)
    clean = pa.Table.from_batches([clean]).filter(pc.is_null(clean.column("reason")))
    ids = [hashlib.sha256(t.encode()).hexdigest()[:16] for t in clean.column("text").to_pylist()]
    table = clean.drop_columns(["reason"]).add_column(0, "doc_id", pa.array(ids))
    folder = tmp_path_factory.mktemp("warehouse") / "clean_posts" / f"dt={DT}"
    folder.mkdir(parents=True)
    for i in range(2):  # two part files, as a Spark write leaves them
        pq.write_table(table.slice(i * 40, 40), folder / f"part-{i:05d}.parquet")
    return [f"{folder}/*.parquet"]


def _spec(tmp_path, text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return load_spec(path)


def _both(spark, lake, inputs, spec, **kw):
    common = dict(lake=lake, inputs=inputs, spec=spec, dataset="posts", splits=SPLITS,
                  shards=SHARDS, **kw)
    return beam_encode(version="beam", **common), spark_encode(spark, version="spark", **common)


def _local(uri):
    return Path(resolve(uri)[1])


def _files(uri):
    root = _local(uri)
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def _assert_same_dataset(beam, spark):
    assert (beam.rows_in, beam.records, beam.documents, beam.quarantined) == \
           (spark.rows_in, spark.records, spark.documents, spark.quarantined)
    assert beam.rows_in == beam.documents + beam.quarantined
    files = _files(beam.uri)
    assert files == _files(spark.uri)  # shards, indexes and quarantine parts, byte for byte
    for uri in (beam.uri, spark.uri):
        assert verify(uri) == 0
    return files


def test_posts_spec_gives_the_same_bytes_on_both_engines(spark, clean_posts, tmp_path):
    spec = load_spec("conf/features/posts.yaml")
    beam, spark_result = _both(spark, Lake(str(tmp_path)), clean_posts, spec)
    files = _assert_same_dataset(beam, spark_result)
    examples = sorted(r for name, data in files.items() if name.endswith(".tfrecord")
                      for r in iter_records(str(_local(beam.uri) / name)))
    assert len(examples) == beam.rows_in == beam.documents and beam.quarantined == 0
    assert sorted(files) == sorted(["_SUCCESS", "statistics.json"] + [
        f"split={s}/part-{i:05d}-of-{n:05d}.tfrecord{x}" for s, n in (("eval", 1), ("train", 3))
        for i in range(n) for x in ("", ".idx")])


def test_analyzed_spec_same_artifacts_examples_and_quarantine(spark, clean_posts, tmp_path):
    lake = Lake(str(tmp_path))
    beam, spark_result = _both(spark, lake, clean_posts, _spec(tmp_path, ANALYZED))
    files = _assert_same_dataset(beam, spark_result)
    # Full-pass artifacts over the train split: the same vocabulary, boundaries, BPE, stats.
    for name in ("artifacts.json", "vocab.topic.txt", "tokenizer.input_ids.json"):
        assert (lake.local_path(lake.artifact("posts", "beam", name)).read_bytes()
                == lake.local_path(lake.artifact("posts", "spark", name)).read_bytes())
    assert beam.artifacts["features"].endswith("artifacts/posts/v=beam/artifacts.json")
    # top_k: 3 closes the vocabulary: the other topics are quarantined, with their reason.
    assert beam.quarantined > 0 and "quarantine/part-00000-of-00001.parquet" in files
    quarantine = pq.read_table(_local(beam.uri) / "quarantine/part-00000-of-00001.parquet")
    assert set(quarantine.column("_feature").to_pylist()) == {"topic"}
    assert all("closed vocabulary" in r for r in quarantine.column("_reason").to_pylist())
    assert quarantine.num_rows == beam.quarantined
    assert beam.artifacts["quarantine.00000"] == f"{beam.uri}/quarantine/part-00000-of-00001.parquet"


def test_packed_text_packs_whole_shards_the_same_way(spark, tmp_path):
    texts = [f"document {i} " * (i % 4 + 1) for i in range(30)]
    texts[5] = None  # a bad row
    keys = [f"d{i:02d}" for i in range(30)]
    keys[7] = None   # no key: no split, quarantined before routing
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):  # three files: the engines batch them differently
        pq.write_table(pa.table({"doc_id": keys[i::3], "text": texts[i::3]}), folder / f"{i}.parquet")
    beam, spark_result = _both(spark, Lake(str(tmp_path / "lake")), [f"{folder}/*.parquet"],
                               _spec(tmp_path, PACKED))
    _assert_same_dataset(beam, spark_result)
    assert (beam.documents, beam.quarantined) == (28, 2)
    blocks = [decode_example(r)["input_ids"] for p in sorted(_local(beam.uri)
                                                              .glob("split=*/*.tfrecord"))
              for r in iter_records(str(p))]
    assert blocks and all(len(b) == 16 for b in blocks)


def test_a_bad_row_on_spark_names_it_and_commits_nothing(spark, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"doc_id": [f"doc-{i:04d}" for i in range(8)], "text": ["x"] * 8,
                             "topic": ["nlp"] * 4 + ["gardening"] + ["nlp"] * 3,
                             "length": list(range(8))}), folder / "0.parquet")
    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(ValueError, match="doc_id=doc-0004.*'gardening' is not in the closed"):
        spark_encode(spark, lake=lake, inputs=[f"{folder}/*.parquet"],
                     spec=load_spec("conf/features/posts.yaml"), dataset="posts", version="1",
                     splits=SPLITS, shards=SHARDS)
    assert not list((tmp_path / "lake").rglob("*.tfrecord"))
    assert not list((tmp_path / "lake" / "records" / "posts").glob("*"))


def _clean_images(lake, cfg, rng):
    """A clean_images partition: 6 good rows (3 with a mask), a wrong size, an unknown label."""
    labels = ["circle", "square", "triangle", "square", "circle", "triangle", "circle", "hexagon"]
    images = [rng.integers(0, 256, 32 * 32 * 3, dtype=np.uint8).tobytes() for _ in labels]
    images[6] = images[6][:-3]  # 32x32x3 minus one pixel
    masks = [rng.integers(0, 4, 32 * 32, dtype=np.uint8).tobytes() if i % 2 else None
             for i in range(len(labels))]
    boxes = [[0, 0, 32, 32] * (i % 3) if i % 2 else None for i in range(len(labels))]
    box_labels = [[3] * (i % 3) if i % 2 else None for i in range(len(labels))]
    table = pa.table({"image_id": [f"img{i:02d}" for i in range(len(labels))], "label": labels,
                      "image": pa.array(images, pa.binary()), "mask": pa.array(masks, pa.binary()),
                      "boxes": pa.array(boxes, pa.list_(pa.int64())),
                      "box_labels": pa.array(box_labels, pa.list_(pa.int64())),
                      "height": pa.array([32] * len(labels), pa.int32())})
    folder = lake.local_path(lake.table(cfg.spark.database, "clean_images", DT))
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-00000-of-00001.parquet")
    lake.local_path(lake.raw(cfg.images.corpus, DT)).mkdir(parents=True)
    return table


def test_images_encode_on_both_engines_and_decode_to_their_pixels(spark, tmp_path):
    from core.config import load_config

    reports, expected = {}, None
    for engine in ("beam", "spark"):
        lake = Lake(str(tmp_path / engine))
        cfg = load_config(lake_root=lake.root)
        cfg = cfg.model_copy(update={"corpora": {"images": cfg.corpora["images"].model_copy(
            update={"dt": [DT]})}})
        expected = _clean_images(lake, cfg, np.random.default_rng(0))
        reports[engine] = stages.encode(cfg, lake, engine=engine, spark=spark, dataset="images")
    beam, spark_report = reports["beam"], reports["spark"]
    assert (beam.stage, beam.rows_in, beam.rows_out, beam.quarantined) == ("encode images", 8, 6, 2)
    assert beam.details["records"] == spark_report.details["records"]
    assert _files(beam.outputs[0]) == _files(spark_report.outputs[0])

    good = expected.slice(0, 6).to_pylist()
    want = {(r["image"], ["circle", "square", "triangle"].index(r["label"]), r["mask"] or b"",
             tuple(r["boxes"] or ()), tuple(r["box_labels"] or ())) for r in good}
    seen = set()
    for split in ("train", "eval"):
        for batch in RecordDataset(beam.outputs[0], split, batch_size=4):
            assert batch["image_shape"].tolist() == [[32, 32, 3]] * len(batch["image"])
            for i, image in enumerate(batch["image"]):
                mask = batch["mask"][i]
                assert batch["mask_shape"][i].tolist() == ([32, 32, 1] if mask else [0, 0, 0])
                n_boxes, n_labels = batch["boxes_lengths"][i], batch["box_labels_lengths"][i]
                seen.add((image, int(batch["label"][i][0]), mask,
                          tuple(batch["boxes"][i][:n_boxes].tolist()),
                          tuple(batch["box_labels"][i][:n_labels].tolist())))
    assert seen == want
    quarantine = pq.read_table(_local(beam.outputs[0])
                               / "quarantine/part-00000-of-00001.parquet")
    assert quarantine.column("image_id").to_pylist() == ["img06", "img07"]
    assert quarantine.column("_feature").to_pylist() == ["image", "label"]


def test_submit_builds_the_encode_jobs_with_features_and_records_shipped(tmp_path):
    import zipfile

    from core.config import load_config
    from shardforge.submit import ENTRY_SCRIPT, build_pyfiles_zip, submit_command

    cfg = load_config(lake_root=str(tmp_path))
    for job in ("encode", "encode_images"):
        command = submit_command(cfg, job=job, config_path="/c.yaml", pyfiles="/z.zip")
        assert command[-6:-4] == [str(ENTRY_SCRIPT), job]
    names = zipfile.ZipFile(build_pyfiles_zip(tmp_path / "sf.zip")).namelist()
    assert {"features/transform.py", "records/writer.py", "pipelines/spark/encode.py",
            "pipelines/encode/shards.py"} <= set(names)
