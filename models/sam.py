"""A SAM-style promptable segmenter (Kirillov et al. 2023, "Segment Anything"), one file.

    image (B, 3, S, S) -> ViT (patch p, global attention) -> neck -> embedding (B, C, g, g)
    points (B, N, 2) + labels (B, N) and/or boxes (B, 4)
      -> prompt encoder: random Fourier features of the position + a learned type embedding
      -> sparse tokens (B, T, C); no mask prompt: a learned "no mask" embedding (B, C, g, g)
    [IoU token, 1 + K mask tokens, prompt tokens] and the embedding (+ its Fourier PE)
      -> two-way transformer (tokens attend to the image, the image attends to the tokens)
      -> each mask token -> hypernetwork MLP -> weights over the embedding upscaled 4x
      -> mask logits (B, 1 + K, 4g, 4g); the IoU token -> MLP -> predicted IoU (B, 1 + K)

As SAM: an ambiguous prompt (one point) takes the K multimask outputs (whole, part,
subpart), an unambiguous one (a box, several points) the single first mask. What
differs from the paper's model: the ViT is small with global attention and absolute
position embeddings (no windows, no relative positions: the grid is 16x16, not 64x64),
and there are no mask prompts. The training recipe (prompts drawn from the ground truth
masks, focal + dice on the best mask, MSE on the IoU) is :mod:`models.vision_sam`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.sam_config import SAM_PRESETS, SAMConfig

__all__ = ["SAM", "SAM_PRESETS", "Attention", "FourierPositions", "ImageEncoder", "MaskDecoder",
           "PromptEncoder", "SAMConfig", "TwoWayBlock"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of (B, C, H, W) (SAM's, for the conv parts)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # F.layer_norm: fp32 under autocast
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class MLP(nn.Module):
    """``depth`` linear layers with ReLU between: d_in -> hidden ... -> d_out."""

    def __init__(self, d_in: int, hidden: int, d_out: int, depth: int) -> None:
        super().__init__()
        dims = [d_in] + [hidden] * (depth - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:],
                                                                     strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class Attention(nn.Module):
    """Multi-head attention of queries over keys/values, projected to ``dim // downsample``."""

    def __init__(self, dim: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        self.heads, self.inner = heads, dim // downsample
        self.q, self.k, self.v = (nn.Linear(dim, self.inner) for _ in range(3))
        self.out = nn.Linear(self.inner, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, Nq, _ = q.shape  # q (B, Nq, C), k and v (B, Nk, C)
        h, hs = self.heads, self.inner // self.heads
        q = self.q(q).view(B, Nq, h, hs).transpose(1, 2)  # (B, h, Nq, hs)
        k = self.k(k).view(B, -1, h, hs).transpose(1, 2)  # (B, h, Nk, hs)
        v = self.v(v).view(B, -1, h, hs).transpose(1, 2)  # (B, h, Nk, hs)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, Nq, hs)
        return self.out(out.transpose(1, 2).reshape(B, Nq, self.inner))  # (B, Nq, C)


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: x + attn(ln(x)), then x + mlp(ln(x)); (B, N, D) -> same."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, N, 3, self.heads, D // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, hs)
        att = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, hs)
        x = x + self.proj(att.transpose(1, 2).reshape(B, N, D))
        return x + self.mlp(self.norm2(x))


class ImageEncoder(nn.Module):
    """ViT + SAM's neck: (B, 3, S, S) -> image embedding (B, C, S/p, S/p)."""

    def __init__(self, cfg: SAMConfig) -> None:
        super().__init__()
        D, C = cfg.encoder_dim, cfg.prompt_dim
        self.patch_embed = nn.Conv2d(cfg.in_channels, D, cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, D, cfg.grid, cfg.grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(EncoderBlock(D, cfg.encoder_heads, cfg.mlp_ratio)
                                    for _ in range(cfg.encoder_depth))
        self.neck = nn.Sequential(
            nn.Conv2d(D, C, 1, bias=False), LayerNorm2d(C),
            nn.Conv2d(C, C, 3, padding=1, bias=False), LayerNorm2d(C),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, D, g, g)
        pos = self.pos_embed
        if pos.shape[-2:] != x.shape[-2:]:  # another input size than the config's
            pos = F.interpolate(pos, size=x.shape[-2:], mode="bicubic", align_corners=False)
        x = x + pos
        B, D, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, D)
        for block in self.blocks:
            x = block(x)
        x = x.transpose(1, 2).reshape(B, D, gh, gw)
        return self.neck(x)  # (B, C, g, g)


class FourierPositions(nn.Module):
    """Random Fourier features of 2-D positions (Tancik et al. 2020), as SAM's prompt PE.

    A position (x, y) in [0, 1]^2 maps to [sin(2 pi u), cos(2 pi u)] with
    u = (2 (x, y) - 1) @ G and G ~ N(0, scale^2) of shape (2, C/2), fixed at init (a buffer).
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.register_buffer("gaussian", scale * torch.randn(2, channels // 2))

    def encode(self, xy: torch.Tensor) -> torch.Tensor:
        u = (2.0 * xy.float() - 1.0) @ self.gaussian * (2.0 * math.pi)  # (..., C/2)
        return torch.cat([u.sin(), u.cos()], dim=-1)  # (..., C)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """The PE of every cell centre of an h x w grid: (1, C, h, w)."""
        device = self.gaussian.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2)
        return self.encode(xy).permute(2, 0, 1).unsqueeze(0)

    def points(self, xy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The PE of pixel coordinates ``xy`` (..., 2) in an image of ``size`` (H, W)."""
        H, W = size
        return self.encode(xy / xy.new_tensor([W, H]))


class PromptEncoder(nn.Module):
    """Points and boxes -> sparse prompt tokens (B, T, C); plus the dense "no mask" embedding.

    Point labels: 1 positive, 0 negative, -1 padding (no point). A prompt without a box
    gets one padding point, as SAM's (the decoder then always sees a non-box token).
    """

    def __init__(self, cfg: SAMConfig) -> None:
        super().__init__()
        C = cfg.prompt_dim
        self.positions = FourierPositions(C, cfg.pe_scale)
        # negative point, positive point, box top-left corner, box bottom-right corner
        self.kind_embed = nn.Embedding(4, C)
        self.not_a_point = nn.Embedding(1, C)
        self.no_mask = nn.Embedding(1, C)

    def forward(self, points: torch.Tensor | None, labels: torch.Tensor | None,
                boxes: torch.Tensor | None, size: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeds the prompts of ``B`` objects in images of ``size`` (H, W) pixels.

        Args:
            points: float (B, N, 2) pixel coordinates x, y (of the pixel's top-left
                corner: pixel (i, j) is the point (j, i)), or None.
            labels: int64 (B, N): 1 positive, 0 negative, -1 padding; with ``points``.
            boxes: float (B, 4) ``x0, y0, x1, y1`` in pixels, or None.

        Returns:
            ``(sparse (B, T, C), dense (B, C, 1, 1))``; T = N (+1 padding point without a
            box) (+2 box corners).

        Raises:
            ValueError: neither points nor boxes, or points without labels.
        """
        if points is None and boxes is None:
            raise ValueError("a prompt needs points, a box or both")
        tokens = []
        if points is not None:
            if labels is None or labels.shape != points.shape[:2]:
                raise ValueError(f"labels must be (B, N) for points {tuple(points.shape)}, got "
                                 f"{None if labels is None else tuple(labels.shape)}")
            xy = points.float() + 0.5  # pixel centres
            if boxes is None:
                xy = torch.cat([xy, xy.new_zeros(xy.shape[0], 1, 2)], dim=1)
                labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
            emb = self.positions.points(xy, size) + self.kind_embed(labels.clamp(0, 1))
            pad = (labels == -1).unsqueeze(-1)  # (B, N, 1)
            tokens.append(torch.where(pad, self.not_a_point.weight.to(emb.dtype), emb))
        if boxes is not None:
            corners = (boxes.float() + 0.5).view(-1, 2, 2)  # (B, 2, 2): top-left, bottom-right
            emb = self.positions.points(corners, size) + self.kind_embed.weight[2:4]
            tokens.append(emb)
        sparse = torch.cat(tokens, dim=1)  # (B, T, C)
        dense = self.no_mask.weight.view(1, -1, 1, 1).expand(sparse.shape[0], -1, 1, 1)
        return sparse, dense


class TwoWayBlock(nn.Module):
    """Tokens: self-attention, cross-attention to the image, MLP; the image: cross-attention
    to the tokens. Positional encodings are added to queries and keys, never to values."""

    def __init__(self, cfg: SAMConfig, *, skip_first_pe: bool) -> None:
        super().__init__()
        C, h, ds = cfg.prompt_dim, cfg.decoder_heads, cfg.attention_downsample
        self.skip_first_pe = skip_first_pe
        self.self_attn, self.norm1 = Attention(C, h), nn.LayerNorm(C)
        self.token_to_image, self.norm2 = Attention(C, h, ds), nn.LayerNorm(C)
        self.mlp = nn.Sequential(nn.Linear(C, cfg.decoder_mlp_dim), nn.ReLU(),
                                 nn.Linear(cfg.decoder_mlp_dim, C))
        self.norm3 = nn.LayerNorm(C)
        self.image_to_token, self.norm4 = Attention(C, h, ds), nn.LayerNorm(C)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # queries (B, T, C) prompt tokens, keys (B, g*g, C) image tokens
        if self.skip_first_pe:  # the first block's queries are the PE-carrying tokens themselves
            queries = self.norm1(self.self_attn(queries, queries, queries))
        else:
            q = queries + query_pe
            queries = self.norm1(queries + self.self_attn(q, q, queries))
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.image_to_token(k, q, queries))
        return queries, keys


class MaskDecoder(nn.Module):
    """Two-way transformer + upscaler + hypernetwork heads + IoU head."""

    def __init__(self, cfg: SAMConfig) -> None:
        super().__init__()
        C, M = cfg.prompt_dim, cfg.multimask + 1
        self.num_masks = M
        self.iou_token = nn.Embedding(1, C)
        self.mask_tokens = nn.Embedding(M, C)
        self.blocks = nn.ModuleList(TwoWayBlock(cfg, skip_first_pe=i == 0)
                                    for i in range(cfg.decoder_depth))
        self.final_attn = Attention(C, cfg.decoder_heads, cfg.attention_downsample)
        self.final_norm = nn.LayerNorm(C)
        self.upscale = nn.Sequential(
            nn.ConvTranspose2d(C, C // 4, 2, stride=2), LayerNorm2d(C // 4), nn.GELU(),
            nn.ConvTranspose2d(C // 4, C // 8, 2, stride=2), nn.GELU(),
        )
        self.hypernets = nn.ModuleList(MLP(C, C, C // 8, 3) for _ in range(M))
        self.iou_head = MLP(C, cfg.iou_head_hidden, M, cfg.iou_head_depth)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` (B, C, g, g) per prompt, ``image_pe`` (1, C, g, g), ``sparse`` (B, T, C),
        ``dense`` (B, C, 1 or g, 1 or g) -> mask logits (B, M, 4g, 4g), IoU (B, M)."""
        B, C, gh, gw = image.shape
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])  # (1+M, C)
        tokens = torch.cat([out_tokens.to(sparse.dtype).expand(B, -1, -1), sparse], 1)
        keys = (image + dense).flatten(2).transpose(1, 2)  # (B, g*g, C)
        key_pe = image_pe.flatten(2).transpose(1, 2).to(keys.dtype)  # (1, g*g, C)
        queries = tokens  # (B, 1+M+T, C)
        for block in self.blocks:
            queries, keys = block(queries, keys, tokens, key_pe)
        q, k = queries + tokens, keys + key_pe
        queries = self.final_norm(queries + self.final_attn(q, k, keys))
        iou_out, mask_out = queries[:, 0], queries[:, 1:1 + self.num_masks]  # (B, C), (B, M, C)
        up = self.upscale(keys.transpose(1, 2).reshape(B, C, gh, gw))  # (B, C/8, 4g, 4g)
        hyper = torch.stack([net(mask_out[:, i]) for i, net in enumerate(self.hypernets)],
                            dim=1)  # (B, M, C/8)
        masks = (hyper @ up.flatten(2)).view(B, self.num_masks, *up.shape[-2:])
        return masks, self.iou_head(iou_out)  # (B, M, 4g, 4g), (B, M)


