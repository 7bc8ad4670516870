"""Prompts drawn from ground-truth masks for the SAM-style segmenter, on the device.

An *object* is one box of :class:`~models.vision_model.DenseTargets` (a connected
component of one class): its mask is the pixels of its class inside its box, exact
unless two components of one class have overlapping boxes. From an object:

    training   one object per image, a uniformly random pixel of it (positive point) and
               0..n random background pixels (negative points); its box jittered by
               Gaussian noise of 10% of the side, at most 20 px (SAM, appendix A)
    evaluation every object, the pixel deepest inside it (largest chessboard distance to
               the background: SAM's "centre of the object" point) and its exact box

Nothing here syncs the host with the device except :func:`all_objects` (it drops empty
objects), which only evaluation calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.vision_model import DenseTargets

__all__ = ["Objects", "all_objects", "center_points", "jitter_boxes", "one_object_per_image",
           "random_points"]


@dataclass
class Objects:
    """Objects of a batch: ``image`` int64 (N,) the image each is in, ``masks`` bool
    (N, H, W), ``boxes`` float (N, 4) ``x0, y0, x1, y1`` (x1, y1 exclusive), ``valid``
    bool (N,) (False: a stand-in for an image without objects)."""

    image: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor


def _object_masks(targets: DenseTargets, image: torch.Tensor, boxes: torch.Tensor,
                  classes: torch.Tensor) -> torch.Tensor:
    """The pixels of class ``classes`` (N,) inside ``boxes`` (N, 4) of images ``image`` (N,)."""
    H, W = targets.masks.shape[1:]
    ys = torch.arange(H, device=boxes.device, dtype=boxes.dtype).view(1, H, 1)
    xs = torch.arange(W, device=boxes.device, dtype=boxes.dtype).view(1, 1, W)
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)  # (N, H, W)
    return (targets.masks[image] == classes.view(-1, 1, 1)) & inside


def _flat(targets: DenseTargets) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    device = targets.masks.device
    counts = [int(b.shape[0]) for b in targets.boxes]
    boxes = (torch.cat(targets.boxes).float() if sum(counts)
             else torch.zeros(0, 4, device=device))
    classes = (torch.cat(targets.box_labels).long() if sum(counts)
               else torch.zeros(0, dtype=torch.long, device=device))
    return boxes, classes, counts


def one_object_per_image(targets: DenseTargets) -> Objects:
    """A random object of every image (training); row i is image i.

    An image without objects gets a stand-in (an empty mask, the whole image as box) with
    ``valid`` False: the batch keeps its shape B, and the loss weighs the row 0.
    """
    boxes, classes, counts = _flat(targets)
    B, H, W = targets.masks.shape
    device = targets.masks.device
    n = torch.tensor(counts, dtype=torch.float64)
    pick = (torch.rand(B, dtype=torch.float64) * n).long().clamp_max((n - 1).clamp_min(0).long())
    offsets = torch.tensor([0] + counts[:-1], dtype=torch.long).cumsum(0)
    index = (offsets + pick).clamp_max(max(0, len(boxes) - 1)).to(device)  # (B,)
    valid = (n > 0).to(device)
    whole = torch.tensor([0.0, 0.0, W, H], device=device)
    if len(boxes):
        box = torch.where(valid[:, None], boxes[index], whole)
        cls = torch.where(valid, classes[index], 0)
    else:
        box, cls = whole.expand(B, 4).clone(), torch.zeros(B, dtype=torch.long, device=device)
    image = torch.arange(B, device=device)
    masks = _object_masks(targets, image, box, cls) & valid.view(B, 1, 1)
    return Objects(image, masks, box, valid & masks.flatten(1).any(1))


def all_objects(targets: DenseTargets) -> Objects:
    """Every non-empty object of the batch (evaluation); syncs to drop empty ones."""
    boxes, classes, counts = _flat(targets)
    device = targets.masks.device
    image = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)).to(device)
    masks = _object_masks(targets, image, boxes, classes)  # (N, H, W)
    keep = masks.flatten(1).any(1)
    if not bool(keep.all()):
        image, masks, boxes = image[keep], masks[keep], boxes[keep]
    return Objects(image, masks, boxes, torch.ones_like(image, dtype=torch.bool))


def _xy(index: torch.Tensor, width: int) -> torch.Tensor:
    """Flat pixel indices (...) -> float (..., 2) coordinates x, y."""
    return torch.stack([index % width, index // width], dim=-1).float()


def random_points(masks: torch.Tensor, negatives: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly random pixel of each mask and 0..``negatives`` random pixels outside it.

    Args:
        masks: bool (N, H, W).
        negatives: the most negative points a prompt gets (drawn uniformly in 0..negatives).

    Returns:
        ``points`` float (N, 1 + negatives, 2) and ``labels`` int64 (N, 1 + negatives):
        1 for the positive point, 0 for a negative, -1 for an unused slot (padding).
    """
    N, H, W = masks.shape
    flat = masks.flatten(1)  # (N, H*W)
    noise = torch.rand(flat.shape, device=masks.device)
    positive = torch.where(flat, noise, -1.0).argmax(1, keepdim=True)  # (N, 1)
    points, labels = _xy(positive, W), torch.ones(N, 1, dtype=torch.long, device=masks.device)
    if negatives:
        k = min(negatives, H * W)
        scores, negative = torch.where(flat, -1.0, noise).topk(k, dim=1)  # distinct pixels
        used = torch.randint(0, k + 1, (N, 1), device=masks.device)
        slot = torch.arange(k, device=masks.device).view(1, k)
        neg_labels = torch.where((slot < used) & (scores >= 0), 0, -1)  # none outside a full mask
        points = torch.cat([points, _xy(negative, W)], dim=1)
        labels = torch.cat([labels, neg_labels], dim=1)
    return points, labels


def jitter_boxes(boxes: torch.Tensor, size: tuple[int, int], *, noise: float,
                 max_noise: float) -> torch.Tensor:
    """``boxes`` (N, 4) with each coordinate moved by N(0, (noise x side)^2), clamped to
    +-``max_noise`` pixels, kept inside the ``size`` (H, W) image and at least 1 px wide."""
    H, W = size
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, dim=1)
    delta = (torch.randn_like(boxes) * noise * side).clamp(-max_noise, max_noise)
    out = boxes + delta
    limit = boxes.new_tensor([W, H, W, H])
    out = torch.minimum(out.clamp_min(0), limit)
    x0, y0 = torch.minimum(out[:, 0], limit[0] - 1), torch.minimum(out[:, 1], limit[1] - 1)
    x1, y1 = torch.maximum(out[:, 2], x0 + 1), torch.maximum(out[:, 3], y0 + 1)
    return torch.stack([x0, y0, x1, y1], dim=1)


def center_points(masks: torch.Tensor) -> torch.Tensor:
    """The pixel of each mask deepest inside it: float (N, 1, 2) x, y.

    Depth is the chessboard distance to the nearest pixel outside the mask (outside the
    image counts as outside), computed by repeated 3x3 erosion; ties go to the first pixel
    in row-major order, so the point is deterministic.
    """
    N, H, W = masks.shape
    m = masks.float().unsqueeze(1)  # (N, 1, H, W)
    depth = torch.zeros_like(m)
    for _ in range((min(H, W) + 1) // 2):  # no mask survives more erosions than this
        depth += m
        m = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1)), 3, stride=1)  # erosion, background border
    return _xy(depth.flatten(1).argmax(1, keepdim=True), W)
