"""Workers that live across epochs (records.epoch_stream) read what fresh workers read.

The fresh-worker loader (one DataLoader iteration per epoch, ``models.data.loop_epochs``)
is the reference: the epoch stream (one iteration for every epoch, ``loop_stream``) must
give the same batches in the same order, resume to the same batches after a stop at any
point (inside an epoch, right at its end, across its boundary), keep its worker processes
from one epoch to the next, and keep elastic resume reading every record once.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from records_testlib import write_dataset
from torch.utils.data import DataLoader

from models.data import loop_epochs, loop_stream
from records.epoch_stream import EpochStream
from records.reader import RecordDataset

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

N, BATCH, EPOCHS = 27, 4, 3  # 7 batches an epoch: workers' shares 7 | 3, 4 | 2, 2, 3
KW = dict(batch_size=BATCH, shuffle=True, seed=5, shuffle_buffer=8)


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("lake"), n=N, shard_size=5)


def _old(ds, workers, start_epoch):
    """The fresh-worker loader: a new DataLoader iteration (new workers) every epoch."""
    class PerEpoch:  # loop_epochs iterates this once per epoch
        def __iter__(self):
            return iter(DataLoader(ds, batch_size=None, num_workers=workers)
                        if workers else ds)
    return loop_epochs(ds, start_epoch, iterable=PerEpoch())


def _new(ds, workers, epochs=None):
    stream = EpochStream(ds, epochs=epochs)
    return loop_stream(ds, DataLoader(stream, batch_size=None, num_workers=workers)
                       if workers else stream)


def _labels(batches, n):
    return [b["label"].tolist() for b in itertools.islice(batches, n)]


@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_epoch_stream_yields_the_fresh_worker_batches_in_order(uri, workers):
    total = EPOCHS * len(RecordDataset(uri, "train", **KW))
    ref_ds, ds = RecordDataset(uri, "train", **KW), RecordDataset(uri, "train", **KW)
    want = _labels(_old(ref_ds, workers, 0), total)
    got = _labels(_new(ds, workers, epochs=EPOCHS), total + 1)  # the stream ends there
    assert got == want
    assert sorted(sum(want[:7], [])) == list(range(N)) and want[:7] != want[7:14]
    assert ds.state_dict() == ref_ds.state_dict() == {"epoch": EPOCHS - 1, "batches_consumed": 7}


@pytest.mark.parametrize("workers", [0, 2, 3])
@pytest.mark.parametrize("stop", [0, 3, 6, 7, 8, 13, 14, 16])  # 7, 14: right at an epoch end
def test_stop_save_and_resume_continues_the_uninterrupted_run(uri, workers, stop):
    total = EPOCHS * 7
    whole = _labels(_new(RecordDataset(uri, "train", **KW), workers), total)
    ds = RecordDataset(uri, "train", **KW)
    first = _labels(_new(ds, workers), stop)  # the DataLoader prefetched beyond `stop`
    state = ds.state_dict()
    resumed = RecordDataset(uri, "train", **KW)
    resumed.load_state_dict(state)
    rest = _labels(_new(resumed, workers), total - stop)
    assert first + rest == whole


@pytest.mark.parametrize("stop", [5, 7, 9])
def test_a_fresh_worker_checkpoint_resumes_in_the_epoch_stream(uri, stop):
    whole = _labels(_old(RecordDataset(uri, "train", **KW), 2, 0), 21)
    ds = RecordDataset(uri, "train", **KW)
    first = _labels(_old(ds, 2, 0), stop)
    resumed = RecordDataset(uri, "train", **KW)
    resumed.load_state_dict(ds.state_dict())
    assert first + _labels(_new(resumed, 2), 21 - stop) == whole


class _PidDataset(RecordDataset):
    """Tags every batch with the pid of the process that read it."""

    def epoch_batches(self, epoch, **kw):
        for batch in super().epoch_batches(epoch, **kw):
            batch["pid"] = torch.tensor(os.getpid())
            yield batch


def test_workers_are_not_restarted_between_epochs(uri):
    ds = _PidDataset(uri, "train", **KW)
    pids: dict[int, set[int]] = {}
    for batch in itertools.islice(_new(ds, 2), EPOCHS * 7):
        pids.setdefault(ds.epoch, set()).add(int(batch["pid"]))
    assert len(pids) == EPOCHS and all(len(p) == 2 for p in pids.values())
    assert pids[0] == pids[1] == pids[2] and os.getpid() not in pids[0]


@pytest.mark.parametrize(("legs", "takes"), [(((1, 2), (2, 3)), (5, 4)), (((2, 3), (1, 0)), (2, 9))])
def test_elastic_resume_through_the_epoch_stream_reads_every_record_once(uri, legs, takes):
    """Leg 1 (ranks x workers) stops mid-epoch; leg 2 (another topology) reads the rest."""
    state, seen = None, []
    for (ranks, workers), take in zip(legs, takes, strict=True):
        states = []
        for rank in range(ranks):
            ds = RecordDataset(uri, "train", rank=rank, world_size=ranks, **KW)
            if state is not None:
                ds.load_state_dict(state)
            n = min(take, len(ds) - ds.batches_consumed) if state is None else \
                len(ds) - ds.batches_consumed
            seen += sum(_labels(_new(ds, workers, epochs=1), n), [])
            states.append(ds.state_dict())
        state = ds.elastic_state(states, num_workers=workers)
    assert sorted(seen) == list(range(N))


def test_an_empty_later_epoch_raises_instead_of_looping(uri):
    ds = RecordDataset(uri, "train", **KW)
    ds.load_state_dict({"epoch": 0, "batches_consumed": 7, "consumed": {1: [[0, N]]}})
    with pytest.raises(ValueError, match="no batch in epoch 1"):
        next(_new(ds, 0))
