"""PS-RoIAlign and NMS: torchvision's kernels where torchvision works, pure torch elsewhere.

The detector needs two ``torchvision.ops``: position-sensitive RoIAlign (R-FCN's pooling
with RoIAlign's bilinear sampling; ThunderNet's "PSRoI align") and (batched) NMS. A GPU
host has torchvision; a CPU-only CI machine may not, or may have one built against
another torch that imports but cannot run. :func:`torchvision_ops` probes once; every op
here takes ``impl="auto"`` (torchvision when it works, else ours), ``"torchvision"`` or
``"torch"``. Ours compute the same thing as torchvision's kernels (equal up to float
rounding; ``tests/models/test_ps_roi_align.py`` checks both on the GPU host):

    ps_roi_align(input (N, Co*ph*pw, H, W), rois (K, 5) = [image, x0, y0, x1, y1])
      -> (K, Co, ph, pw). Output (k, c, i, j) averages bilinear samples of input channel
      (c*ph + i)*pw + j over bin (i, j) of roi k; the roi is scaled by ``spatial_scale``
      and shifted by -0.5 px (pixel centres, no minimum size), each bin sampled on a
      ``sampling_ratio`` x ``sampling_ratio`` grid (<= 0: ceil(bin side) per roi).
      A sample outside [-1, H] x [-1, W] is 0; one within a pixel of the edge is clamped.
    nms(boxes (N, 4), scores (N,), thr) -> indices kept, by decreasing score; a box is
      dropped when its IoU with a kept higher-scoring box is > thr.
    batched_nms(boxes, scores, idxs, thr): NMS within each idxs value, by decreasing score.
    nms_keep_mask: batched_nms over padded (..., N) tensors, as a bool mask of the same shape.
"""

from __future__ import annotations

from typing import Any

import torch

from models.box_ops import box_iou

__all__ = ["batched_nms", "nms", "nms_keep_mask", "ps_roi_align", "ps_roi_align_torch",
           "torchvision_ops"]

IMPLS = ("auto", "torchvision", "torch")
_probe: dict[str, Any] = {}


def torchvision_ops() -> Any | None:
    """``torchvision.ops`` when torchvision imports and its C++ ops run, else None (cached)."""
    if "ops" not in _probe:
        try:
            import torchvision.ops as ops

            ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)  # the compiled kernels load
            _probe["ops"] = ops
        except Exception:  # absent, or built for another torch (imports, cannot run)
            _probe["ops"] = None
    return _probe["ops"]


def _use_torchvision(impl: str) -> Any | None:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    ops = torchvision_ops() if impl != "torch" else None
    if impl == "torchvision" and ops is None:
        raise RuntimeError("impl='torchvision' but torchvision.ops cannot run here")
    return ops


def _axis(coord: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Bilinear taps along one axis, as torchvision's kernel: low, high, their weights, valid."""
    valid = (coord >= -1.0) & (coord <= size)
    c = coord.clamp_min(0)
    low = c.floor().long()
    at_end = low >= size - 1
    low = low.clamp_max(size - 1)
    high = torch.where(at_end, low, low + 1)
    c = torch.where(at_end, low.to(c.dtype), c)
    frac = c - low.to(c.dtype)
    return low, high, 1.0 - frac, frac, valid


def ps_roi_align_torch(input: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int],
                       spatial_scale: float = 1.0, sampling_ratio: int = -1) -> torch.Tensor:
    """Position-sensitive RoIAlign in plain torch (differentiable); see the module docstring.

    Raises:
        ValueError: bad shapes, or channels not a multiple of ph * pw.
    """
    ph, pw = output_size
    N, C, H, W = input.shape
    if C % (ph * pw) or rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"need input channels divisible by {ph}x{pw} and rois (K, 5), got "
                         f"{tuple(input.shape)} and {tuple(rois.shape)}")
    Co, K = C // (ph * pw), rois.shape[0]
    if K == 0:
        return input.new_zeros(0, Co, ph, pw)
    r = rois.float()
    batch = r[:, 0].long()
    x0, y0 = r[:, 1] * spatial_scale - 0.5, r[:, 2] * spatial_scale - 0.5
    bin_w = (r[:, 3] * spatial_scale - 0.5 - x0) / pw  # (K,)
    bin_h = (r[:, 4] * spatial_scale - 0.5 - y0) / ph
    if sampling_ratio > 0:
        gh = gw = torch.full((K,), sampling_ratio, device=r.device)
        Gh = Gw = sampling_ratio
    else:  # per roi ceil(roi side / bins), masked to the largest grid (one host sync)
        gh, gw = torch.ceil(bin_h).long(), torch.ceil(bin_w).long()
        Gh, Gw = max(1, int(gh.max())), max(1, int(gw.max()))

    def samples(start, bin_size, bins, grid, G):  # -> (K, bins, G) coordinates, (K, 1, G) used
        i = torch.arange(bins, device=r.device, dtype=r.dtype).view(1, bins, 1)
        a = torch.arange(G, device=r.device).view(1, 1, G)
        step = (bin_size / grid.to(r.dtype)).view(K, 1, 1)
        coord = start.view(K, 1, 1) + i * bin_size.view(K, 1, 1) + (a + 0.5) * step
        return coord, a < grid.view(K, 1, 1)

    y, y_used = samples(y0, bin_h, ph, gh, Gh)  # (K, ph, Gh)
    x, x_used = samples(x0, bin_w, pw, gw, Gw)  # (K, pw, Gw)
    y_lo, y_hi, wy_lo, wy_hi, y_ok = _axis(y, H)
    x_lo, x_hi, wx_lo, wx_hi, x_ok = _axis(x, W)

    # flat index of input[batch, (c*ph + i)*pw + j, :, :] -> (K, Co, ph, pw, 1, 1)
    channel = torch.arange(C, device=r.device).view(1, Co, ph, pw, 1, 1)
    plane = (batch.view(K, 1, 1, 1, 1, 1) * C + channel) * (H * W)
    flat = input.reshape(-1)

    def rows(v):  # (K, ph, Gh) -> (K, 1, ph, 1, Gh, 1)
        return v.view(K, 1, ph, 1, Gh, 1)

    def cols(v):  # (K, pw, Gw) -> (K, 1, 1, pw, 1, Gw)
        return v.view(K, 1, 1, pw, 1, Gw)

    out = 0
    for yy, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for xx, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
            value = flat[plane + rows(yy) * W + cols(xx)]  # (K, Co, ph, pw, Gh, Gw)
            out = out + value * (rows(wy) * cols(wx)).to(value.dtype)
    keep = rows(y_ok & y_used) & cols(x_ok & x_used)  # (K, 1, ph, pw, Gh, Gw)
    count = (gh * gw).to(out.dtype).view(K, 1, 1, 1)
    return torch.where(keep, out, 0).sum((-2, -1)) / count  # (K, Co, ph, pw)


