"""Gated attention unit (GAU) with FLASH's mixed chunk attention, for causal LMs.

Hua et al. 2022, "Transformer Quality in Linear Time" (arXiv:2202.10447). A GAU layer
is a whole block (it replaces attention *and* MLP; :class:`~models.lm.Block` skips the
MLP for it). With e = gau_expansion * C and s = gau_qk_dim::

    U = silu(W_u x), V = silu(W_v x)           (B, T, e) each: gate and values
    Z = silu(W_z x)                             (B, T, s): shared by queries and keys
    Q, K, Q', K' = Z * gamma_i + beta_i         per-dim scale and offset, then RoPE
    O = W_o(U * (A V))

FLASH's causal form splits the sequence into chunks of ``chunk_size`` (c) positions:
within a chunk, quadratic attention ``relu(Q K^T / c)^2`` (or a softmax) under a causal
mask; across chunks, linear attention ``Q' (sum over earlier chunks of K'^T V) / c``
through a cumulative sum over chunk states (B, T/c, s, e). Cost O(T·c·(s + e) + T·s·e),
memory linear in T. With ``chunk_size >= T`` it is plain quadratic GAU (FLASH-Quad).

RoPE rotates the first min(s, hs) query/key channels with the model's cos/sin (partial
rotary). Decoding keeps keys and values in the KVCache like attention (``K; K'`` as the
keys, V as the values) and evaluates the same chunk rule over them, so speculative
decoding and cache rollback work as for attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.kv_cache import KVCache
from models.lm import apply_rope
from models.lm_config import LMConfig

__all__ = ["GAU"]


class GAU(nn.Module):
    """One FLASH layer: gated attention unit with mixed chunk attention (causal).

    Args:
        cfg: uses n_embd, gau_expansion, gau_qk_dim, gau_attention, chunk_size, bias,
            dropout and head_size (the rotated width).
        layer: the block's index (its KVCache slot is passed at call time).
    """

    def __init__(self, cfg: LMConfig, layer: int = 0) -> None:
        super().__init__()
        C = cfg.n_embd
        self.e, self.s = cfg.gau_expansion * C, cfg.gau_qk_dim
        self.chunk = cfg.chunk_size
        self.softmax = cfg.gau_attention == "softmax"
        self.rotary = min(self.s, cfg.head_size)  # channels RoPE rotates
        self.uv = nn.Linear(C, 2 * self.e, bias=cfg.bias)  # W_u, W_v side by side
        self.z = nn.Linear(C, self.s, bias=cfg.bias)
        # Rows: quadratic q, quadratic k, linear q, linear k (init: reset_parameters).
        self.gamma = nn.Parameter(torch.empty(4, self.s))
        self.beta = nn.Parameter(torch.zeros(4, self.s))
        self.proj = nn.Linear(self.e, C, bias=cfg.bias)  # W_o; named like the residual projs
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Scales N(0, 0.02) and offsets 0 as in the paper, except the quadratic q/k
        scales, which start at 1 + N(0, 0.02): the paper's relative-position bias (not
        used here; RoPE places tokens) keeps its relu^2 scores off 0 at the start, and
        without it scores near 0 get no gradient through relu^2, so the quadratic part
        would never start learning. The linear part keeps the small start: its sums
        over all earlier chunks are unnormalized and grow with T."""
        nn.init.normal_(self.gamma, std=0.02)
        with torch.no_grad():
            self.gamma[:2] += 1.0
        nn.init.zeros_(self.beta)

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
        u, v = F.silu(self.uv(x)).chunk(2, dim=-1)  # (B, T, e) each
        z = F.silu(self.z(x))  # (B, T, s)
        qk = z[:, :, None, :] * self.gamma + self.beta  # (B, T, 4, s)
        r = self.rotary
        rot = apply_rope(qk[..., :r], cos[:, None, : r // 2], sin[:, None, : r // 2])
        qk = torch.cat((rot, qk[..., r:]), dim=-1) if r < self.s else rot  # (B, T, 4, s)
        if cache is None:
            y = self._chunked(qk, v)  # (B, T, e)
        else:
            start = cache.length
            keys = torch.cat((qk[:, :, 1], qk[:, :, 3]), dim=-1)[:, None]  # (B, 1, T, 2s)
            keys, values = cache.update(layer, keys, v[:, None])  # (B, 1, S, 2s), (B, 1, S, e)
            y = self._dense(qk[:, :, 0], qk[:, :, 2], keys[:, 0], values[:, 0], start)
        return self.resid_dropout(self.proj(u * y))  # (B, T, C)

    def _local_weights(self, scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Quadratic attention weights from raw scores Q K^T, zero where not ``allowed``."""
        if self.softmax:
            scores = scores.masked_fill(~allowed, float("-inf")) / math.sqrt(self.s)
            return torch.softmax(scores.float(), dim=-1).to(scores.dtype)
        return torch.where(allowed, F.relu(scores / self.chunk).square(), 0.0)

    def _chunked(self, qk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """FLASH's mixed chunk attention over a whole sequence: qk (B, T, 4, s), v (B, T, e)."""
        B, T, _ = v.shape
        g = min(self.chunk, T)  # positions per chunk; one short chunk when T < chunk_size
        pad = -T % g
        if pad:  # zero positions at the end: causal, so they change no real output
            qk, v = F.pad(qk, (0, 0, 0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
        n = (T + pad) // g
        qk = qk.view(B, n, g, 4, self.s)
        quad_q, quad_k, lin_q, lin_k = qk.unbind(3)  # (B, n, g, s) each
        v = v.view(B, n, g, self.e)  # (B, n, g, e)
        causal = torch.ones(g, g, dtype=torch.bool, device=v.device).tril()  # (g, g)
        weights = self._local_weights(quad_q @ quad_k.transpose(-1, -2), causal)  # (B, n, g, g)
        quad = weights @ v  # (B, n, g, e)
        state = lin_k.transpose(-1, -2) @ v / self.chunk  # (B, n, s, e): each chunk's K'^T V
        state = state.float().cumsum(dim=1)  # fp32 running sums
        state = F.pad(state[:, :-1], (0, 0, 0, 0, 1, 0)).to(v.dtype)  # chunks before each
        lin = lin_q @ state  # (B, n, g, e)
        return (quad + lin).view(B, n * g, self.e)[:, :T]  # (B, T, e)

    def _dense(
        self, quad_q: torch.Tensor, lin_q: torch.Tensor, keys: torch.Tensor,
        values: torch.Tensor, start: int,
    ) -> torch.Tensor:
        """The chunk rule for T queries at ``[start, start + T)`` over every cached key.

        quad_q, lin_q (B, T, s); keys (B, S, 2s) = quadratic keys; linear keys; values
        (B, S, e). A key in the query's chunk and not after it gets the quadratic weight,
        a key of an earlier chunk the linear weight ``Q' K'^T / c``.
        """
        T, S = quad_q.size(1), keys.size(1)
        pos_q = start + torch.arange(T, device=keys.device)  # (T,)
        pos_k = torch.arange(S, device=keys.device)  # (S,)
        same = (pos_k[None] // self.chunk) == (pos_q[:, None] // self.chunk)  # (T, S)
        local = same & (pos_k[None] <= pos_q[:, None])
        earlier = (pos_k[None] // self.chunk) < (pos_q[:, None] // self.chunk)
        quad_k, lin_k = keys.split(self.s, dim=-1)  # (B, S, s) each
        weights = self._local_weights(quad_q @ quad_k.transpose(-1, -2), local)  # (B, T, S)
        linear = torch.where(earlier, lin_q @ lin_k.transpose(-1, -2) / self.chunk, 0.0)
        return (weights + linear) @ values  # (B, T, e)
