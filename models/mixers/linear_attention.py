"""Causal linear attention: "Transformers are RNNs" (Katharopoulos et al. 2020).

Softmax is replaced by a positive feature map phi(x) = elu(x) + 1, so causal attention
becomes a running sum. Per head, with S_t = sum_{j<=t} phi(k_j) v_j^T (d, d) and
z_t = sum_{j<=t} phi(k_j) (d,)::

    y_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps)

Three forms of the same function:

- :func:`parallel`: the quadratic masked form ``(phi(Q) phi(K)^T * causal) V``; a
  reference for tests, O(T^2) memory.
- :func:`chunked`: chunks of c positions; within a chunk the masked quadratic form,
  across chunks the states of earlier chunks through a prefix sum over per-chunk
  ``phi(K)^T V`` (B, nh, T/c, d, d). O(T·c·d + T·d^2) time, memory linear in T.
  Training and prefill use it; it also takes and returns a state.
- :func:`step`: one token, the RNN form; decoding uses it.

No RoPE: the causal running sum orders the tokens (the paper's model has none either).
The state (S, z) is kept in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.kv_cache import KVCache
from models.lm_config import LMConfig

__all__ = ["EPS", "LinearAttention", "chunked", "feature_map", "parallel", "step"]

EPS = 1e-6  # keeps the normalizer away from 0 (it is > 0 anyway: phi > 0)

State = tuple[torch.Tensor, torch.Tensor]  # S (B, nh, d, d), z (B, nh, d): fp32


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 > 0 (the paper's map)."""
    return F.elu(x) + 1.0


def parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Quadratic reference: q, k (already mapped by phi), v (B, nh, T, d) -> (B, nh, T, d)."""
    T = q.size(-2)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    a = torch.where(causal, q @ k.transpose(-1, -2), 0.0)  # (B, nh, T, T)
    return (a @ v) / (a.sum(-1, keepdim=True) + EPS)


def chunked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int, state: State | None = None
) -> tuple[torch.Tensor, State]:
    """Chunked causal form: q, k (mapped by phi), v (B, nh, T, d).

    Args:
        chunk: positions per chunk c.
        state: (S, z) after earlier tokens, or None for an empty one.

    Returns:
        ``(y, state)``: y (B, nh, T, d) in v's dtype; the state after all T tokens.
    """
    B, nh, T, d = q.shape
    g = min(chunk, T)
    pad = -T % g
    if pad:  # zero keys at the end add nothing to any sum; their outputs are cut off
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    n = (T + pad) // g
    q, k, v = (t.view(B, nh, n, g, d) for t in (q, k, v))  # (B, nh, n, g, d)
    causal = torch.ones(g, g, dtype=torch.bool, device=q.device).tril()
    a = torch.where(causal, q @ k.transpose(-1, -2), 0.0)  # (B, nh, n, g, g)
    num = a @ v  # (B, nh, n, g, d): within the chunk
    den = a.sum(-1).float()  # (B, nh, n, g)
    kv = (k.transpose(-1, -2) @ v).float()  # (B, nh, n, d, d): each chunk's phi(K)^T V
    ks = k.float().sum(-2)  # (B, nh, n, d)
    s_all, z_all = kv.cumsum(2), ks.cumsum(2)  # inclusive prefix sums over chunks
    s_before = F.pad(s_all[:, :, :-1], (0, 0, 0, 0, 1, 0))  # (B, nh, n, d, d): chunks before
    z_before = F.pad(z_all[:, :, :-1], (0, 0, 1, 0))  # (B, nh, n, d)
    if state is not None:
        s0, z0 = state
        s_before = s_before + s0[:, :, None]
        z_before = z_before + z0[:, :, None]
        s_all, z_all = s_all + s0[:, :, None], z_all + z0[:, :, None]
    num = num.float() + q.float() @ s_before  # (B, nh, n, g, d)
    den = den + (q.float() * z_before[:, :, :, None]).sum(-1)
    y = (num / (den[..., None] + EPS)).to(v.dtype).view(B, nh, n * g, d)[:, :, :T]
    return y, (s_all[:, :, -1], z_all[:, :, -1])


def step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: State | None) -> tuple[
        torch.Tensor, State]:
    """One token, the RNN form: q, k (mapped), v (B, nh, 1, d) -> (y (B, nh, 1, d), state)."""
    kf, vf, qf = k[:, :, 0].float(), v[:, :, 0].float(), q[:, :, 0].float()  # (B, nh, d)
    s_new = kf[..., :, None] * vf[..., None, :]  # (B, nh, d, d)
    z_new = kf
    if state is not None:
        s_new, z_new = state[0] + s_new, state[1] + z_new
    num = (qf[..., None, :] @ s_new)[..., 0, :]  # (B, nh, d)
    den = (qf * z_new).sum(-1, keepdim=True)  # (B, nh, 1)
    return (num / (den + EPS)).to(v.dtype)[:, :, None], (s_new, z_new)


class LinearAttention(nn.Module):
    """Multi-head causal linear attention (elu + 1 features), a recurrent mixer.

    Without a cache it runs :func:`chunked` over the sequence. With a cache it reads the
    state ``cache.states[layer]`` (None = empty), runs the chunked form (T > 1) or one
    :func:`step` (T == 1), and stores the new state; ``cache.length`` is left alone.
    """

    def __init__(self, cfg: LMConfig, layer: int = 0) -> None:
        super().__init__()
        self.n_head, self.chunk = cfg.n_head, cfg.chunk_size
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
        hs = C // self.n_head
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, hs).permute(2, 0, 3, 1, 4)
        q, k = feature_map(q), feature_map(k)  # (B, nh, T, hs) each, > 0
        if cache is None:
            y, _ = chunked(q, k, v, self.chunk)
        elif T == 1:
            y, cache.states[layer] = step(q, k, v, cache.states[layer])
        else:
            y, cache.states[layer] = chunked(q, k, v, self.chunk, cache.states[layer])
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y))
