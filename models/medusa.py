"""Medusa heads (Cai et al., 2024, arXiv:2401.10774) and Medusa-1 backbone freezing.

Head k (1-based) reads the backbone's last hidden state at position i (after the final
RMSNorm) and predicts token ``t_{i+k+1}``, i.e. k tokens beyond the LM head's next one::

    logits_k = Head_k(x + SiLU(W_k x + b_k))

``W_k`` and ``b_k`` start at zero, so an untrained head first predicts what the LM head
predicts. ``Head_k`` is the LM's own output head (shared, the default) or a head of its
own (``LMConfig.medusa_own_head``) initialised as a copy of the LM head.

Training: jointly with the backbone (the loss adds ``medusa_weight * sum_k decay^k CE_k``),
or Medusa-1 style with :func:`freeze_backbone`, which leaves only the heads trainable (the
trainer does it for ``TrainConfig(init_from=..., freeze_backbone=True)``, see
:mod:`models.warm_start`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MedusaHeads", "freeze_backbone"]


class MedusaResBlock(nn.Module):
    """``x + SiLU(Linear(x))``, zero-initialised so it starts as the identity."""

    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_embd, n_embd, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.silu(self.linear(x))  # (B, T, C)


class MedusaHeads(nn.Module):
    """K Medusa heads.

    Args:
        n_embd: channels C.
        n_heads: K, the number of heads.
        vocab_size: V; used only for heads of their own.
        own_head: give each head its own output Linear instead of sharing the LM head.
    """

    def __init__(self, n_embd: int, n_heads: int, vocab_size: int, own_head: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MedusaResBlock(n_embd) for _ in range(n_heads))
        self.heads = (
            nn.ModuleList(nn.Linear(n_embd, vocab_size, bias=False) for _ in range(n_heads))
            if own_head
            else None
        )

    def reset_parameters(self, lm_head: nn.Linear) -> None:
        """Zeroes the residual blocks and copies ``lm_head`` into heads of their own.

        Call it after loading a pretrained backbone, before Medusa-1 training.
        """
        for block in self.blocks:
            block.reset_parameters()
        if self.heads is not None:
            with torch.no_grad():
                for head in self.heads:
                    head.weight.copy_(lm_head.weight)

    def forward(self, x: torch.Tensor, lm_head: nn.Linear) -> list[torch.Tensor]:
        """Returns K logits tensors (B, T, V): head k's guess for token ``t_{i+k+1}``.

        Args:
            x: the backbone's normed last hidden state (B, T, C).
            lm_head: the LM's output head, used by heads without one of their own.
        """
        heads = self.heads if self.heads is not None else [lm_head] * len(self.blocks)
        return [head(block(x)) for block, head in zip(self.blocks, heads, strict=True)]


def freeze_backbone(model: nn.Module) -> list[nn.Parameter]:
    """Medusa-1: freezes every parameter of ``model`` except those of ``model.medusa``.

    A shared LM head (tied to the embedding) stays frozen with the backbone. The
    trainer's optimizer only takes parameters with ``requires_grad``.

    Returns:
        The parameters left trainable (the heads').

    Raises:
        ValueError: the model has no Medusa heads.
    """
    medusa = getattr(model, "medusa", None)
    if not isinstance(medusa, MedusaHeads):
        raise ValueError("model has no Medusa heads (LMConfig.medusa_heads is 0)")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = list(medusa.parameters())
    for p in trainable:
        p.requires_grad_(True)
    return trainable
