"""What the LM and the vision trainers share: one device, precision, seeding and optimizer policy.

:mod:`models.train` (the LM) and :mod:`models.train_vision` both build their runs from
these, so a flag means the same thing in either: ``device: auto``, ``precision: auto``,
the seed, AdamW's parameter groups and the float32 matmul precision.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["make_optimizer", "matmul_precision", "resolve_device", "resolve_precision",
           "seed_everything"]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto|cuda|cpu`` as a device; CUDA is this rank's GPU. Raises if CUDA is absent."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TrainConfig.device='cuda' but torch.cuda.is_available() is False")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` = fp16 on CUDA, fp32 elsewhere; raises for bf16 on a GPU without it."""
    if name == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"bf16 is not supported on {torch.cuda.get_device_name(device)}")
    return name


def seed_everything(seed: int) -> None:
    """Seeds Python's, numpy's and torch's (CPU and every CUDA device) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def make_optimizer(model: nn.Module, cfg: Any, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters; weight decay on matrices only.

    ``cfg`` is a TrainConfig or VisionTrainConfig (lr, betas, weight_decay); fused on CUDA.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # matmul weights and the (tied) embedding
    no_decay = [p for p in params if p.dim() < 2]  # norm gains and biases
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"  # one kernel for all parameters
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


@contextmanager
def matmul_precision(device: torch.device, precision: str) -> Iterator[None]:
    """TF32 for the fp32 leftovers of fp16/bf16 runs; true IEEE FP32 for fp32 runs (CUDA)."""
    if device.type != "cuda":
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest" if precision == "fp32" else "high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)
