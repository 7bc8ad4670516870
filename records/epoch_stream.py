"""Every epoch of a :class:`~records.reader.RecordDataset` through ONE DataLoader iteration.

A DataLoader's workers live as long as its iterator. Iterating a ``RecordDataset`` once
per epoch restarts them every epoch (the resume contract of :mod:`records.reader` needs
workers that start at an epoch's beginning), and the GPU waits at each epoch start.
:class:`EpochStream` keeps them: the DataLoader iterates it once, and each worker yields,
epoch after epoch, ``(epoch, batch)`` items, then ``(epoch, None)`` markers up to the
epoch's longest worker share. So every worker yields the same number of items per epoch,
the DataLoader's round-robin comes back to worker 0 at every epoch start, and once the
markers are dropped the batches are exactly those of the fresh-worker loader, in order::

    loader = DataLoader(EpochStream(ds), batch_size=None, num_workers=3)
    for batch in models.data.loop_stream(ds, loader):   # drops markers, set_epoch, advance
        train_step(batch)

Why the order is the same: within an epoch the fresh-worker DataLoader takes one batch
from each worker in turn, skipping exhausted workers; with every worker padded to the
longest share, round ``t`` of the padded stream holds a batch of each worker that still
has one, in worker order, and markers for the others, so dropping the markers gives the
same cycle (:func:`records.partition.resume_point`).

Resume: the stream starts at the dataset's state (``epoch``, ``batches_consumed``, and
any elastic ``consumed`` positions). Its first epoch is the resumed one: each worker
skips its share of the batches already consumed and the slots are rotated as in
:meth:`RecordDataset.__iter__ <records.reader.RecordDataset>`, padded to the longest
*remaining* share; the epochs after it start from their beginnings, slot ``w`` playing
worker ``w``. The main process's dataset keeps the state: the consumer calls ``set_epoch``
at the first batch of each epoch and ``advance()`` per batch it hands over, so the state
counts only the batches the consumer holds, whatever the DataLoader prefetched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from records.partition import resume_point

__all__ = ["EpochStream"]


class EpochStream(IterableDataset):
    """``(epoch, batch | None)`` items of ``dataset`` from its current state on.

    Args:
        dataset: a :class:`~records.reader.RecordDataset` (anything with ``epoch``,
            ``batches_consumed``, ``worker_batches`` and ``epoch_batches``); its state when
            the DataLoader is iterated is where the stream starts.
        epochs: stop after epoch ``epochs - 1``; None = never (the trainer stops it).

    Raises (from the iterator):
        ValueError: an epoch after the first one has no batch for this rank (an empty
            split would loop forever without a batch).
    """

    def __init__(self, dataset: Any, *, epochs: int | None = None) -> None:
        super().__init__()
        self.dataset, self.epochs = dataset, epochs

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        ds = self.dataset
        info = get_worker_info()
        slot, workers = (info.id, info.num_workers) if info else (0, 1)
        start, consumed = int(ds.epoch), int(ds.batches_consumed)  # read once: the consumer
        epoch = start  # moves the main process's copy on (num_workers=0 shares it)
        while self.epochs is None or epoch < self.epochs:
            counts = list(ds.worker_batches(epoch, workers))
            if epoch == start:
                shares, rotate = resume_point(consumed, counts)
            else:
                shares, rotate = [0] * workers, 0
                if not sum(counts):
                    raise ValueError(f"the data source yields no batch in epoch {epoch} "
                                     f"(rank {ds.rank}): an empty split would loop forever")
            # Slot j plays worker (j + rotate) % W (see RecordDataset.__iter__).
            longest = max(counts[(j + rotate) % workers] - shares[(j + rotate) % workers]
                          for j in range(workers))
            worker = (slot + rotate) % workers
            given = 0
            for batch in ds.epoch_batches(epoch, worker=worker, num_workers=workers,
                                          skip_batches=shares[worker]):
                given += 1
                yield epoch, batch
            for _ in range(longest - given):  # fewer when corrupt records were skipped
                yield epoch, None
            epoch += 1
