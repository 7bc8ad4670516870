"""LoRA (Hu et al., 2021, arXiv:2106.09685): a frozen Linear plus a trained low-rank update.

    y = W x + b + (alpha / r) * B (A dropout(x))      A (r, in), B (out, r)

A starts like an ``nn.Linear`` weight (Kaiming-uniform), B at zero: the update starts at
zero, so the model starts as the base model. :func:`merge_lora` folds ``(alpha / r) B A``
into W and puts plain ``nn.Linear`` s back: inference then costs what the base model costs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.peft_config import LORA_TARGETS, LoRAConfig

__all__ = ["LoRALinear", "add_lora", "merge_lora"]


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` with a LoRA pair.

    It holds the base Linear's own Parameters under the same names (``weight``, ``bias``),
    so the base model's state-dict keys do not change: a base checkpoint loads into a
    LoRA model as it is, and ``lora_A`` / ``lora_B`` are the only new keys.

    Args:
        base: the Linear to adapt; its Parameters are shared, not copied.
        rank: r.
        alpha: the update is scaled by ``alpha / rank``.
        dropout: dropout on the LoRA branch's input.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # (out, in)
        self.register_parameter("bias", base.bias)  # (out,) or None
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=w.device,
                                               dtype=w.dtype))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=w.device,
                                               dtype=w.dtype))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear's weight
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)  # (..., out)
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)  # (..., out)
        return out + update * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """``(alpha / r) B A`` (out, in), in float32."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` whose weight (this module's, updated in place) includes
        the LoRA update: the same outputs up to rounding, one matmul."""
        with torch.no_grad():
            self.weight.add_(self.delta_weight().to(self.weight.dtype))
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device="meta")
        linear.weight = self.weight
        linear.bias = self.bias
        return linear

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.lora_A.shape[0]}, scaling={self.scaling:g}")


def add_lora(blocks: nn.ModuleList, cfg: LoRAConfig) -> int:
    """Puts a :class:`LoRALinear` in place of each target Linear of every block.

    A target a block does not have (``attn.qkv`` of a non-attention mixer, ``mlp.*`` of a
    block without MLP) is skipped in that block.

    Returns:
        How many Linears were adapted.

    Raises:
        ValueError: a target that no block has.
    """
    adapted = {name: 0 for name in cfg.targets}
    for block in blocks:
        for name in cfg.targets:
            parent_name, child = LORA_TARGETS[name]
            parent = getattr(block, parent_name, None)
            linear = getattr(parent, child, None) if parent is not None else None
            if type(linear) is not nn.Linear:  # a subclass may compute something else
                continue
            setattr(parent, child, LoRALinear(linear, cfg.rank, cfg.alpha, cfg.dropout))
            adapted[name] += 1
    missing = [name for name, n in adapted.items() if n == 0]
    if missing:
        where = ", ".join(".".join(LORA_TARGETS[name]) for name in missing)
        raise ValueError(f"LoRA targets {missing} match no nn.Linear in any block ({where})")
    return sum(adapted.values())


def merge_lora(model: nn.Module) -> nn.Module:
    """Folds every LoRA update into its base weight and puts plain Linears back (in place).

    The merged model computes the unmerged one's logits (up to float rounding) with the
    base model's modules and cost. Returns ``model``.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
    return model
