"""records/ on a non-local fsspec filesystem: the code path hdfs:// takes, minus the cluster.

``memory://`` is fsspec's in-process filesystem. Like ``hdfs://`` it is not local, has no
OS paths and is reached only through fsspec, so a writer, reader or verifier that slipped
into ``open()``/``os.path`` on a URI fails here the way it would on HDFS.
"""

from __future__ import annotations

import io
import uuid

import fsspec
import pytest
from records_testlib import SPEC, make_example

from records.example_codec import encode_example
from records.inspect import verify
from records.manifest import load_manifest
from records.reader import RecordDataset, RecordIndexDataset
from records.writer import DatasetWriter


@pytest.fixture
def memory_dataset():
    uri = f"memory://lake-{uuid.uuid4().hex}/records/toy/v=1"
    with DatasetWriter(uri=uri, dataset="toy", version="1", feature_spec=SPEC,
                       compression="GZIP", max_records_per_shard=9) as writer:
        for i in range(40):
            writer.write("train", encode_example(make_example(i)))
    yield uri
    fs = fsspec.filesystem("memory")
    fs.rm(uri.split("/records/")[0], recursive=True)


def test_write_commit_and_read_back_through_fsspec(memory_dataset):
    fs = fsspec.filesystem("memory")
    root = memory_dataset[len("memory://"):]
    assert fs.exists(f"{root}/_SUCCESS")
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/split=train", detail=False)) == [
        f"part-{i:05d}-of-00005.tfrecord.gz{suffix}" for i in range(5) for suffix in ("", ".idx")
    ]
    assert load_manifest(memory_dataset).split("train").records == 40
    labels = [x for b in RecordDataset(memory_dataset, batch_size=8) for x in b["label"].tolist()]
    assert labels == list(range(40))


def test_verify_on_a_remote_dataset(memory_dataset):
    out = io.StringIO()
    assert verify(memory_dataset, out=out) == 0, out.getvalue()


def test_map_style_random_access_on_a_remote_uncompressed_dataset():
    uri = f"memory://lake-{uuid.uuid4().hex}/records/toy/v=1"
    with DatasetWriter(uri=uri, dataset="toy", version="1", feature_spec=SPEC,
                       max_records_per_shard=9) as writer:
        for i in range(20):
            writer.write("train", encode_example(make_example(i)))
    ds = RecordIndexDataset(uri)
    assert len(ds) == 20
    assert int(ds[13]["label"]) == 13
