"""Who reads which records: the pure arithmetic behind the reader (no I/O, no torch).

Per epoch the split's shards are put in an order (shuffled with ``(seed, epoch)``
when shuffling) and concatenated into one sequence of N records. Then:

* rank ``r`` of ``R`` gets the contiguous range ``[N*r//R, N*(r+1)//R)``;
* the rank's records are cut into batches of ``B`` (``ceil(n_r/B)``; with
  ``drop_last`` every rank gets ``(N//R)//B`` full batches, so DDP ranks step in
  lockstep) and DataLoader worker ``w`` of ``W`` gets the contiguous run of
  batches ``[nb*w//W, nb*(w+1)//W)``, i.e. a contiguous record range.

So every record is read exactly once per epoch across ranks x workers, the batch
count of a rank does not depend on ``W`` (``len()`` is exact), and only the last
batch of a rank can be partial.

A DataLoader with ``batch_size=None`` and ``in_order=True`` returns worker
batches round-robin (worker 0, 1, ..., W-1, 0, ...), skipping exhausted workers;
:func:`resume_point` inverts that: how many of its batches each worker delivered
and whose batch comes next, which is how a resumed epoch skips exactly what was
seen and continues in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Segment", "Plan", "shard_order", "rank_batches", "plan", "resume_point",
           "worker_shares", "window_permutation"]


@dataclass(frozen=True)
class Segment:
    """Records ``[start, stop)`` of shard ``shard`` (index into the manifest's list)."""

    shard: int
    start: int
    stop: int


@dataclass(frozen=True)
class Plan:
    """What one consumer (rank, worker) reads in one epoch.

    Attributes:
        segments: its records, in stream order.
        records: total records in ``segments``.
        batches: batches this worker yields (before any resume skip).
        worker_batches: batches of every worker of this rank (for resume).
        rank_batches: batches of the whole rank (``len(dataset)``).
    """

    segments: tuple[Segment, ...]
    records: int
    batches: int
    worker_batches: tuple[int, ...]
    rank_batches: int


def shard_order(num_shards: int, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """Shard visiting order for an epoch (identity unless shuffling)."""
    if not shuffle:
        return np.arange(num_shards)
    return np.random.default_rng([seed, epoch, 0x5A4D]).permutation(num_shards)


def _check(rank: int, world_size: int, batch_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def rank_batches(total: int, *, rank: int, world_size: int, batch_size: int,
                 drop_last: bool) -> tuple[int, int, int]:
    """``(first_record, records_used, batches)`` of a rank in the epoch's sequence."""
    _check(rank, world_size, batch_size)
    start, stop = total * rank // world_size, total * (rank + 1) // world_size
    if drop_last:
        nb = (total // world_size) // batch_size
        return start, nb * batch_size, nb
    n = stop - start
    return start, n, -(-n // batch_size)


def plan(counts: list[int], *, epoch: int, seed: int, shuffle: bool, rank: int,
         world_size: int, worker: int, num_workers: int, batch_size: int,
         drop_last: bool) -> Plan:
    """The records consumer ``(rank, worker)`` reads in ``epoch``.

    Args:
        counts: records per shard, in manifest order.
    """
    if num_workers < 1 or not 0 <= worker < num_workers:
        raise ValueError(f"need 0 <= worker < num_workers, got {worker}, {num_workers}")
    order = shard_order(len(counts), shuffle=shuffle, seed=seed, epoch=epoch)
    total = int(sum(counts))
    first, used, nb = rank_batches(total, rank=rank, world_size=world_size,
                                   batch_size=batch_size, drop_last=drop_last)
    bounds = [nb * w // num_workers for w in range(num_workers + 1)]
    worker_batches = tuple(bounds[w + 1] - bounds[w] for w in range(num_workers))
    lo = first + min(bounds[worker] * batch_size, used)
    hi = first + min(bounds[worker + 1] * batch_size, used)
    segments = []
    pos = 0
    for s in order.tolist():
        c = counts[s]
        a, b = max(lo, pos), min(hi, pos + c)
        if a < b:
            segments.append(Segment(s, a - pos, b - pos))
        pos += c
    return Plan(tuple(segments), hi - lo, worker_batches[worker], worker_batches, nb)


def resume_point(consumed: int, worker_batches: tuple[int, ...] | list[int]
                 ) -> tuple[list[int], int]:
    """Where a DataLoader stands after ``consumed`` batches of an epoch.

    The DataLoader (``batch_size=None``, in order) takes one batch from each
    worker in turn, skipping exhausted workers: the batch sequence is a cycle over
    workers. After ``t`` full rounds worker ``w`` gave ``min(m_w, t)`` batches.

    Returns:
        ``(shares, next_worker)``: batches each worker already delivered, and the
        worker whose batch comes next. A resumed DataLoader starts its cycle at
        worker 0, so resumed worker ``j`` must play original worker
        ``(j + next_worker) % W``; the cycle then continues exactly as before.

    Raises:
        ValueError: ``consumed`` exceeds the total.
    """
    m = np.asarray(worker_batches, dtype=np.int64)
    if consumed < 0 or consumed > int(m.sum()):
        raise ValueError(f"batches_consumed={consumed} is outside 0..{int(m.sum())} "
                         f"(was the state saved with another batch size/world size?)")
    # Largest t with sum(min(m_w, t)) <= consumed, by binary search over rounds.
    lo, hi = 0, int(m.max(initial=0))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(np.minimum(m, mid).sum()) <= consumed:
            lo = mid
        else:
            hi = mid - 1
    shares = np.minimum(m, lo)
    active = np.flatnonzero(m > lo)  # workers still delivering in round `lo`, in cycle order
    extra = consumed - int(shares.sum())
    shares[active[:extra]] += 1
    next_worker = int(active[extra]) if extra < len(active) else 0
    return shares.tolist(), next_worker


def worker_shares(consumed: int, worker_batches: tuple[int, ...] | list[int]) -> list[int]:
    """Batches each worker contributed to the first ``consumed`` DataLoader batches."""
    return resume_point(consumed, worker_batches)[0]


def window_permutation(size: int, *, seed: int, epoch: int, consumer: int,
                       window: int) -> np.ndarray:
    """Row order of one shuffle window of a consumer's stream."""
    return np.random.default_rng([seed, epoch, consumer, window, 0x5748]).permutation(size)
