"""VQGAN's second stage at sampling time: the code LM writes token grids, the VQ model paints them.

    eos -> DecoderLM (trained on models.vq_tokens' code shards) samples h*w tokens, one at a
    time with a KV cache, each restricted to the code ids [id_offset, id_offset + K)
    -> codes (n, h, w) = tokens - id_offset, row-major -> VQ-VAE / VQGAN decoder -> images

The token dataset separates images with ``eos_id`` (the LM packs documents that way), so
an image starts after an eos. Sampling is ancestral with a temperature and optional
top-k; a seeded generator makes it repeat.
"""

from __future__ import annotations

import torch
from torch import nn

from models.lm import DecoderLM
from models.vq_tokens import DEFAULT_ID_OFFSET, EOS_ID

__all__ = ["decode_codes", "sample_codes"]


@torch.no_grad()
def sample_codes(lm: DecoderLM, n: int, *, grid: tuple[int, int], codebook_size: int,
                 id_offset: int = DEFAULT_ID_OFFSET, eos_id: int = EOS_ID,
                 temperature: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` code grids (n, h, w) int64 in [0, codebook_size) sampled from ``lm``.

    Args:
        lm: the prior, in eval mode, on the device the samples are drawn on.
        grid: ``(h, w)`` codes per image (the token dataset's ``code_grid``).
        codebook_size, id_offset, eos_id: as the token dataset's manifest records them.
        temperature: logits / temperature (> 0); 1 = the model's distribution.
        top_k: keep the k most likely codes at each step; 0 = all of them.

    Raises:
        ValueError: a vocabulary that does not hold the codes, a grid longer than the
            LM's context, or a bad temperature / top_k.
    """
    h, w = grid
    V = lm.config.vocab_size
    if id_offset + codebook_size > V:
        raise ValueError(f"the LM's vocabulary ({V}) does not hold {codebook_size} codes "
                         f"from id {id_offset}: was it trained on these codes?")
    if 1 + h * w > lm.config.block_size:
        raise ValueError(f"an image of {h}x{w} codes plus the eos needs block_size >= "
                         f"{1 + h * w}, the LM has {lm.config.block_size}")
    if not temperature > 0 or top_k < 0:
        raise ValueError(f"temperature must be > 0 and top_k >= 0, got {temperature}, {top_k}")
    device = lm.tok_emb.weight.device
    mask = torch.full((V,), float("-inf"), device=device)
    mask[id_offset:id_offset + codebook_size] = 0.0  # only code ids may come out
    cache = lm.new_kv_cache()
    hidden = lm.hidden_states(torch.full((n, 1), eos_id, dtype=torch.long, device=device), cache)
    tokens = []
    for i in range(h * w):
        logits = lm.head(hidden[:, -1]).float() / temperature + mask  # (n, V)
        if top_k:
            kth = logits.topk(min(top_k, codebook_size), dim=-1).values[:, -1:]  # (n, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        tok = torch.multinomial(logits.softmax(-1), 1, generator=generator)  # (n, 1)
        tokens.append(tok)
        if i < h * w - 1:
            hidden = lm.hidden_states(tok, cache)  # (n, 1, C)
    return (torch.cat(tokens, dim=1) - id_offset).view(n, h, w)


@torch.no_grad()
def decode_codes(vq: nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """Images (n, C, H, W) in [-1, 1] (clamped) from code grids (n, h, w) with a VQ-VAE or
    VQGAN (``decode_indices``)."""
    return vq.decode_indices(codes).float().clamp(-1.0, 1.0)
