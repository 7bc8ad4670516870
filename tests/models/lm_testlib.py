"""Helpers shared by the LM tests (a module, not conftest, so imports are plain and the GPU
host's ``--noconftest`` runs can use them too)."""

from __future__ import annotations

from pathlib import Path

import torch

from models.lm import DecoderLM, LMConfig
from records.example_codec import encode_example
from records.spec import FixedLenFeature, VarLenFeature
from records.writer import DatasetWriter

V = 53  # a small vocabulary that is not a power of two


def make_model(**overrides) -> DecoderLM:
    """A seeded ``tiny`` DecoderLM over :data:`V` tokens with ``overrides`` applied."""
    torch.manual_seed(0)
    return DecoderLM(LMConfig.preset("tiny", vocab_size=V, **overrides))


def periodic_batch(n: int = 8, T: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` rotations of one period-9 sequence: (inputs, next-token targets), (n, T) each."""
    period = torch.tensor([3, 14, 15, 9, 26, 5, 35, 8, 47])
    seqs = torch.stack([period.roll(-s).repeat(T // 9 + 2)[: T + 1] for s in range(n)])
    return seqs[:, :-1].clone(), seqs[:, 1:].clone()  # (n, T) each


def train_on_periodic_batch(model: DecoderLM, steps: int = 30) -> tuple[dict, dict]:
    """AdamW on :func:`periodic_batch`; returns the model's loss parts at the first and last step."""
    x, y = periodic_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(steps):
        _, loss = model(x, y)
        first = first or model.loss_parts()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, model.loss_parts()


RECORDS_SPEC = {
    "input_ids": VarLenFeature("int64"),
    "topic": FixedLenFeature((1,), "int64"),
    "length": FixedLenFeature((1,), "int64"),
}


def toy_dataset(tmp_path: Path, docs: list[list[int]],
                eval_docs: list[list[int]] | None = None) -> str:
    """Writes ``docs`` (split train) and ``eval_docs`` (split eval, when given) as a records/
    dataset under ``tmp_path`` (16 records a shard); returns its URI."""
    uri = (tmp_path / "records" / "toy" / "v=1").as_uri()
    with DatasetWriter(
        uri=uri, dataset="toy", version="1", feature_spec=RECORDS_SPEC, max_records_per_shard=16
    ) as writer:
        for split, split_docs in (("train", docs), ("eval", eval_docs or [])):
            for i, doc in enumerate(split_docs):
                example = {"input_ids": doc, "topic": [i % 3], "length": [len(doc)]}
                writer.write(split, encode_example(example))
    return uri


def counting(n_docs: int, vocab_size: int) -> list[list[int]]:
    """Documents that count upwards (mod vocab, skipping eos 0): next token = this + 1.

    Like conftest's ``toy_docs`` fixture, which ``--noconftest`` runs cannot use.
    """
    gen = torch.Generator().manual_seed(0)
    starts = torch.randint(1, vocab_size, (n_docs,), generator=gen).tolist()
    lengths = torch.randint(4, 40, (n_docs,), generator=gen).tolist()
    return [[1 + (s + i - 1) % (vocab_size - 1) for i in range(n)]
            for s, n in zip(starts, lengths, strict=True)]