class SAM(nn.Module):
    """A promptable segmenter built from a :class:`SAMConfig`."""

    def __init__(self, config: SAMConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config)
        self.prompt_encoder = PromptEncoder(config)
        self.mask_decoder = MaskDecoder(config)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images (B, C_in, H, W) -> image embeddings (B, C, H/p, W/p).

        Raises:
            ValueError: wrong channels, or a side not divisible by the patch size.
        """
        p, c = self.config.patch_size, self.config.in_channels
        if images.dim() != 4 or images.shape[1] != c or images.shape[2] % p or images.shape[3] % p:
            raise ValueError(f"expected images (B, {c}, H, W) with H, W multiples of {p}, got "
                             f"{tuple(images.shape)}")
        return self.image_encoder(images)

    def decode(self, embedding: torch.Tensor, *, size: tuple[int, int],
               points: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               boxes: torch.Tensor | None = None, multimask: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks of one prompt per row of ``embedding`` (B, C, g, g) in ``size`` (H, W) images.

        Prompts as :meth:`PromptEncoder.forward`. Returns mask logits (B, m, 4g, 4g) and
        predicted IoUs (B, m): m = ``multimask`` outputs when asked, else 1 (the single mask).
        """
        sparse, dense = self.prompt_encoder(points, labels, boxes, size)
        pe = self.prompt_encoder.positions.grid(*embedding.shape[-2:])
        masks, iou = self.mask_decoder(embedding, pe, sparse.to(embedding.dtype),
                                       dense.to(embedding.dtype))
        keep = slice(1, None) if multimask else slice(0, 1)
        return masks[:, keep], iou[:, keep]

    def forward(self, images: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
                boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The training forward: one point prompt and one box prompt per image.

        Args:
            images: (B, C_in, H, W), normalized.
            points, labels: (B, N, 2) and (B, N), as :meth:`PromptEncoder.forward`.
            boxes: (B, 4).

        Returns:
            ``(point_masks (B, K, 4g, 4g), point_iou (B, K), box_masks (B, 1, 4g, 4g),
            box_iou (B, 1))``: the point prompt's K multimask outputs, the box's single mask.
        """
        embedding = self.embed(images)  # (B, C, g, g)
        size = (images.shape[2], images.shape[3])
        point_masks, point_iou = self.decode(embedding, size=size, points=points, labels=labels,
                                             multimask=True)
        box_masks, box_iou = self.decode(embedding, size=size, boxes=boxes, multimask=False)
        return point_masks, point_iou, box_masks, box_iou
