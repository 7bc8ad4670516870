"""DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"), one file.

    x (B, C, H, W) -> patchify (p x p conv) -> tokens (B, T, dim) + 2D sin-cos positions
    c = t_embed(t) + y_embed(y)                       (B, dim), y = num_classes is "no class"
    N x DiTBlock(tokens, c) -> final adaLN + linear -> unpatchify -> (B, C, H, W)

adaLN-Zero: each block's LayerNorms have no affine parameters of their own; a linear map
of c gives per-block shift, scale and a gate for the attention and the MLP branches,
x + gate * branch(norm(x) * (1 + scale) + shift), and that map starts at zero, so every
block starts as the identity (the paper's best conditioning). Attention normalises
queries and keys per head (QK-norm, RMSNorm; SD3 and ViT-22B: keeps the logits bounded
in low precision) and runs through ``scaled_dot_product_attention`` (flash on CUDA).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DiT", "DiTBlock", "sincos_2d", "timestep_embedding"]


def sincos_2d(dim: int, h: int, w: int) -> torch.Tensor:
    """Fixed 2D sin-cos positions (h*w, dim): half the channels encode the row, half the
    column, each as [sin, cos] of geometric frequencies (MAE / DiT)."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                                torch.arange(w, dtype=torch.float64), indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * freqs[None]  # (h*w, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (h*w, dim/2)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()  # (h*w, dim)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0
                       ) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of times ``t`` (B,) in [0, 1] (scaled by 1000, the
    DDPM step range the frequencies were made for)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([args.cos(), args.sin()], dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, T, D) * (1 + scale) + shift, with shift/scale (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Bidirectional multi-head attention with optional QK RMS-normalisation."""

    def __init__(self, dim: int, n_head: int, qk_norm: bool) -> None:
        super().__init__()
        self.n_head, hs = n_head, dim // n_head
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(hs, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(hs, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class DiTBlock(nn.Module):
    """x + gate_a * attn(mod(norm(x))) then x + gate_m * mlp(mod(norm(x))), adaLN-Zero."""

    def __init__(self, dim: int, n_head: int, mlp_ratio: float, qk_norm: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, n_head, qk_norm)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.ada(c).chunk(6, dim=1)  # (B, D)
        x = x + gate_a[:, None] * self.attn(modulate(self.norm1(x), shift_a, scale_a))
        return x + gate_m[:, None] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class DiT(nn.Module):
    """Velocity (or noise) predictor on a fixed (channels, height, width) input.

    Args:
        channels, size: the input (B, channels, size, size): pixels or latents.
        patch, dim, depth, n_head, mlp_ratio, qk_norm: the transformer.
        num_classes: class conditioning; label ``num_classes`` is the null class
            (classifier-free guidance). 0 = unconditional (only the null embedding).
    """

    def __init__(self, *, channels: int, size: int, patch: int, dim: int, depth: int,
                 n_head: int, mlp_ratio: float, qk_norm: bool, num_classes: int) -> None:
        super().__init__()
        if size % patch:
            raise ValueError(f"input side {size} is not divisible by the patch size {patch}")
        self.channels, self.size, self.patch, self.num_classes = channels, size, patch, num_classes
        self.grid = size // patch
        self.patchify = nn.Conv2d(channels, dim, patch, stride=patch)
        self.register_buffer("pos", sincos_2d(dim, self.grid, self.grid)[None], persistent=False)
        self.t_embed = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.y_embed = nn.Embedding(num_classes + 1, dim)  # + the null class
        self.blocks = nn.ModuleList(DiTBlock(dim, n_head, mlp_ratio, qk_norm)
                                    for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.final = nn.Linear(dim, patch * patch * channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():  # as DiT: xavier linears, zero biases
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patchify.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patchify.bias)
        nn.init.normal_(self.y_embed.weight, std=0.02)
        for layer in (self.t_embed[0], self.t_embed[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:  # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for layer in (self.final_ada[-1], self.final):  # and the output starts at zero
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, S, S), times ``t`` (B,) in [0, 1], labels ``y`` (B,) int64 in
        [0, num_classes] (num_classes = none) -> the prediction (B, C, S, S)."""
        B, C, S, _ = x.shape
        if (self.channels, self.size) != (C, S) or x.shape[3] != S:
            raise ValueError(f"expected inputs (B, {self.channels}, {self.size}, {self.size}), "
                             f"got {tuple(x.shape)}")
        h = self.patchify(x).flatten(2).transpose(1, 2) + self.pos  # (B, T, dim)
        c = self.t_embed(timestep_embedding(t).to(h.dtype)) + self.y_embed(y)  # (B, dim)
        for block in self.blocks:
            h = block(h, c)  # (B, T, dim)
        shift, scale = self.final_ada(c).chunk(2, dim=1)
        h = self.final(modulate(self.final_norm(h), shift, scale))  # (B, T, p*p*C)
        p, g = self.patch, self.grid
        h = h.view(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, g, p, g, p)
        return h.reshape(B, C, S, S)
