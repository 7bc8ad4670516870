"""Who reads which records: the pure arithmetic behind the reader (no I/O, no torch).

Per epoch the split's shards are put in an order (shuffled with ``(seed, epoch)``
when shuffling) and concatenated into one sequence of N records: a record's
*position* in it depends only on the dataset, the seed and the epoch, never on how
many ranks or workers read it. Then:

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

Elastic resume: what a job consumed of an epoch is a set of positions,
:func:`consumed_spans` (sorted ``[start, stop)`` spans), whatever its topology. A job
of another topology continues the epoch with ``consumed=`` those spans: the same
arithmetic as above runs over the *remaining* positions only (their count in place of
N, in position order), so the old and the new job together read every record once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Segment", "Plan", "shard_order", "rank_batches", "plan", "resume_point",
           "worker_shares", "window_permutation", "normalize_spans", "consumed_spans",
           "job_consumed", "spans_size"]

Spans = np.ndarray  # (k, 2) int64: sorted, disjoint, non-adjacent [start, stop) position ranges


@dataclass(frozen=True)
class Segment:
    """Records ``[start, stop)`` of shard ``shard`` (index into the manifest's list)."""

    shard: int
    start: int
    stop: int


@dataclass(frozen=True, eq=False)
class Plan:
    """What one consumer (rank, worker) reads in one epoch.

    Attributes:
        segments: its records, in stream order.
        records: total records in ``segments``.
        batches: batches this worker yields (before any resume skip).
        worker_batches: batches of every worker of this rank (for resume).
        rank_batches: batches of the whole rank (``len(dataset)``).
        spans: the epoch positions of ``segments``, as :data:`Spans` (stream order is
            position order).
    """

    segments: tuple[Segment, ...]
    records: int
    batches: int
    worker_batches: tuple[int, ...]
    rank_batches: int
    spans: Spans


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


def normalize_spans(spans, total: int | None = None) -> Spans:
    """``[start, stop)`` pairs (any order, overlapping) -> sorted, merged :data:`Spans`.

    Raises:
        ValueError: a span outside ``[0, total)`` (when ``total`` is given) or reversed.
    """
    a = np.asarray(spans if len(spans) else np.empty((0, 2)), dtype=np.int64).reshape(-1, 2)
    if len(a) and ((a[:, 1] < a[:, 0]).any() or a.min() < 0
                   or (total is not None and a.max() > total)):
        raise ValueError(f"spans must be [start, stop) pairs with 0 <= start <= stop"
                         f"{f' <= {total}' if total is not None else ''}, got {a.tolist()[:4]}...")
    a = a[a[:, 1] > a[:, 0]]
    if len(a) < 2:
        return a
    a = a[np.argsort(a[:, 0], kind="stable")]
    reach = np.maximum.accumulate(a[:, 1])
    first = np.flatnonzero(np.r_[True, a[1:, 0] > reach[:-1]])  # each merged run's first span
    last = np.r_[first[1:] - 1, len(a) - 1]
    return np.stack([a[first, 0], reach[last]], axis=1)


def spans_size(spans: Spans) -> int:
    """Positions in ``spans``."""
    return int((spans[:, 1] - spans[:, 0]).sum())


def _complement(spans: Spans, total: int) -> Spans:
    edges = np.concatenate([[0], spans.ravel(), [total]]).reshape(-1, 2)
    return edges[edges[:, 1] > edges[:, 0]]


def _take(spans: Spans, lo: int, hi: int) -> Spans:
    """The positions ranked ``[lo, hi)`` (in position order) among those of ``spans``."""
    if hi <= lo:
        return np.empty((0, 2), dtype=np.int64)
    cum = np.r_[0, np.cumsum(spans[:, 1] - spans[:, 0])]
    j0 = int(np.searchsorted(cum, lo, side="right")) - 1
    j1 = int(np.searchsorted(cum, hi, side="left"))
    out = spans[j0:j1].copy()
    out[0, 0] += lo - cum[j0]
    out[-1, 1] -= cum[j1] - hi
    return out


def _positions(spans: Spans, ranks: np.ndarray) -> np.ndarray:
    """The positions ranked ``ranks`` (in position order) among those of ``spans``."""
    cum = np.r_[0, np.cumsum(spans[:, 1] - spans[:, 0])]
    j = np.searchsorted(cum, ranks, side="right") - 1
    return spans[j, 0] + ranks - cum[j]


def _segments(counts: list[int], order: np.ndarray, spans: Spans) -> list[Segment]:
    starts = np.r_[0, np.cumsum(np.asarray(counts, dtype=np.int64)[order])].tolist()
    out = []
    for a, b in spans.tolist():
        k = int(np.searchsorted(starts, a, side="right")) - 1
        while a < b:
            end = min(b, starts[k + 1])
            if end > a:
                out.append(Segment(int(order[k]), a - starts[k], end - starts[k]))
            a, k = end, k + 1
    return out


def plan(counts: list[int], *, epoch: int, seed: int, shuffle: bool, rank: int,
         world_size: int, worker: int, num_workers: int, batch_size: int,
         drop_last: bool, consumed: Spans | None = None) -> Plan:
    """The records consumer ``(rank, worker)`` reads in ``epoch``.

    Args:
        counts: records per shard, in manifest order.
        consumed: epoch positions an earlier job already read (:func:`consumed_spans`,
            normalized); the ranks and workers share the remaining ones.
    """
    if num_workers < 1 or not 0 <= worker < num_workers:
        raise ValueError(f"need 0 <= worker < num_workers, got {worker}, {num_workers}")
    order = shard_order(len(counts), shuffle=shuffle, seed=seed, epoch=epoch)
    total = int(sum(counts))
    remaining = np.array([[0, total]], dtype=np.int64) if consumed is None or not len(consumed) \
        else _complement(consumed, total)
    first, used, nb = rank_batches(spans_size(remaining), rank=rank, world_size=world_size,
                                   batch_size=batch_size, drop_last=drop_last)
    bounds = [nb * w // num_workers for w in range(num_workers + 1)]
    worker_batches = tuple(bounds[w + 1] - bounds[w] for w in range(num_workers))
    lo = first + min(bounds[worker] * batch_size, used)
    hi = first + min(bounds[worker + 1] * batch_size, used)
    spans = _take(remaining, lo, hi)
    return Plan(tuple(_segments(counts, order, spans)), hi - lo, worker_batches[worker],
                worker_batches, nb, spans)


def consumed_spans(counts: list[int], *, epoch: int, seed: int, shuffle: bool, rank: int,
                   world_size: int, num_workers: int, batch_size: int, drop_last: bool,
                   window: int, consumed: Spans | None = None,
                   batches_consumed: int | None = None) -> Spans:
    """Epoch positions of the records in rank ``rank``'s first ``batches_consumed`` batches.

    The inverse of the reader's order: which records the rank's DataLoader (``num_workers``
    workers, 0 = none) returned in its first batches, with the window shuffle of
    :class:`records.stream.ConsumerStream` (``window`` records) when ``shuffle``. The
    result includes ``consumed`` (what earlier jobs read), so it describes the rank's
    whole progress through the epoch. It assumes no record was skipped as corrupt.

    Args:
        batches_consumed: None = all of the rank's batches (it finished the epoch).
    """
    workers = max(int(num_workers), 1)
    kw = dict(epoch=epoch, seed=seed, shuffle=shuffle, rank=rank, world_size=world_size,
              num_workers=workers, batch_size=batch_size, drop_last=drop_last,
              consumed=consumed)
    plans = [plan(counts, worker=w, **kw) for w in range(workers)]
    k = plans[0].rank_batches if batches_consumed is None else batches_consumed
    shares = resume_point(k, plans[0].worker_batches)[0]
    parts = [consumed if consumed is not None else np.empty((0, 2), dtype=np.int64)]
    for w, p in enumerate(plans):
        rows = min(shares[w] * batch_size, p.records)
        if not shuffle:
            parts.append(_take(p.spans, 0, rows))
            continue
        full = rows // window * window  # windows read whole
        parts.append(_take(p.spans, 0, full))
        if rows > full:
            size = min(window, p.records - full)
            perm = window_permutation(size, seed=seed, epoch=epoch,
                                      consumer=rank * workers + w, window=rows // window)
            picked = np.sort(_positions(p.spans, full + perm[:rows - full]))
            cut = np.flatnonzero(np.diff(picked) != 1)  # last index of each run but the end
            parts.append(np.stack([picked[np.r_[0, cut + 1]],
                                   picked[np.r_[cut, len(picked) - 1]] + 1], axis=1))
    return normalize_spans(np.concatenate(parts))


def job_consumed(counts: list[int], ranks: list[tuple[int, int]], before: dict[int, list],
                 *, num_workers: int, window: int, seed: int, shuffle: bool, batch_size: int,
                 drop_last: bool) -> dict[int, Spans]:
    """What a whole job consumed, per epoch, as positions: its topology-free progress.

    Args:
        ranks: ``(epoch, batches_consumed)`` of every rank (index = rank) of a job of
            ``len(ranks)`` ranks with ``num_workers`` DataLoader workers each.
        before: epoch -> spans that jobs before this one consumed (its starting point).

    Returns:
        ``{epoch: spans}`` for every epoch from the earliest rank's to the latest's; a
        rank already in a later epoch read all of its share of the earlier ones.
    """
    if not ranks:
        raise ValueError("need the progress of every rank, got none")
    epochs = [e for e, _ in ranks]
    total = int(sum(counts))
    out = {}
    for epoch in range(min(epochs), max(epochs) + 1):
        base = normalize_spans(before.get(epoch, []), total)
        parts = [base]
        for rank, (at, consumed) in enumerate(ranks):
            if at >= epoch:
                parts.append(consumed_spans(
                    counts, epoch=epoch, seed=seed, shuffle=shuffle, rank=rank,
                    world_size=len(ranks), num_workers=num_workers, batch_size=batch_size,
                    drop_last=drop_last, window=window, consumed=base,
                    batches_consumed=consumed if at == epoch else None))
        out[epoch] = normalize_spans(np.concatenate(parts))
    return out


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
