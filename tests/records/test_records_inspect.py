import base64
import io
import json
import os

import pytest
from records_testlib import write_dataset

from records.example_codec import encode_sequence_example
from records.framing import RecordFileWriter
from records.inspect import inspect, verify
from records.manifest import load_manifest


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path, n=12, shard_size=5), tmp_path / "records/toy/v=1"


def _run(fn, *args, **kwargs):
    out = io.StringIO()
    code = fn(*args, out=out, **kwargs)
    return code, out.getvalue()


def test_inspect_dataset_text(dataset):
    uri, _ = dataset
    code, text = _run(inspect, uri, limit=2)
    assert code == 0
    assert "dataset: toy" in text and "train: 12 records in 3 shards" in text
    assert "tokens: fixed_len" in text and "first 2 records of split 'train'" in text
    assert '"label": [1]' in text


def test_inspect_json_lines_from_dataset_and_file(dataset):
    uri, root = dataset
    code, text = _run(inspect, uri, limit=3, as_json=True)
    rows = [json.loads(line) for line in text.splitlines()]
    assert code == 0 and [r["label"] for r in rows] == [[0], [1], [2]]
    assert base64.b64decode(rows[2]["text"][0]) == b"row-2"
    assert rows[1]["weight"] == [0.5]
    shard = root / load_manifest(uri).splits["train"].shards[1].path
    code, text = _run(inspect, str(shard), limit=1, as_json=True)
    assert json.loads(text)["label"] == [5]


@pytest.mark.parametrize("compression", [None, "GZIP", "ZLIB"])
def test_inspect_any_file(tmp_path, compression):
    path = tmp_path / "seq.tfrecord"
    with RecordFileWriter(path=str(path), compression=compression) as w:
        for i in range(3):
            w.write(encode_sequence_example({"id": i}, {"tok": [[i, i + 1]]}))
    code, text = _run(inspect, str(path), limit=1)
    assert code == 0
    assert f"compression: {compression or 'none'}" in text and "records: 3" in text
    assert '"feature_lists": {"tok": [[0, 1]]}' in text


def test_inspect_missing_path(tmp_path):
    code, text = _run(inspect, str(tmp_path / "nope"))
    assert code == 1 and "error" in text


def test_verify_good_dataset_and_file(dataset):
    uri, root = dataset
    code, text = _run(verify, uri)
    assert code == 0 and "OK" in text and "12 records" in text
    shard = root / "split=train/part-00000-of-00003.tfrecord"
    assert _run(verify, str(shard))[0] == 0


def _flip(path, pos):
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))


def test_verify_names_the_first_corrupt_record(dataset):
    uri, root = dataset
    shard = root / "split=train/part-00001-of-00003.tfrecord"
    index = shard.parent / (shard.name + ".idx")
    offsets = [int(line.split()[0]) for line in index.read_text().splitlines()]
    _flip(shard, offsets[3] + 30)
    code, text = _run(verify, uri)
    assert code == 1
    assert f"FAIL {shard}" in text or f"FAIL file://{shard}" in text
    assert f"offset {offsets[3]}, record #3" in text and "CRC" in text


@pytest.mark.parametrize("damage, words", [
    ("success", ["_SUCCESS", "not committed"]),
    ("sha", ["sha256"]),
    ("count", ["records, manifest says"]),
    ("index", ["index"]),
])
def test_verify_checks_manifest_and_index(dataset, damage, words):
    uri, root = dataset
    if damage == "success":
        os.remove(root / "_SUCCESS")
    elif damage in ("sha", "count"):
        m = json.loads((root / "manifest.json").read_text())
        if damage == "sha":
            m["splits"]["train"]["shards"][2]["sha256"] = "0" * 64
        else:
            m["splits"]["train"]["shards"][2]["records"] = 3
            m["splits"]["train"]["records"] = 13
        (root / "manifest.json").write_text(json.dumps(m))
    else:
        idx = root / "split=train/part-00002-of-00003.tfrecord.idx"
        idx.write_text("".join(idx.read_text().splitlines(keepends=True)[:-1]))
    code, text = _run(verify, uri)
    assert code == 1 and text.startswith("FAIL"), text
    for w in words:
        assert w in text
