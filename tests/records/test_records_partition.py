import itertools

import pytest

from records.partition import plan, rank_batches, resume_point, shard_order, worker_shares


def _simulate_dataloader(worker_batches):
    """The order an in-order DataLoader returns (worker, batch) pairs in."""
    rounds = max(worker_batches, default=0)
    return [(w, t) for t in range(rounds) for w, m in enumerate(worker_batches) if m > t]


@pytest.mark.parametrize("worker_batches", [(3, 3, 3), (2, 2, 3), (0, 1, 1), (5,), (1, 0, 4, 2)])
def test_worker_shares_invert_round_robin(worker_batches):
    order = _simulate_dataloader(worker_batches)
    for k in range(len(order) + 1):
        expected = [sum(1 for w, _ in order[:k] if w == v) for v in range(len(worker_batches))]
        assert worker_shares(k, worker_batches) == expected


def test_worker_shares_rejects_too_many():
    with pytest.raises(ValueError, match="batches_consumed"):
        worker_shares(10, (2, 2))


@pytest.mark.parametrize("counts, world, workers, batch, shuffle", [
    ([7, 7, 7, 4], 2, 3, 4, False),
    ([7, 7, 7, 4], 2, 3, 4, True),
    ([1, 0, 5, 30], 3, 2, 5, True),
    ([10], 4, 4, 1, False),
    ([3, 3], 1, 1, 100, True),
])
def test_every_record_exactly_once(counts, world, workers, batch, shuffle):
    for epoch in (0, 1):
        seen = []
        for rank, worker in itertools.product(range(world), range(workers)):
            p = plan(counts, epoch=epoch, seed=3, shuffle=shuffle, rank=rank, world_size=world,
                     worker=worker, num_workers=workers, batch_size=batch, drop_last=False)
            seen += [(s.shard, i) for s in p.segments for i in range(s.start, s.stop)]
            assert p.records == sum(s.stop - s.start for s in p.segments)
            assert p.batches == -(-p.records // batch) or p.records == 0
        assert sorted(seen) == [(s, i) for s, c in enumerate(counts) for i in range(c)]


def test_only_the_last_batch_of_a_rank_is_partial():
    for worker in range(3):
        p = plan([50], epoch=0, seed=0, shuffle=False, rank=0, world_size=1, worker=worker,
                 num_workers=3, batch_size=4, drop_last=False)
        assert p.records == (p.batches * 4 if worker < 2 else 50 - 8 * 4)
        assert p.rank_batches == 13


def test_drop_last_gives_every_rank_the_same_batches():
    for total in range(0, 40):
        nbs = {rank_batches(total, rank=r, world_size=3, batch_size=4, drop_last=True)[2]
               for r in range(3)}
        assert nbs == {(total // 3) // 4}


def test_shard_order_is_seeded_per_epoch():
    a = shard_order(20, shuffle=True, seed=1, epoch=0)
    assert sorted(a.tolist()) == list(range(20))
    assert (a == shard_order(20, shuffle=True, seed=1, epoch=0)).all()
    assert (a != shard_order(20, shuffle=True, seed=1, epoch=1)).any()
    assert shard_order(5, shuffle=False, seed=1, epoch=3).tolist() == list(range(5))


@pytest.mark.parametrize("worker_batches", [(3, 3, 3), (2, 2, 3), (0, 2, 1), (4, 1, 3, 2)])
def test_resume_point_rotation_continues_the_same_order(worker_batches):
    order = _simulate_dataloader(worker_batches)
    n = len(worker_batches)
    for k in range(len(order) + 1):
        shares, rotate = resume_point(k, worker_batches)
        # a fresh DataLoader: slot j plays original worker (j + rotate) % n
        remaining = [worker_batches[(j + rotate) % n] - shares[(j + rotate) % n]
                     for j in range(n)]
        resumed = [((j + rotate) % n, shares[(j + rotate) % n] + t)
                   for j, t in _simulate_dataloader(remaining)]
        assert resumed == order[k:]
