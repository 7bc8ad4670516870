"""Prefix-tuning (Li & Liang, 2021, arXiv:2101.00190): learned key/value positions per layer.

Every attention layer attends to P extra positions in front of the sequence whose keys
and values are learned (no RoPE: they sit at no position); the model's weights stay
frozen. Trained directly the prefixes are unstable, so during training they come from a
reparameterisation, an MLP over P learned vectors (:class:`PrefixEncoder`)::

    h = tanh(W1 e + b1)            e (P, C) -> h (P, H)
    [k_l, v_l] = W2[l] h + b2[l]   h -> (P, 2C) for layer l, as (1, nh, P, hs) each

Afterwards only its outputs matter: :func:`merge_prefix` evaluates the MLP once and keeps
the prefixes alone (:class:`StaticPrefix`, ``n_layer * 2 * P * C`` numbers).

The encoder lives on the model (``model.peft_prefix``); each attention layer's
``prefix`` hook (``CausalSelfAttention.prefix``, see :mod:`models.lm`) is a plain callable
returning that layer's ``(k_prefix, v_prefix)``, which attention concatenates before the
sequence's keys and values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.peft_config import PrefixConfig

__all__ = ["LayerPrefix", "PrefixEncoder", "StaticPrefix", "add_prefix", "merge_prefix"]

PrefixKV = tuple[torch.Tensor, torch.Tensor]  # (k, v), each (1, nh, P, hs)


def _split(kv: torch.Tensor, n_head: int) -> PrefixKV:
    """(P, 2C) -> k, v each (1, nh, P, hs)."""
    P = kv.shape[0]
    k, v = kv.view(P, 2, n_head, -1).permute(1, 2, 0, 3).unsqueeze(1).unbind(0)
    return k, v


class PrefixEncoder(nn.Module):
    """The training-time reparameterisation: L layers' prefixes from an MLP over P vectors.

    Args:
        n_rows: L, the attention layers it serves (row i = the i-th of them).
        n_head, n_embd: the model's shape.
        length: P.
        hidden: H, the MLP's hidden width.
    """

    def __init__(self, n_rows: int, n_head: int, n_embd: int, length: int, hidden: int, *,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.n_rows, self.n_head, self.n_embd = n_rows, n_head, n_embd
        kw = dict(device=device, dtype=dtype)
        self.tokens = nn.Parameter(torch.randn(length, n_embd, **kw))  # (P, C), as nn.Embedding
        self.mlp_in = nn.Linear(n_embd, hidden, **kw)
        self.mlp_out = nn.Linear(hidden, n_rows * 2 * n_embd, **kw)

    def layer_kv(self, row: int) -> PrefixKV:
        """Row ``row``'s ``(k, v)``, each (1, nh, P, hs): the rows of W2 for that layer only."""
        h = torch.tanh(self.mlp_in(self.tokens))  # (P, H)
        rows = slice(row * 2 * self.n_embd, (row + 1) * 2 * self.n_embd)
        kv = F.linear(h, self.mlp_out.weight[rows], self.mlp_out.bias[rows])  # (P, 2C)
        return _split(kv, self.n_head)

    @torch.no_grad()
    def prefixes(self) -> torch.Tensor:
        """Every row's prefixes at once: (L, P, 2C), float32."""
        h = torch.tanh(F.linear(self.tokens.float(), self.mlp_in.weight.float(),
                                self.mlp_in.bias.float()))  # (P, H)
        kv = F.linear(h, self.mlp_out.weight.float(), self.mlp_out.bias.float())  # (P, L * 2C)
        return kv.view(kv.shape[0], self.n_rows, 2 * self.n_embd).transpose(0, 1).contiguous()


class StaticPrefix(nn.Module):
    """The prefixes themselves, (L, P, 2C): what a trained :class:`PrefixEncoder` leaves."""

    def __init__(self, kv: torch.Tensor, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.kv = nn.Parameter(kv.detach().clone())  # (L, P, 2C)

    def layer_kv(self, row: int) -> PrefixKV:
        return _split(self.kv[row], self.n_head)


class LayerPrefix:
    """The ``prefix`` hook of one attention layer: a plain callable, not a module (the
    encoder is registered once, on the model), returning its row's ``(k, v)``."""

    def __init__(self, source: PrefixEncoder | StaticPrefix, row: int) -> None:
        self.source, self.row = source, row

    def __call__(self) -> PrefixKV:
        return self.source.layer_kv(self.row)

    def __repr__(self) -> str:
        return f"LayerPrefix(row={self.row}, {type(self.source).__name__})"


def _attention_layers(model: nn.Module) -> list[nn.Module]:
    """The mixers of ``model.blocks`` that have a ``prefix`` hook (softmax attention)."""
    return [block.attn for block in model.blocks
            if hasattr(getattr(block, "attn", None), "prefix")]


def _hook(model: nn.Module, source: PrefixEncoder | StaticPrefix) -> None:
    for row, attn in enumerate(_attention_layers(model)):
        attn.prefix = LayerPrefix(source, row)


def add_prefix(model: nn.Module, cfg: PrefixConfig) -> int:
    """Registers a :class:`PrefixEncoder` as ``model.peft_prefix`` and hooks every attention
    layer to it (the other mixers of a hybrid get no prefix).

    Returns:
        How many layers were hooked.

    Raises:
        ValueError: the model has no attention layer with a ``prefix`` hook.
    """
    layers = _attention_layers(model)
    if not layers:
        raise ValueError("prefix-tuning needs attention layers (CausalSelfAttention.prefix); "
                         "this model has none")
    mc = model.config
    weight = model.tok_emb.weight
    model.peft_prefix = PrefixEncoder(len(layers), mc.n_head, mc.n_embd, cfg.length,
                                      cfg.reparam_hidden, device=weight.device, dtype=weight.dtype)
    _hook(model, model.peft_prefix)
    return len(layers)


def merge_prefix(model: nn.Module) -> nn.Module:
    """Evaluates the reparameterisation once and keeps only the prefixes (in place).

    ``model.peft_prefix`` becomes a :class:`StaticPrefix` and the attention hooks read it;
    the logits stay the same. A model whose prefixes are static already is left alone.
    Returns ``model``.
    """
    encoder = getattr(model, "peft_prefix", None)
    if isinstance(encoder, PrefixEncoder):
        static = StaticPrefix(encoder.prefixes().to(encoder.tokens.dtype), model.config.n_head)
        static.kv.requires_grad_(encoder.tokens.requires_grad)
        model.peft_prefix = static
        _hook(model, static)
    return model