def ps_roi_align(input: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int],
                 spatial_scale: float = 1.0, sampling_ratio: int = -1, *,
                 impl: str = "auto") -> torch.Tensor:
    """PS-RoIAlign: ``torchvision.ops.ps_roi_align`` or :func:`ps_roi_align_torch`."""
    ops = _use_torchvision(impl)
    if ops is None:
        return ps_roi_align_torch(input, rois, output_size, spatial_scale, sampling_ratio)
    # fp32 in (torchvision's kernel needs one dtype; box coordinates need fp32) and out
    return ops.ps_roi_align(input.float(), rois.float(), output_size, spatial_scale,
                            sampling_ratio)


def _nms_torch(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order = scores.argsort(descending=True, stable=True)
    iou = box_iou(boxes[order].float(), boxes[order].float()).cpu()  # (N, N)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):  # greedy, in score order; a host loop (CPU fallback only)
        if not suppressed[i]:
            suppressed[i + 1:] |= iou[i, i + 1:] > iou_threshold  # NaN IoU suppresses nothing
    return order[~suppressed.to(order.device)]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, *,
        impl: str = "auto") -> torch.Tensor:
    """Indices (int64) of the boxes NMS keeps, by decreasing score; see the module docstring."""
    ops = _use_torchvision(impl)
    if ops is not None:
        return ops.nms(boxes, scores, iou_threshold)
    return _nms_torch(boxes, scores, iou_threshold)


@torch.compiler.disable  # a data-dependent output size: always eager, outside compiled graphs
def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float, *, impl: str = "auto") -> torch.Tensor:
    """NMS within each group ``idxs`` (N,): indices kept, by decreasing score.

    Groups never suppress each other: each is shifted by its index x (the largest
    coordinate + 1), so that boxes of two groups never overlap (torchvision's trick).
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    ops = _use_torchvision(impl)
    if ops is not None:
        return ops.batched_nms(boxes, scores, idxs, iou_threshold)
    shift = idxs.to(boxes.dtype) * (boxes.max() + 1)
    return _nms_torch(boxes + shift[:, None], scores, iou_threshold)


@torch.compiler.disable
def nms_keep_mask(boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor,
                  groups: torch.Tensor, iou_threshold: float, *, impl: str = "auto"
                  ) -> torch.Tensor:
    """:func:`batched_nms` of padded candidates as a mask: which of them survive.

    Args:
        boxes: (..., N, 4); scores, valid (bool), groups (int64): (..., N). Only valid
            candidates take part; a candidate suppresses only those of its own group (give
            each image, or each image and class, its own group).

    Returns:
        bool (..., N): True for the kept candidates.
    """
    flat_valid = valid.reshape(-1)
    index = flat_valid.nonzero().squeeze(1)
    kept = batched_nms(boxes.reshape(-1, 4)[index].float(), scores.reshape(-1)[index].float(),
                       groups.reshape(-1)[index], iou_threshold, impl=impl)
    keep = torch.zeros_like(flat_valid)
    keep[index[kept]] = True
    return keep.view_as(valid)
