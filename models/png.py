"""Image grids as PNG bytes, with numpy and zlib only (no imaging library on GPU hosts)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import torch

__all__ = ["encode_png", "image_grid"]


def image_grid(images: torch.Tensor, *, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """Images (N, C, H, W) in [-1, 1] -> one uint8 (rows*(H+pad)+pad, ..., 3) grid, white gaps.

    One channel is shown as grey; more than three keep the first three.
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"expected images (N, C, H, W), got {tuple(images.shape)}")
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x[:, :3]
    N, _, H, W = x.shape
    cols = min(nrow, N)
    rows = -(-N // cols)
    grid = np.full((rows * (H + pad) + pad, cols * (W + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(N):
        r, c = divmod(i, cols)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        grid[top:top + H, left:left + W] = x[i].permute(1, 2, 0).numpy()
    return grid


def encode_png(image: np.ndarray) -> bytes:
    """A uint8 (H, W, 3) RGB array as PNG file bytes (8-bit, no filter, zlib level 9)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
    H, W, _ = image.shape
    raw = b"".join(b"\x00" + image[r].tobytes() for r in range(H))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))
