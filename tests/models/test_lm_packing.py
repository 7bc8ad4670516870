"""pack_documents and loop_epochs: record batches -> fixed (x, y) windows."""

from __future__ import annotations

import pytest
import torch

from models.data import loop_epochs, pack_documents

EOS = 0


def batch(*docs: list[int], pad: int = 99) -> dict[str, torch.Tensor]:
    """A reader-shaped batch: padded input_ids (B, L) and input_ids_lengths (B,)."""
    width = max([len(d) for d in docs] + [1])
    ids = torch.full((len(docs), width), pad, dtype=torch.long)
    for row, doc in enumerate(docs):
        ids[row, : len(doc)] = torch.tensor(doc, dtype=torch.long)
    return {"input_ids": ids, "input_ids_lengths": torch.tensor([len(d) for d in docs])}


def pack(batches, block_size, batch_size, **kw):
    return [
        (x.tolist(), y.tolist())
        for x, y in pack_documents(
            batches, block_size=block_size, batch_size=batch_size, eos_id=EOS, **kw
        )
    ]


@pytest.mark.parametrize(
    "batches, block_size, batch_size, expected",
    [
        # stream 1 2 3 0 4 5 0 -> windows [1 2 3] [0 4 5]; the trailing [0] is dropped
        ([batch([1, 2, 3], [4, 5])], 2, 1, [([[1, 2]], [[2, 3]]), ([[0, 4]], [[4, 5]])]),
        # the same two windows as one batch of two sequences
        ([batch([1, 2, 3], [4, 5])], 2, 2, [([[1, 2], [0, 4]], [[2, 3], [4, 5]])]),
        # a document continues across reader batches: 1 2 0 3 | 4 5 6 0
        (
            [batch([1, 2]), batch([3, 4, 5, 6])],
            3,
            1,
            [([[1, 2, 0]], [[2, 0, 3]]), ([[4, 5, 6]], [[5, 6, 0]])],
        ),
        # empty documents add nothing, not even an eos; padding (99) never leaks in
        (
            [batch([], [7, 8, 9], []), batch([6])],
            2,
            1,
            [([[7, 8]], [[8, 9]]), ([[0, 6]], [[6, 0]])],
        ),
        # not enough tokens for one batch: nothing
        ([batch([1, 2, 3])], 8, 1, []),
        ([], 4, 2, []),
    ],
)
def test_pack_documents(batches, block_size, batch_size, expected):
    assert pack(batches, block_size, batch_size) == expected


def test_windows_tile_the_stream_and_y_is_x_shifted():
    gen = torch.Generator().manual_seed(0)
    docs = [
        torch.randint(1, 50, (int(n),), generator=gen).tolist()
        for n in torch.randint(1, 30, (40,), generator=gen)
    ]
    batches = [batch(*docs[i : i + 5]) for i in range(0, len(docs), 5)]
    stream = [t for d in docs for t in [*d, EOS]]
    out = list(pack_documents(batches, block_size=7, batch_size=3, eos_id=EOS))
    assert len(out) == len(stream) // (8 * 3)
    windows = []
    for x, y in out:
        assert x.shape == y.shape == (3, 7) and x.dtype == y.dtype == torch.long
        torch.testing.assert_close(x[:, 1:], y[:, :-1])
        windows += [[*xr, yr[-1]] for xr, yr in zip(x.tolist(), y.tolist(), strict=True)]
    assert [t for w in windows for t in w] == stream[: len(windows) * 8]


def test_packing_is_deterministic():
    batches = [batch([1, 2, 3, 4, 5], [6, 7]), batch([8, 9, 10, 11])]
    assert pack(batches, 3, 2) == pack(batches, 3, 2)


@pytest.mark.parametrize(
    "bad, kwargs, error",
    [
        ({"input_ids": torch.zeros(2, 3, dtype=torch.long)}, {}, ValueError),  # no lengths
        (
            {
                "input_ids": torch.zeros(2, 3, dtype=torch.long),
                "input_ids_lengths": torch.tensor([1, 4]),
            },
            {},
            ValueError,
        ),
        (
            {
                "input_ids": torch.zeros(2, 3, dtype=torch.long),
                "input_ids_lengths": torch.tensor([1]),
            },
            {},
            ValueError,
        ),
        (
            {"input_ids": torch.zeros(3, dtype=torch.long), "input_ids_lengths": torch.tensor([3])},
            {},
            ValueError,
        ),
        (
            {"input_ids": torch.zeros(2, 3), "input_ids_lengths": torch.tensor([1, 2])},
            {},
            TypeError,
        ),
        (batch([1, 2, 50]), {"vocab_size": 50}, ValueError),  # id 50 not in [0, 50)
    ],
)
def test_malformed_batches_raise(bad, kwargs, error):
    with pytest.raises(error):
        pack([bad], 2, 1, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(block_size=0, batch_size=1, eos_id=0),
        dict(block_size=4, batch_size=0, eos_id=0),
        dict(block_size=4, batch_size=1, eos_id=-1),
        dict(block_size=4, batch_size=1, eos_id=9, vocab_size=9),
    ],
)
def test_bad_sizes_raise(kwargs):
    with pytest.raises(ValueError):
        next(pack_documents([batch([1, 2, 3])], **kwargs))


def test_loop_epochs_sets_each_epoch(list_source):
    src = list_source([[1, 2], [3], [4, 5, 6]], batch_size=2)
    it = loop_epochs(src)
    got = [next(it) for _ in range(5)]  # 2 batches per epoch -> epochs 0, 1, 2
    assert src.epochs_seen == [0, 1, 2]
    first_epoch = got[0]["input_ids_lengths"].tolist() + got[1]["input_ids_lengths"].tolist()
    assert sorted(first_epoch) == [1, 2, 3]


def test_loop_epochs_on_empty_source_raises(list_source):
    src = list_source([], batch_size=2)
    with pytest.raises(ValueError, match="no batch"):
        next(loop_epochs(src))
