"""Synthetic dense batches (shapes on noise, masks, boxes) for the SAM and ThunderNet tests."""

from __future__ import annotations

import numpy as np
import torch
from dense_testlib import box_of, draw

from models.vision_model import DenseTargets


def dense_batch(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, DenseTargets]:
    """``n`` images of one shape each (dense_testlib.draw) as model input in [-1, 1] and
    their :class:`DenseTargets`: one box per image, mask class = label + 1."""
    rng = np.random.default_rng(seed)
    drawn = [draw(rng, size) for _ in range(n)]
    x = torch.tensor(np.stack([d[0] for d in drawn])).permute(0, 3, 1, 2).float() / 127.5 - 1
    masks = torch.tensor(np.stack([d[1] for d in drawn])).long()
    labels = torch.tensor([d[2] for d in drawn])
    boxes = [torch.tensor([box_of(d[1])], dtype=torch.float32) for d in drawn]
    box_labels = [torch.tensor([d[2] + 1]) for d in drawn]
    return x, DenseTargets(labels, masks, boxes, box_labels)


def fit(model, step, x, y, *, steps: int, lr: float = 3e-3) -> list[float]:
    """``steps`` AdamW steps of ``step(model, x, y) -> (loss, metrics)`` on one batch."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = step(model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
