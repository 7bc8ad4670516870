"""Helpers shared by the MTP and Medusa tests (a module, not conftest, so imports are plain)."""

from __future__ import annotations

import torch

from models.lm import DecoderLM, LMConfig

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
