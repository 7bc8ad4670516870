"""Elastic resume: a job checkpointed on one topology resumes on another, losing and
repeating no example.

Each leg runs ``R`` ranks x ``W`` DataLoader workers (0 = in process), lets every rank
consume some batches (``advance`` then ``state_dict``, as the trainer does), and hands the
ranks' states through :meth:`RecordDataset.elastic_state` to the next leg, whose ranks all
load that one topology-free state. Over the legs every example must come out exactly once.
"""

from __future__ import annotations

import itertools
import random

import pytest
from records_testlib import write_dataset
from torch.utils.data import DataLoader

from records.partition import job_consumed, normalize_spans, plan
from records.reader import RecordDataset

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

N = 300


def _leg(uri, state, ranks, workers, take, kw):
    """Each rank reads ``take(rank, ds)`` batches; returns (labels read, elastic state)."""
    seen, states = [], []
    for rank in range(ranks):
        ds = RecordDataset(uri, "train", rank=rank, world_size=ranks, **kw)
        if state is not None:
            ds.load_state_dict(state)
        ds.set_epoch(ds.epoch)  # the trainer's loop: keeps the epoch's progress
        stream = iter(DataLoader(ds, batch_size=None, num_workers=workers) if workers else ds)
        for _ in range(take(rank, ds)):
            seen += next(stream)["label"].tolist()
            ds.advance()
        states.append(ds.state_dict())
        del stream
    return seen, ds.elastic_state(states, num_workers=workers)


def _rest(rank, ds):
    return len(ds) - ds.batches_consumed


@pytest.mark.parametrize("topologies, shuffle, buffer", [
    ([(3, 2), (2, 3)], True, 16),  # the case, windows split by the kill
    ([(3, 2), (2, 3)], False, 16),
    ([(3, 0), (2, 2), (1, 0)], True, 1000),  # one window per consumer
    ([(1, 0), (4, 0), (3, 0), (2, 0)], True, 5),
])
def test_resume_on_another_topology_reads_every_example_once(tmp_path, topologies, shuffle,
                                                             buffer):
    uri = write_dataset(tmp_path, n=N, shard_size=23)
    kw = dict(batch_size=4, shuffle=shuffle, seed=3, shuffle_buffer=buffer)
    rng = random.Random(len(topologies))
    state, seen = None, []
    for i, (ranks, workers) in enumerate(topologies):
        last = i == len(topologies) - 1
        part, state = _leg(uri, state, ranks, workers,
                           _rest if last else lambda r, ds: rng.randint(1, len(ds) - 1), kw)
        seen += part
        assert state["epoch"] == 0
        consumed = sum(b - a for a, b in state["consumed"][0])
        assert consumed == len(seen)  # the state counts exactly what was read
    assert sorted(seen) == list(range(N))


def test_ranks_in_different_epochs_are_accounted_per_epoch(tmp_path):
    # drop_last=False: 301 records over 2 ranks give one rank a batch more, so at the same
    # step one rank is still in epoch 0 while the other has read into epoch 1.
    uri = write_dataset(tmp_path, n=301, shard_size=23)
    kw = dict(batch_size=5, shuffle=True, seed=1, shuffle_buffer=12)
    read: dict[int, list] = {0: [], 1: []}
    states = []
    for rank, (epoch_0, epoch_1) in enumerate([(None, 4), (17, 0)]):
        ds = RecordDataset(uri, rank=rank, world_size=2, **kw)
        for epoch, take in ((0, epoch_0), (1, epoch_1)):
            ds.set_epoch(epoch)
            stream = iter(ds)
            for _ in range(len(ds) if take is None else take):
                read[epoch] += next(stream)["label"].tolist()
                ds.advance()
            if take is not None and epoch == 0:
                break
        states.append(ds.state_dict())
    assert [s["epoch"] for s in states] == [1, 0]
    state = ds.elastic_state(states, num_workers=0)
    assert state["epoch"] == 0 and sorted(state["consumed"]) == [0, 1]

    for rank in range(3):  # 3 ranks x 2 workers finish epoch 0, then read all of epoch 1
        ds = RecordDataset(uri, rank=rank, world_size=3, **kw)
        ds.load_state_dict(state)
        for epoch in (0, 1):
            ds.set_epoch(epoch)
            read[epoch] += [x for b in DataLoader(ds, batch_size=None, num_workers=2)
                            for x in b["label"].tolist()]
    assert sorted(read[0]) == list(range(301))
    assert sorted(read[1]) == list(range(301))


