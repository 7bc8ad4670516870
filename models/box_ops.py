"""Box arithmetic for the detector: IoU, the Faster R-CNN box coding, anchors, sampling.

Boxes are float ``x0, y0, x1, y1`` in pixels (x1, y1 exclusive: width = x1 - x0), the
convention of torchvision and of :class:`~models.vision_model.DenseTargets`. Everything
works on batched, padded tensors with fixed shapes (no data-dependent sizes), so the
detector's training step stays one static graph apart from NMS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["BBOX_CLIP", "balanced_sample", "box_area", "box_iou", "clip_boxes", "decode_boxes",
           "encode_boxes", "grid_anchors"]

BBOX_CLIP = math.log(1000.0 / 16)  # largest log-scale a delta may apply (torchvision's)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> (...) areas."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of ``a`` (..., N, 4) and ``b`` (..., M, 4): (..., N, M).

    Leading dimensions broadcast. Two boxes whose union is empty have IoU NaN (0 / 0),
    as torchvision's.
    """
    area_a, area_b = box_area(a), box_area(b)  # (..., N), (..., M)
    top_left = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])  # (..., N, M, 2)
    bottom_right = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]  # (..., N, M)
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter)


def encode_boxes(targets: torch.Tensor, refs: torch.Tensor,
                 weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """The deltas (dx, dy, dw, dh) that move ``refs`` (..., 4) onto ``targets`` (..., 4)."""
    wx, wy, ww, wh = weights
    rw, rh = refs[..., 2] - refs[..., 0], refs[..., 3] - refs[..., 1]
    rx, ry = refs[..., 0] + 0.5 * rw, refs[..., 1] + 0.5 * rh
    tw, th = targets[..., 2] - targets[..., 0], targets[..., 3] - targets[..., 1]
    tx, ty = targets[..., 0] + 0.5 * tw, targets[..., 1] + 0.5 * th
    return torch.stack([wx * (tx - rx) / rw, wy * (ty - ry) / rh,
                        ww * torch.log(tw / rw), wh * torch.log(th / rh)], dim=-1)


def decode_boxes(deltas: torch.Tensor, refs: torch.Tensor,
                 weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: ``refs`` (..., 4) moved by ``deltas`` (..., 4)."""
    wx, wy, ww, wh = weights
    deltas = deltas.float()
    rw, rh = refs[..., 2] - refs[..., 0], refs[..., 3] - refs[..., 1]
    rx, ry = refs[..., 0] + 0.5 * rw, refs[..., 1] + 0.5 * rh
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = (deltas[..., 2] / ww).clamp_max(BBOX_CLIP)
    dh = (deltas[..., 3] / wh).clamp_max(BBOX_CLIP)
    x, y = rx + dx * rw, ry + dy * rh
    w, h = rw * torch.exp(dw), rh * torch.exp(dh)
    return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=-1)


def clip_boxes(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``boxes`` (..., 4) clipped to an image of ``size`` (H, W)."""
    H, W = size
    x = boxes[..., 0::2].clamp(0, W)
    y = boxes[..., 1::2].clamp(0, H)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def grid_anchors(feature_size: tuple[int, int], stride: int, sizes: Sequence[float],
                 ratios: Sequence[float], device: torch.device | None = None) -> torch.Tensor:
    """Anchors of every cell of an (h, w) feature map: (h * w * A, 4), A = sizes x ratios.

    Cell (i, j) is centred on pixel ((j + 0.5) * stride, (i + 0.5) * stride); an anchor of
    size s and ratio r (height / width) is s / sqrt(r) wide and s * sqrt(r) high. The
    order is row-major over cells, then ``sizes`` x ``ratios`` (the RPN head's channel order).
    """
    h, w = feature_size
    s = torch.tensor(sizes, dtype=torch.float32, device=device).view(-1, 1)
    r = torch.tensor(ratios, dtype=torch.float32, device=device).view(1, -1)
    half_w, half_h = (s / r.sqrt() / 2).flatten(), (s * r.sqrt() / 2).flatten()  # (A,)
    base = torch.stack([-half_w, -half_h, half_w, half_h], dim=1)  # (A, 4)
    ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * stride
    xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx, cy, cx, cy], dim=-1).view(-1, 1, 4)  # (h*w, 1, 4)
    return (centres + base).view(-1, 4)


def balanced_sample(labels: torch.Tensor, total: int, positive_fraction: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random positives and negatives per row, as Faster R-CNN samples anchors and RoIs.

    Args:
        labels: (B, N): 1 positive, 0 negative, -1 ignored.
        total: examples per row.
        positive_fraction: at most this share of ``total`` are positives; negatives fill
            the rest (fewer when a row has not enough).

    Returns:
        ``(positive, negative)`` bool (B, N) masks of the chosen ones.
    """
    def ranks(candidates: torch.Tensor) -> torch.Tensor:
        # a random order of the candidates first, the others after: rank of each element
        key = torch.where(candidates, torch.rand(candidates.shape, device=labels.device), 2.0)
        order = key.argsort(dim=1)
        arange = torch.arange(labels.shape[1], device=labels.device).expand_as(order)
        return torch.empty_like(order).scatter_(1, order, arange)

    pos, neg = labels == 1, labels == 0
    positive = pos & (ranks(pos) < int(total * positive_fraction))
    quota = total - positive.sum(1, keepdim=True)  # (B, 1)
    negative = neg & (ranks(neg) < quota)
    return positive, negative
