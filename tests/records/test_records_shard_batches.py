"""records.shard_batches: a shard written from batches equals write_shard's, file, index and info."""

from __future__ import annotations

import numpy as np
import pytest

from records.framing import frame_record
from records.shard_batches import frame_batch, write_shard_batches
from records.writer import write_shard

PATHS = [pytest.param(True, id="numba"), pytest.param(False, id="numpy")]


def _batch(records: list[bytes], skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Arrow's binary layout of ``records``, after ``skip`` bytes no record uses."""
    offsets = skip + np.concatenate([[0], np.cumsum([len(r) for r in records])])
    return offsets.astype(np.int64), np.frombuffer(b"\xee" * skip + b"".join(records), np.uint8)


@pytest.mark.parametrize("compiled", PATHS)
def test_frames_equal_frame_record(compiled):
    rng = np.random.default_rng(5)
    # Lengths around the 8-byte steps of the CRC loop, and past a one-byte length field.
    records = [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in
               [0, 1, 7, 8, 9, 15, 16, 17, 255, 256, 70_000]]
    frame_offsets, framed = frame_batch(*_batch(records, skip=3), compiled=compiled)
    assert bytes(framed) == b"".join(frame_record(r) for r in records)
    assert np.diff(frame_offsets).tolist() == [len(r) + 16 for r in records]


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_a_shard_from_batches_equals_write_shard(tmp_path, compression):
    rng = np.random.default_rng(6)
    batches = [[bytes(rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8))
                for _ in range(n)] for n in (50, 0, 1, 300)]
    theirs = write_shard(path=str(tmp_path / "a" / "ref.tfrecord"), compression=compression,
                         records=[r for b in batches for r in b], root=str(tmp_path / "a"))
    ours = write_shard_batches(path=str(tmp_path / "b" / "ref.tfrecord"), compression=compression,
                               batches=[_batch(b, skip=i) for i, b in enumerate(batches)],
                               root=str(tmp_path / "b"))
    assert ours == theirs
    for name in ("ref.tfrecord", "ref.tfrecord.idx"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()


def test_no_batches_is_an_empty_shard(tmp_path):
    info = write_shard_batches(path=str(tmp_path / "e.tfrecord"), batches=[])
    assert (info.records, info.bytes) == (0, 0)
    assert info == write_shard(path=str(tmp_path / "e.tfrecord"), records=[])


@pytest.mark.parametrize("offsets", [[0, 5], [2, 1], [-1, 0], []])
def test_offsets_outside_the_data_raise(offsets):
    with pytest.raises(ValueError, match="record offsets must rise"):
        frame_batch(np.array(offsets, np.int64), np.zeros(4, np.uint8))
