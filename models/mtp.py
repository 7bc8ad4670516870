"""Multi-token prediction (MTP) modules, DeepSeek-V3 style (arXiv:2412.19437, section 2.2).

D modules run in sequence after the backbone. Module k (1-based) at position i combines
the previous depth's hidden state ``h^{k-1}_i`` (``h^0`` is the backbone's output) with
the embedding of token ``t_{i+k}``, and its output predicts token ``t_{i+k+1}``::

    h'_i  = W_k [RMSNorm(h^{k-1}_i); RMSNorm(Emb(t_{i+k}))]     W_k: 2C -> C
    h^k   = TransformerBlock_k(h')                               causal over i
    p^k_i = OutHead(RMSNorm_k(h^k_i))                            head shared with the LM

The embedding and the output head are the LM's own (shared); each module owns its two
input norms, the projection, one transformer block and an output norm. The training
loss adds ``mtp_lambda * mean_k CE_k`` (see :class:`~models.lm.DecoderLM`). At inference
the modules draft tokens for speculative decoding (:mod:`models.generate`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MTPModule"]


class MTPModule(nn.Module):
    """One MTP depth.

    Args:
        n_embd: channels C.
        norm_eps: RMSNorm epsilon.
        block: the transformer block (a ``models.lm.Block``), called as ``block(x, cos, sin)``.
    """

    def __init__(self, n_embd: int, norm_eps: float, block: nn.Module) -> None:
        super().__init__()
        self.hidden_norm = nn.RMSNorm(n_embd, eps=norm_eps)
        self.emb_norm = nn.RMSNorm(n_embd, eps=norm_eps)
        self.merge = nn.Linear(2 * n_embd, n_embd, bias=False)  # W_k: 2C -> C
        self.block = block
        self.out_norm = nn.RMSNorm(n_embd, eps=norm_eps)

    def forward(
        self, h_prev: torch.Tensor, emb_next: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        """Returns ``h^k`` (B, T, C) from ``h^{k-1}`` (B, T, C) and ``Emb(t_{i+k})`` (B, T, C).

        ``cos``/``sin`` (T, hs/2) are the RoPE rotations of the T positions.
        """
        if h_prev.shape != emb_next.shape:
            raise ValueError(
                f"MTP inputs differ in shape: {tuple(h_prev.shape)} vs {tuple(emb_next.shape)}"
            )
        x = torch.cat((self.hidden_norm(h_prev), self.emb_norm(emb_next)), dim=-1)  # (B, T, 2C)
        return self.block(self.merge(x), cos, sin)  # (B, T, C)
