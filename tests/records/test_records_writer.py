import hashlib
import importlib.util
import json
import os
import pathlib

import pytest
from records_testlib import SPEC, make_example, write_dataset

from records.example_codec import encode_example
from records.framing import iter_records
from records.index import read_index
from records.manifest import Manifest, load_manifest, manifest_sha256
from records.writer import (
    DatasetWriter,
    commit_staged,
    finalize_shards,
    list_shards,
    shard_name,
    staging_uri_for,
    write_manifest,
    write_shard,
)


@pytest.mark.parametrize("args, name", [
    ((0, 16, None), "part-00000-of-00016.tfrecord"),
    ((15, 16, "GZIP"), "part-00015-of-00016.tfrecord.gz"),
    ((2, 3, "ZLIB"), "part-00002-of-00003.tfrecord.zz"),
])
def test_shard_name(args, name):
    assert shard_name(*args) == name


def test_shard_name_rejects_out_of_range():
    with pytest.raises(ValueError):
        shard_name(3, 3)


def _tfrecord_create_index():
    """``tfrecord.tools.tfrecord2idx.create_index`` without importing ``tfrecord/__init__``:
    that registers ``tensorflow.*`` protos and crashes a process where TF is loaded."""
    spec = importlib.util.find_spec("tfrecord")
    if spec is None:
        pytest.skip("the tfrecord package is not installed")
    path = pathlib.Path(spec.origin).parent / "tools" / "tfrecord2idx.py"
    module_spec = importlib.util.spec_from_file_location("_tfrecord2idx", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.create_index


def test_write_shard_index_matches_the_tfrecord_package(tmp_path):
    create_index = _tfrecord_create_index()
    path = tmp_path / "split=train" / "part.tfrecord"
    records = [encode_example(make_example(i)) for i in range(25)]
    info = write_shard(path=str(path), records=records, root=str(tmp_path))
    create_index(str(path), str(tmp_path / "theirs.idx"))
    assert (tmp_path / "split=train" / "part.tfrecord.idx").read_bytes() == \
        (tmp_path / "theirs.idx").read_bytes()
    assert info.path == "split=train/part.tfrecord"
    assert info.index == "split=train/part.tfrecord.idx"
    assert (info.records, info.bytes) == (25, path.stat().st_size)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_compressed_shard_index_points_into_the_uncompressed_stream(tmp_path):
    path = tmp_path / "p.tfrecord.gz"
    records = [b"a" * i for i in range(1, 30)]
    info = write_shard(path=str(path), records=records, compression="GZIP")
    idx = read_index(str(path) + ".idx")
    assert info.bytes == path.stat().st_size
    for k in (0, 7, 28):
        got = list(iter_records(str(path), start_offset=int(idx[k, 0]), count=1))
        assert got == [records[k]]


def test_rolls_by_count_and_bytes(tmp_path):
    uri = f"file://{tmp_path}/v=1"
    rec = encode_example(make_example(1))
    with DatasetWriter(uri=uri, dataset="d", version="1", feature_spec=SPEC,
                       max_records_per_shard=4) as w:
        for _ in range(10):
            w.write("train", rec)
    assert [s.records for s in load_manifest(uri).splits["train"].shards] == [4, 4, 2]
    with DatasetWriter(uri=uri, dataset="d", version="1", feature_spec=SPEC,
                       max_bytes_per_shard=3 * (len(rec) + 16)) as w:
        for _ in range(10):
            w.write("train", rec)
    m = load_manifest(uri)
    assert [s.records for s in m.splits["train"].shards] == [3, 3, 3, 1]
    assert [s.path for s in m.splits["train"].shards][-1] == \
        "split=train/part-00003-of-00004.tfrecord"


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_same_input_same_bytes(tmp_path, compression):
    a = write_dataset(tmp_path / "a", n=20, compression=compression, splits=("train", "eval"))
    b = write_dataset(tmp_path / "b", n=20, compression=compression, splits=("train", "eval"))
    ma, mb = load_manifest(a), load_manifest(b)
    assert ma.to_json() == mb.to_json()
    assert manifest_sha256(a) == manifest_sha256(b) == manifest_sha256(ma)
    for split in ("train", "eval"):
        for s in ma.splits[split].shards:
            fa = (tmp_path / "a/records/toy/v=1" / s.path).read_bytes()
            assert hashlib.sha256(fa).hexdigest() == s.sha256
    rewrite = write_dataset(tmp_path / "a", n=20, compression=compression,
                            splits=("train", "eval"))
    assert load_manifest(rewrite).to_json() == ma.to_json()


def test_manifest_contents(tmp_path):
    m = load_manifest(write_dataset(tmp_path, n=10, shard_size=4))
    assert (m.format, m.dataset, m.version, m.compression) == \
        ("shardforge.records/1", "toy", "1", None)
    assert m.spec == SPEC and m.config == {"n": 10} and m.inputs == ["file:///raw/toy"]
    assert m.splits["train"].records == 10
    assert Manifest.from_json(m.to_json()) == m
    with pytest.raises(KeyError, match="available"):
        m.split("test")


def test_exception_inside_the_writer_leaves_nothing(tmp_path):
    uri = f"file://{tmp_path}/records/d/v=1"
    with pytest.raises(RuntimeError), DatasetWriter(uri=uri, dataset="d", version="1",
                                                    feature_spec=SPEC) as w:
        w.write("train", encode_example(make_example(0)))
        raise RuntimeError("boom")
    assert os.listdir(tmp_path / "records" / "d") == []


def test_failed_rewrite_keeps_the_previous_version(tmp_path):
    uri = write_dataset(tmp_path, n=5)
    before = load_manifest(uri).to_json()
    with pytest.raises(RuntimeError), DatasetWriter(uri=uri, dataset="toy", version="1",
                                                    feature_spec=SPEC) as w:
        w.write("train", b"new")
        raise RuntimeError("boom")
    assert load_manifest(uri).to_json() == before
    assert sorted(os.listdir(tmp_path / "records" / "toy")) == ["v=1"]


def test_load_manifest_requires_success(tmp_path):
    uri = write_dataset(tmp_path, n=3)
    os.remove(tmp_path / "records/toy/v=1/_SUCCESS")
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        load_manifest(uri)
    assert load_manifest(uri, require_success=False).dataset == "toy"


@pytest.mark.parametrize("collect", ["from_workers", "list_shards"])
def test_distributed_driver_flow(tmp_path, collect):
    final = f"file://{tmp_path}/records/d/v=2"
    staging = staging_uri_for(final)
    assert "/_staging-v=2-" in staging
    infos = []
    for task in (3, 0, 1):  # workers finish in any order
        recs = [encode_example(make_example(10 * task + i)) for i in range(task + 1)]
        path = f"{staging}/split=train/task-{task:05d}.tfrecord"
        infos.append(write_shard(path=path, records=recs, root=staging))
    shards = {"train": infos} if collect == "from_workers" else list_shards(staging)
    splits = finalize_shards(root_uri=staging, splits=shards)
    assert [s.path for s in splits["train"].shards] == [
        f"split=train/part-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert [s.records for s in splits["train"].shards] == [1, 2, 4]  # ordered by task name
    write_manifest(staging, Manifest(dataset="d", version="2", compression=None,
                                     feature_spec=SPEC, splits=splits))
    commit_staged(staging_uri=staging, final_uri=final)
    m = load_manifest(final)
    assert m.splits["train"].records == 7
    first = m.splits["train"].shards[0]
    assert list(iter_records(str(tmp_path / "records/d/v=2" / first.path))) == \
        [encode_example(make_example(0))]
    assert not any(n.startswith("_staging") for n in os.listdir(tmp_path / "records/d"))


def test_commit_refuses_an_empty_staging_folder(tmp_path):
    (tmp_path / "st").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest"):
        commit_staged(staging_uri=str(tmp_path / "st"), final_uri=str(tmp_path / "v=1"))


def test_manifest_json_is_canonical(tmp_path):
    uri = write_dataset(tmp_path, n=3)
    text = (tmp_path / "records/toy/v=1/manifest.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert manifest_sha256(uri) == hashlib.sha256(text.encode()).hexdigest()
