import shutil
import warnings

import numpy as np
import pytest
import torch
from records_testlib import SPEC, make_example, write_dataset
from torch.utils.data import DataLoader

from records.errors import CorruptionReport, CorruptRecordError
from records.manifest import load_manifest
from records.reader import RecordDataset, RecordIndexDataset
from records.spec import FixedLenFeature, VarLenFeature

# 3 workers on a 2-core box is the point of these tests, not a mistake.
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


def _labels(loader):
    return [b["label"].tolist() for b in loader]


def _loader(ds, workers):
    return DataLoader(ds, batch_size=None, num_workers=workers)


@pytest.mark.parametrize("shuffle", [False, True])
def test_two_ranks_three_workers_read_every_record_once(toy_dataset, shuffle):
    epochs = []
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            ds = RecordDataset(toy_dataset, batch_size=4, shuffle=shuffle, seed=5,
                               shuffle_buffer=6, rank=rank, world_size=2)
            ds.set_epoch(epoch)
            batches = _labels(_loader(ds, 3))
            assert len(batches) == len(ds) == 8  # 30 records per rank -> 7 full + 1 partial
            assert sorted(len(b) for b in batches) == [2] + [4] * 7
            seen += [x for b in batches for x in b]
        assert sorted(seen) == list(range(60))
        epochs.append(seen)
    assert (epochs[0] != epochs[1]) == shuffle


@pytest.mark.usefixtures("read_path")
def test_batches_decode_per_spec(toy_dataset):
    ds = RecordDataset(toy_dataset, batch_size=5)
    b = next(iter(ds))
    assert b["tokens"].dtype == torch.int64 and b["tokens"].shape == (5, 4)
    assert b["tokens"].is_contiguous()
    assert b["tokens"][3].tolist() == [30, 31, 32, 33]
    assert b["weight"].dtype == torch.float32 and b["weight"].tolist() == [0, 0.5, 1, 1.5, 2]
    assert b["text"] == [f"row-{i}".encode() for i in range(5)]
    assert b["ids_lengths"].tolist() == [0, 1, 2, 0, 1]
    assert b["ids"].shape == (5, 2) and b["ids"][2].tolist() == [0, 1]
    assert b["ids"][0].tolist() == [0, 0]  # pad_value


def test_pin_memory_and_threads_change_nothing(toy_dataset):
    ref = _labels(RecordDataset(toy_dataset, batch_size=8, shuffle=True, threads=1))
    two = _labels(RecordDataset(toy_dataset, batch_size=8, shuffle=True, threads=2))
    assert two == ref
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no accelerator" on CPU-only torch
        pinned = DataLoader(RecordDataset(toy_dataset, batch_size=8, shuffle=True),
                            batch_size=None, pin_memory=True)
        assert _labels(pinned) == ref


def test_shuffle_is_seeded(toy_dataset):
    a = _labels(RecordDataset(toy_dataset, batch_size=4, shuffle=True, seed=1))
    b = _labels(RecordDataset(toy_dataset, batch_size=4, shuffle=True, seed=1))
    c = _labels(RecordDataset(toy_dataset, batch_size=4, shuffle=True, seed=2))
    assert a == b and a != c
    assert sorted(x for batch in a for x in batch) == list(range(60))


@pytest.mark.parametrize("workers, consumed, epoch, buffer", [
    (3, 5, 0, 6), (3, 1, 1, 10_000), (0, 7, 1, 4), (2, 14, 0, 5),
])
def test_resume_continues_the_uninterrupted_run(toy_dataset, workers, consumed, epoch, buffer):
    kwargs = dict(batch_size=4, shuffle=True, seed=9, shuffle_buffer=buffer)
    full_ds = RecordDataset(toy_dataset, **kwargs)
    full_ds.set_epoch(epoch)
    full = _labels(_loader(full_ds, workers))

    ds = RecordDataset(toy_dataset, **kwargs)
    ds.set_epoch(epoch)
    got = []
    for batch in _loader(ds, workers):
        got.append(batch["label"].tolist())
        ds.advance()
        if len(got) == consumed:
            break
    state = ds.state_dict()
    assert state == {"epoch": epoch, "batches_consumed": consumed}

    resumed = RecordDataset(toy_dataset, **kwargs)
    resumed.load_state_dict(state)
    resumed.set_epoch(epoch)  # the usual trainer loop: keeps progress in the same epoch
    rest = _labels(_loader(resumed, workers))
    assert got + rest == full


