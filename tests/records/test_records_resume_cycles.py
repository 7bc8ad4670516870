"""A reader killed and resumed again and again loses and repeats no example.

Each cycle reads a random number of batches it checkpoints (``advance`` then
``state_dict``), then a random number it reads but never checkpoints — what a process
killed between two checkpoints has read and lost — and is dropped. The next cycle starts
a fresh reader from the saved state. Over an epoch every example must come out of the
checkpointed batches exactly once, whatever the kill points, with and without DataLoader
workers, shuffled.
"""

from __future__ import annotations

import random

import pytest
from records_testlib import write_dataset
from torch.utils.data import DataLoader

from records.reader import RecordDataset

N = 600


@pytest.mark.parametrize(("num_workers", "cycles"), [(0, 100), (2, 12)])  # workers start slowly
def test_kill_and_resume_cycles_lose_and_repeat_no_example(tmp_path, num_workers, cycles):
    uri = write_dataset(tmp_path, n=N, shard_size=37)
    rng = random.Random(num_workers)
    state, seen, cycle = None, [], 0
    while True:
        ds = RecordDataset(uri, "train", batch_size=4, shuffle=True, seed=7, shuffle_buffer=64)
        if state is not None:
            ds.load_state_dict(state)
        if ds.batches_consumed == len(ds):
            break
        stream = iter(DataLoader(ds, batch_size=None, num_workers=num_workers)
                      if num_workers else ds)
        # The last cycle reads to the end of the epoch; the others stop at random points.
        committed = len(ds) if cycle >= cycles - 1 else rng.randint(0, 2 * len(ds) // cycles)
        for _ in range(committed):
            batch = next(stream, None)
            if batch is None:
                break
            seen += batch["label"].tolist()
            ds.advance()
        state = ds.state_dict()  # the checkpoint
        for _ in range(rng.randint(0, 3)):  # read after the checkpoint, then "kill -9"
            if next(stream, None) is None:
                break
        del stream
        cycle += 1
    assert cycle >= min(cycles, 10)
    assert sorted(seen) == list(range(N))  # each example exactly once