def test_same_topology_inside_an_elastic_leg_continues_exactly(tmp_path):
    uri = write_dataset(tmp_path, n=N, shard_size=23)
    kw = dict(batch_size=4, shuffle=True, seed=8, shuffle_buffer=10)
    _, state = _leg(uri, None, 3, 0, lambda r, ds: 5 + 3 * r, kw)  # an earlier job on 3 ranks

    def fresh():
        ds = RecordDataset(uri, rank=1, world_size=2, **kw)
        ds.load_state_dict(state)
        return ds

    whole = [b["label"].tolist() for b in DataLoader(fresh(), batch_size=None, num_workers=2)]
    ds = fresh()
    head = []
    for batch in DataLoader(ds, batch_size=None, num_workers=2):
        head.append(batch["label"].tolist())
        ds.advance()
        if len(head) == 7:
            break
    saved = ds.state_dict()
    assert saved["batches_consumed"] == 7 and saved["consumed"].keys() == {0}
    resumed = RecordDataset(uri, rank=1, world_size=2, **kw)
    resumed.load_state_dict(saved)
    rest = [b["label"].tolist() for b in DataLoader(resumed, batch_size=None, num_workers=2)]
    assert head + rest == whole
    resumed.set_epoch(1)  # a new epoch starts whole: what earlier jobs read was epoch 0's
    assert resumed.state_dict() == {"epoch": 1, "batches_consumed": 0}
    assert len(resumed) == 38  # 150 records of rank 1 in batches of 4


def test_elastic_state_is_the_same_whatever_the_topology_that_read_it(tmp_path):
    # Without shuffling, rank r's first k batches are a known range: the state names
    # positions of the epoch, not (rank, worker) counters.
    uri = write_dataset(tmp_path, n=N, shard_size=23)
    kw = dict(batch_size=5, shuffle=False)
    _, by_two = _leg(uri, None, 2, 0, lambda r, ds: 3, kw)
    assert by_two == {"epoch": 0, "consumed": {0: [[0, 15], [150, 165]]}}
    ds = RecordDataset(uri, **kw)
    with pytest.raises(ValueError, match="spans"):
        ds.load_state_dict({"epoch": 0, "consumed": {0: [[290, 310]]}})  # past the epoch
    ds.load_state_dict(by_two)
    assert len(ds) == 54  # the 270 records left, in batches of 5, on one rank


def test_spans_merge_and_plans_share_only_what_is_left():
    assert normalize_spans([[5, 9], [0, 2], [2, 3], [8, 12], [20, 20]]).tolist() == [[0, 3],
                                                                                    [5, 12]]
    counts = [7, 0, 9, 4]  # positions: shard 0 -> 0..6, shard 2 -> 7..15, shard 3 -> 16..19
    starts = {0: 0, 2: 7, 3: 16}
    consumed = normalize_spans([[1, 4], [10, 12], [19, 20]])
    seen = []
    for rank, worker in itertools.product(range(2), range(3)):
        p = plan(counts, epoch=0, seed=0, shuffle=False, rank=rank, world_size=2, worker=worker,
                 num_workers=3, batch_size=2, drop_last=False, consumed=consumed)
        seen += [starts[s.shard] + i for s in p.segments for i in range(s.start, s.stop)]
    assert seen == [0, *range(4, 10), *range(12, 19)]  # the rest, each once, in order
    done = job_consumed(counts, [(0, 2), (0, 1)], {0: consumed.tolist()}, num_workers=3,
                        window=4, seed=0, shuffle=False, batch_size=2, drop_last=False)
    # rank 0 read positions 0, 4 (worker 0) and 5, 6 (worker 1); rank 1 read 12, 13
    assert done[0].tolist() == [[0, 7], [10, 14], [19, 20]]
