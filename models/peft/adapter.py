"""Bottleneck adapters (Houlsby et al., 2019, arXiv:1902.00751) after attention and MLP.

Each block's mixer output and MLP output pass through an adapter inside the residual
branch, before the residual add::

    x = x + Adapter(attn(norm(x)));  x = x + Adapter(mlp(norm(x)))
    Adapter(h) = h + up(gelu(down(h)))           down: C -> m, up: m -> C

``up`` starts at zero, so every adapter starts as the identity and the model as the base
model. The adapter is a child of the module it follows (``blocks.0.attn.adapter.*``) and
is applied by a forward hook on it, so the base model's modules and state-dict keys stay
as they are (a base checkpoint loads unchanged) and ``torch.compile`` traces it in line.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.peft_config import AdapterConfig

__all__ = ["Adapter", "add_adapters"]


class Adapter(nn.Module):
    """``h + up(gelu(down(h)))``: a residual bottleneck of width ``bottleneck`` (zero-init up)."""

    def __init__(self, n_embd: int, bottleneck: int, *, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.down = nn.Linear(n_embd, bottleneck, device=device, dtype=dtype)
        self.up = nn.Linear(bottleneck, n_embd, device=device, dtype=dtype)
        nn.init.normal_(self.down.weight, std=0.02)  # the base model's init scale
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # the identity at the start
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(F.gelu(self.down(h)))  # (B, T, C)


def _adapt(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: the module's output through its adapter."""
    return module.adapter(output)


def add_adapters(blocks: nn.ModuleList, cfg: AdapterConfig, n_embd: int) -> int:
    """Puts an :class:`Adapter` after the mixer (``attn``) and the MLP of every block.

    A block without an MLP (a GAU layer is a whole block) gets the mixer's only.

    Returns:
        How many adapters were added.
    """
    added = 0
    for block in blocks:
        for name in ("attn", "mlp"):
            module = getattr(block, name, None)
            if module is None:
                continue
            weight = next(module.parameters())
            module.adapter = Adapter(n_embd, cfg.bottleneck, device=weight.device,
                                     dtype=weight.dtype)
            module.register_forward_hook(_adapt)
            added += 1
    return added