def test_new_epoch_resets_progress(toy_dataset):
    ds = RecordDataset(toy_dataset, batch_size=4)
    ds.advance(3)
    ds.set_epoch(1)
    assert ds.state_dict() == {"epoch": 1, "batches_consumed": 0}
    with pytest.raises(ValueError):
        ds.advance(len(ds) + 1)


def test_drop_last_keeps_ranks_in_lockstep(tmp_path):
    uri = write_dataset(tmp_path, n=23, shard_size=5)
    lens = []
    for rank in range(3):
        ds = RecordDataset(uri, batch_size=3, rank=rank, world_size=3, drop_last=True)
        batches = _labels(_loader(ds, 2))
        assert len(batches) == len(ds) and all(len(b) == 3 for b in batches)
        lens.append(len(ds))
    assert lens == [2, 2, 2]


def test_compressed_dataset_with_workers_and_resume(tmp_path):
    uri = write_dataset(tmp_path, n=30, shard_size=4, compression="GZIP")
    full = _labels(_loader(RecordDataset(uri, batch_size=4, shuffle=True), 2))
    assert sorted(x for b in full for x in b) == list(range(30))
    ds = RecordDataset(uri, batch_size=4, shuffle=True)
    ds.load_state_dict({"epoch": 0, "batches_consumed": 3})
    assert _labels(_loader(ds, 2)) == full[3:]


def _corrupt_copy(toy_dataset, tmp_path):
    src = toy_dataset[len("file://"):]
    dst = tmp_path / "v=1"
    shutil.copytree(src, dst)
    shard = load_manifest(str(dst)).splits["train"].shards[1]
    path = dst / shard.path
    data = bytearray(path.read_bytes())
    offsets = [int(line.split()[0]) for line in (dst / shard.index).read_text().splitlines()]
    data[offsets[2] + 20] ^= 0xFF  # record #2 of shard 1 = label 9
    path.write_bytes(bytes(data))
    return str(dst), str(path), offsets[2]


@pytest.mark.usefixtures("read_path")
def test_corrupt_record_raises_or_is_skipped(toy_dataset, tmp_path):
    uri, path, offset = _corrupt_copy(toy_dataset, tmp_path)
    with pytest.raises(CorruptRecordError) as info:
        _labels(RecordDataset(uri, batch_size=4))
    err = info.value
    assert (err.path.endswith(path), err.offset, err.record_index) == (True, offset, 2)
    report = CorruptionReport()
    labels = _labels(RecordDataset(uri, batch_size=4, on_corrupt="skip", report=report))
    assert sorted(x for b in labels for x in b) == [i for i in range(60) if i != 9]
    assert [e.record_index for e in report.errors] == [2]


@pytest.mark.usefixtures("read_path")
def test_map_style_random_access(toy_dataset):
    ds = RecordIndexDataset(toy_dataset)
    assert len(ds) == 60
    for i in (0, 6, 7, 59, -1):
        item = ds[i]
        assert item["label"].item() == i % 60
        assert item["tokens"].tolist() == (np.arange(4) + 10 * (i % 60)).tolist()
        assert item["text"] == f"row-{i % 60}".encode()
    assert ds[4]["ids"].tolist() == [0] and ds[4]["ids_lengths"].item() == 1
    with pytest.raises(IndexError):
        ds[60]


def test_map_style_with_dataloader_collate(toy_dataset):
    spec = dict(SPEC, ids=VarLenFeature("int64", max_len=3, pad_value=-1))
    spec.pop("text")
    ds = RecordIndexDataset(toy_dataset, feature_spec=spec)
    batch = next(iter(DataLoader(ds, batch_size=6, shuffle=False, num_workers=2)))
    assert batch["label"].tolist() == list(range(6))
    assert batch["ids"].shape == (6, 3) and batch["ids"][2].tolist() == [0, 1, -1]
    assert batch["ids_lengths"].tolist() == [i % 3 for i in range(6)]


