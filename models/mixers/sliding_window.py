"""Sliding-window causal attention: each token sees itself and the ``window - 1`` before it.

Same projections and RoPE as :class:`~models.lm.CausalSelfAttention`; only the mask
differs: query i attends to keys j with ``i - window < j <= i``, so the cost is
O(T·w) instead of O(T^2) (Longformer, Mistral).

Kernels:

- CUDA: FlexAttention (``torch.nn.attention.flex_attention``) with a block-sparse
  :class:`BlockMask` (:func:`block_mask`) built from block arithmetic: (T/128)·(w/128 + 2)
  tiles, never a T×T mask, so it is cheap to build inside a compiled forward. Tiles
  wholly inside the band skip the ``mask_mod``; the edge tiles evaluate it.
  Outside a compiled model ``flex_attention`` runs through its own ``torch.compile``.
- CPU (tests, laptops): SDPA with an explicit banded boolean mask (:func:`band`).
- ``T <= window``: the band is the causal triangle: plain causal SDPA (FlashAttention).

Attention dropout is not applied (FlexAttention has none); ``dropout`` drops the output.
Decoding keeps keys/values in the KVCache like attention and attends to the last
``window`` positions; rollback (speculative decoding) works as for attention.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from models.kv_cache import KVCache
from models.lm import roped_qkv
from models.lm_config import LMConfig

__all__ = ["BLOCK", "SlidingWindowAttention", "band", "block_mask", "sliding_mask_mod",
           "sliding_window_flex", "sliding_window_sdpa"]

BLOCK = 128  # FlexAttention's default tile (queries and keys)


def sliding_mask_mod(window: int):
    """FlexAttention ``mask_mod``: key ``kv_idx`` visible to query ``q_idx`` in the band."""

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx < window)

    return mask_mod


def band(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """Boolean mask (Tq, Tk), True = attend, for queries/keys at absolute positions."""
    diff = q_pos[:, None] - k_pos[None, :]  # (Tq, Tk)
    return (diff >= 0) & (diff < window)


def _block_lists(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(count (1, 1, nq), indices (1, 1, nq, nk)) of the True tiles of m (nq, nk), in order."""
    count = m.sum(-1, dtype=torch.int32)
    order = torch.argsort((~m).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return count[None, None], order[None, None]


def block_mask(T: int, window: int, device: torch.device | str) -> BlockMask:
    """The sliding-window causal :class:`BlockMask` for T queries and T keys.

    A tile (query rows ``[r0, r1]``, key columns ``[c0, c1]``) holds some visible pair
    when the differences ``r - c`` in ``[r0 - c1, r1 - c0]`` meet ``[0, window - 1]``,
    and only visible pairs (a full tile) when they lie inside it and the tile has no
    padding past T. Equals ``create_block_mask(sliding_mask_mod(window), ...)``.
    """
    n = -(-T // BLOCK)
    start = torch.arange(n, device=device) * BLOCK
    end = start + BLOCK - 1
    last = end.clamp(max=T - 1)  # the last tile's real positions stop at T - 1
    r0, r1 = start[:, None], last[:, None]  # (n, 1): query tile rows
    c0, c1 = start[None, :], last[None, :]  # (1, n): key tile columns
    some = (r1 - c0 >= 0) & (r0 - c1 <= window - 1)  # (n, n)
    whole = end < T  # tiles without padding; as in create_block_mask, only those are full
    full = (r0 - c1 >= 0) & (r1 - c0 <= window - 1) & whole[:, None] & whole[None, :]
    partial_n, partial_idx = _block_lists(some & ~full)
    full_n, full_idx = _block_lists(full)
    return BlockMask.from_kv_blocks(partial_n, partial_idx, full_n, full_idx, BLOCK_SIZE=BLOCK,
                                    mask_mod=sliding_mask_mod(window), seq_lengths=(T, T))


@functools.cache
def _compiled_flex():
    return torch.compile(flex_attention)


def sliding_window_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                        *, compiled: bool | None = None) -> torch.Tensor:
    """FlexAttention over the band: q, k, v (B, nh, T, hs) -> (B, nh, T, hs).

    Args:
        compiled: use ``torch.compile(flex_attention)``; default: on CUDA only (the eager
            kernel materializes the scores; compiling on CPU needs a C++ toolchain).
    """
    compiled = q.is_cuda if compiled is None else compiled
    # Inside a compiled model the outer torch.compile fuses flex_attention itself.
    attend = _compiled_flex() if compiled and not torch.compiler.is_compiling() else flex_attention
    return attend(q, k, v, block_mask=block_mask(q.size(-2), window, q.device))


def sliding_window_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                        start: int = 0) -> torch.Tensor:
    """SDPA with a banded mask: q (B, nh, Tq, hs) at positions ``[start, start + Tq)``,
    k, v (B, nh, Tk, hs) at ``[start + Tq - Tk, start + Tq)`` (the last Tk positions)."""
    Tq, Tk = q.size(-2), k.size(-2)
    end = start + Tq
    mask = band(torch.arange(start, end, device=q.device),
                torch.arange(end - Tk, end, device=q.device), window)  # (Tq, Tk)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class SlidingWindowAttention(nn.Module):
    """Multi-head causal attention restricted to the last ``cfg.window`` positions, RoPE."""

    def __init__(self, cfg: LMConfig, layer: int = 0) -> None:
        super().__init__()
        self.n_head, self.window = cfg.n_head, cfg.window
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = roped_qkv(self.qkv(x), self.n_head, cos, sin)  # (B, nh, T, hs) each
        if cache is not None:
            start = cache.length
            k, v = cache.update(layer, k, v)  # (B, nh, start + T, hs)
            first = max(0, start - self.window + 1)  # the earliest key any query sees
            y = sliding_window_sdpa(q, k[:, :, first:], v[:, :, first:], self.window, start)
        elif self.window >= T:  # the band is the whole causal triangle
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif q.is_cuda:
            y = sliding_window_flex(q, k, v, self.window)
        else:
            y = sliding_window_sdpa(q, k, v, self.window)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y))
