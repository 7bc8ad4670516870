"""features.spec, artifacts and exports without TensorFlow: kinds, errors, save/load, decode specs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from core.lake import Lake
from features.analyzers import analyze
from features.artifacts import load_artifacts, num_ids, save_artifacts
from features.exports import decode_spec
from features.spec import SpecError, load_spec
from features.transform import transform_batch
from records.spec import FixedLenFeature, VarLenFeature

CONF = Path(__file__).resolve().parents[2] / "conf" / "features"


def _load(tmp_path, text: str):
    path = tmp_path / "spec.yaml"
    path.write_text("key: k\nfeatures:\n" + text)
    return load_spec(path)


@pytest.mark.parametrize("name", ["posts.yaml", "images.yaml"])
def test_shipped_specs_load(name):
    spec = load_spec(CONF / name)
    assert spec.features


def test_images_spec_decodes_to_what_the_image_trainer_reads():
    decode = decode_spec(load_spec(CONF / "images.yaml"))
    assert decode["image"] == FixedLenFeature((), "bytes")
    assert decode["image_shape"] == FixedLenFeature((3,), "int64")
    assert decode["mask"].default == b"" and decode["mask_shape"].default == (0, 0, 0)
    assert decode["label"] == FixedLenFeature((1,), "int64")


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("  c: {kind: categorical, source: s}\n", "exactly one of vocabulary"),
        ("  c: {kind: categorical, source: s, vocabulary: [a, a]}\n", "duplicates \\['a'\\]"),
        ("  c: {kind: categorical, source: s, vocabulary: [a], num_oov_buckets: 1, default_value: 0}\n",
         "default_value cannot be combined with num_oov_buckets"),
        ("  c: {kind: categorical, source: s, computed_vocabulary: {top_k: 0}}\n",
         "features.c.categorical.computed_vocabulary.top_k"),
        ("  b: {kind: bucketized, source: s, boundaries: [2, 1]}\n", "strictly increasing"),
        ("  b: {kind: bucketized, source: s, boundaries: [1], num_buckets: 3}\n", "exactly one of"),
        ("  b: {kind: bucketized, source: s, boundaries: [a]}\n", "features.b.bucketized.boundaries.0"),
        ("  h: {kind: hashed, source: s}\n", "features.h.hashed.hash_bucket_size"),
        ("  i: {kind: identity, source: s, num_buckets: 3, default_value: 3}\n", "default_value must be in"),
        ("  x: {kind: crossed, columns: [a], hash_bucket_size: 3}\n", "features.x.crossed.columns"),
        ("  n: {kind: numeric, source: s}\n  x: {kind: crossed, columns: [n, a], hash_bucket_size: 3}\n",
         "features.x.columns: 'n' is a numeric feature"),
        ("  e: {kind: embedding, categorical: nope, dimension: 4}\n", "features.e.categorical: 'nope'"),
        ("  t: {kind: text, source: s, tokenizer: bpe}\n", "vocab_size is required"),
        ("  t: {kind: text, source: s, vocab_size: 300}\n", "fixed at 259"),
        ("  t: {kind: text, source: s, layout: packed}\n", "block_size is required"),
        ("  t: {kind: text, source: s, layout: packed, block_size: 8}\n  n: {kind: numeric, source: n}\n",
         "packed text must be the spec's only encoded feature"),
        ("  t: {kind: text, source: s}\n  t_lengths: {kind: numeric, source: n}\n",
         "output 't_lengths' collides"),
        ("  n: {kind: numeric, source: s, role: target}\n", "features.n.numeric.role"),
        ("  n: {kind: numeric, source: s, dtype: int64, role: weight}\n", "a weight is a float32 numeric"),
        ("  i: {kind: image, source: s, height: 2, width: 2, channels: 5}\n", "features.i.image.channels"),
        ("  i: {kind: image, source: s, height: 2, width: 2, channels: 3, role: label}\n",
         "an image cannot be a label"),
        ("  n: {kind: numeric, source: s, dtype: int64, normalize: z_score}\n", "set dtype: float32"),
        ("  _n: {kind: numeric, source: s}\n", "a feature name is a letter"),
    ],
)
def test_spec_errors_name_the_key(tmp_path, yaml_text, expected):
    with pytest.raises(SpecError, match=expected):
        _load(tmp_path, yaml_text)


def test_vocabulary_file_is_relative_to_the_spec(tmp_path):
    (tmp_path / "topics.txt").write_text("nlp\ncv\n")
    spec = _load(tmp_path, "  t: {kind: categorical, source: t, vocabulary_file: topics.txt, "
                           "default_value: 2}\n")
    assert Path(spec.features["t"].vocabulary_file).is_absolute()
    out = transform_batch(pa.RecordBatch.from_pydict({"k": ["a", "b"], "t": ["cv", "x"]}), spec)
    assert out.column("t").to_pylist() == [1, 2]
    assert num_ids(spec, "t") == 2


def test_roles_and_model_side_kinds(tmp_path):
    spec = _load(tmp_path, "  t: {kind: categorical, source: t, vocabulary: [a, b]}\n"
                           "  e: {kind: embedding, categorical: t, dimension: 8, combiner: sqrtn}\n"
                           "  y: {kind: identity, source: y, num_buckets: 2, role: label}\n"
                           "  w: {kind: numeric, source: w, role: weight}\n")
    assert spec.with_role("label") == ["y"] and spec.with_role("weight") == ["w"]
    assert list(spec.encoded()) == ["t", "y", "w"]  # an embedding writes nothing
    assert list(decode_spec(spec)) == ["t", "y", "w"]


def test_decode_spec_of_every_layout(tmp_path):
    spec = _load(tmp_path, "  t: {kind: text, source: s}\n"
                           "  b: {kind: bucketized, source: x, boundaries: [0]}\n"
                           "  n: {kind: numeric, source: x, normalize: min_max}\n")
    assert decode_spec(spec) == {"t": VarLenFeature("int64"), "b": FixedLenFeature((1,), "int64"),
                                  "n": FixedLenFeature((1,), "float32")}
    packed = _load(tmp_path, "  t: {kind: text, source: s, layout: packed, block_size: 16}\n")
    assert decode_spec(packed) == {"t": FixedLenFeature((16,), "int64")}


def test_artifacts_save_and_load_through_the_lake(tmp_path):
    spec = _load(tmp_path, "  t: {kind: categorical, source: t, computed_vocabulary: {}, "
                           "num_oov_buckets: 1}\n"
                           "  b: {kind: bucketized, source: x, num_buckets: 2}\n"
                           "  z: {kind: numeric, source: x, normalize: z_score}\n"
                           "  s: {kind: text, source: s, tokenizer: bpe, vocab_size: 280}\n")
    batch = pa.RecordBatch.from_pydict({"k": ["a", "b", "c"], "t": ["x", "关于", "x"],
                                        "x": [0.5, 1.5, 2.5], "s": ["a b", "a b c", "b c"]})
    artifacts = analyze(spec, [batch])
    lake = Lake(str(tmp_path / "lake"))
    written = save_artifacts(artifacts, lake, "posts", "3")
    assert written["features"] == lake.artifact("posts", "3", "artifacts.json")
    assert set(written) == {"features", "vocab.t", "tokenizer.s"}
    vocab_file = lake.local_path(written["vocab.t"])
    assert vocab_file.read_text(encoding="utf-8") == "x\n关于\n"  # TF's vocabulary-file format
    loaded = load_artifacts(lake, "posts", "3")
    assert loaded == artifacts
    assert transform_batch(batch, spec, loaded) == transform_batch(batch, spec, artifacts)
    assert json.loads(lake.local_path(written["features"]).read_text())["rows"] == 3
    assert num_ids(spec, "t", loaded) == 3 and num_ids(spec, "b", loaded) == 2


def test_load_artifacts_refuses_an_unfinished_save(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(FileNotFoundError, match="no feature artifacts"):
        load_artifacts(lake, "posts", "1")


_KILLED_SAVE = """
import sys
import pyarrow as pa
from core.lake import Lake
from features.analyzers import analyze
from features.artifacts import save_artifacts
from features.spec import load_spec
spec = load_spec(sys.argv[2])
values = sys.argv[3].split(",")
batch = pa.RecordBatch.from_pydict({"k": [str(i) for i in range(len(values))], "t": values})
save_artifacts(analyze(spec, [batch]), Lake(sys.argv[1]), "posts", "1")
"""


def test_a_save_killed_mid_write_leaves_every_artifact_whole(tmp_path):
    """kill -9 after a new vocabulary is written but before its rename (a real SIGKILL of a
    child process): the committed files keep their old bytes, the staging file is the only
    trace, fsck reports it and the next writer's sweep removes it."""
    import os
    import signal
    import subprocess
    import sys

    from shardforge.lake_fsck import scan_files, sweep_leftovers

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("key: k\nfeatures:\n  t: {kind: categorical, source: t, "
                         "computed_vocabulary: {}}\n")
    lake_dir, root = tmp_path / "lake", Path(__file__).resolve().parents[2]

    def save(values: str, fault: str | None) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(root)}
        env.pop("SHARDFORGE_FAULT", None)
        if fault:
            env["SHARDFORGE_FAULT"] = fault
        return subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(lake_dir), str(spec_file),
                               values], env=env, capture_output=True, text=True,
                              start_new_session=True, timeout=120)

    assert save("old,older", None).returncode == 0
    lake = Lake(str(lake_dir))
    folder = lake.local_path(lake.artifacts("posts", "1"))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(before) == {"vocab.t.txt", "artifacts.json"}

    killed = save("new,newer,newest", "inside:artifact_write:1")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    staging = [n for n in after if n.startswith("_staging-vocab.t.txt-")]
    assert len(staging) == 1 and after[staging[0]] == b"new\nnewer\nnewest\n"
    assert {n: b for n, b in after.items() if n not in staging} == before  # old bytes, whole
    load_artifacts(lake, "posts", "1")  # still readable

    found = scan_files(lake)
    assert [(f.kind, f.uri.rsplit("/", 1)[-1]) for f in found] == [("leftover", staging[0])]
    assert sweep_leftovers(lake) == [found[0].uri]
    assert sorted(p.name for p in folder.iterdir()) == sorted(before)
    assert save("new,newer,newest", None).returncode == 0
    assert (folder / "vocab.t.txt").read_text() == "new\nnewer\nnewest\n"