def test_map_style_refuses_compressed(tmp_path):
    uri = write_dataset(tmp_path, n=5, compression="ZLIB")
    with pytest.raises(ValueError, match="uncompressed"):
        RecordIndexDataset(uri)


def test_spec_override_and_bad_arguments(toy_dataset):
    ds = RecordDataset(toy_dataset, batch_size=60,
                       feature_spec={"label": FixedLenFeature((), "int64")})
    (batch,) = list(ds)
    assert list(batch) == ["label"] and batch["label"].tolist() == list(range(60))
    with pytest.raises(ValueError):
        RecordDataset(toy_dataset, batch_size=0)
    with pytest.raises(ValueError):
        RecordDataset(toy_dataset, batch_size=2, rank=2, world_size=2)
    with pytest.raises(KeyError, match="available"):
        RecordDataset(toy_dataset, "test", batch_size=2)
    assert make_example(0)["label"] == 0


def test_bytes_as_uint8_and_varlen_as_nested(toy_dataset):
    ds = RecordDataset(toy_dataset, batch_size=5, bytes_as="uint8", varlen_as="nested")
    b = next(iter(ds))
    texts = [f"row-{i}".encode() for i in range(5)]
    assert b["text"].dtype == torch.uint8 and b["text"].shape == (5, max(map(len, texts)))
    assert b["text_lengths"].tolist() == [len(t) for t in texts]
    assert [bytes(row[:n].tolist()) for row, n in zip(b["text"], b["text_lengths"], strict=True)] == texts
    assert b["ids"].is_nested and [t.tolist() for t in b["ids"].unbind()] == [
        [], [0], [0, 1], [], [0]]
    with pytest.raises(ValueError, match="bytes_as"):
        RecordDataset(toy_dataset, batch_size=5, bytes_as="tensor")


def test_each_shard_index_is_read_once_for_all_epochs_of_a_dataset(tmp_path, monkeypatch):
    import records.stream

    uri = write_dataset(tmp_path, n=27, shard_size=5)  # 6 shards
    read = []
    real = records.stream.read_index
    monkeypatch.setattr(records.stream, "read_index", lambda p: read.append(p) or real(p))
    ds = RecordDataset(uri, batch_size=4, shuffle=True, seed=5, shuffle_buffer=8)
    epochs = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        epochs.append([b["label"].tolist() for b in ds])
    assert len(read) == len(set(read)) == 6
    fresh = RecordDataset(uri, batch_size=4, shuffle=True, seed=5, shuffle_buffer=8)
    fresh.set_epoch(2)  # a cached index reads the same batches as a fresh one
    assert [b["label"].tolist() for b in fresh] == epochs[2] != epochs[1]


def test_an_index_that_disagrees_with_the_manifest_is_refused_on_every_epoch(tmp_path):
    uri = write_dataset(tmp_path, n=12, shard_size=5)
    idx = sorted((tmp_path / "records" / "toy" / "v=1").rglob("*.idx"))[0]
    idx.write_text("".join(idx.read_text().splitlines(keepends=True)[:-1]))  # one line short
    ds = RecordDataset(uri, batch_size=4)
    for epoch in range(2):  # a refused index is not cached
        ds.set_epoch(epoch)
        with pytest.raises(CorruptRecordError, match="index lists 4 records"):
            list(ds)


def test_the_index_cache_keeps_no_more_than_its_byte_bound():
    from records.stream import IndexCache

    cache = IndexCache(max_bytes=3 * 16 * 10)  # three 10-record indexes
    for i in range(5):
        cache.put(f"s{i}.idx", np.zeros((10, 2), dtype=np.int64))
    assert len(cache) == 3 and cache.nbytes == 480
    assert cache.get("s2.idx") is not None and cache.get("s3.idx") is None
