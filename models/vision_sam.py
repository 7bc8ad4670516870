"""The SAM-style segmenter as a vision kind: its training recipe and mIoU evaluation.

Registered in :data:`models.task_vision.VISION_MODELS` as ``sam``, with dense targets
(:class:`~models.vision_model.DenseTargets`). One training step (SAM, section 3 and
appendix A, without the iterative re-prompting rounds):

    one random object per image (models.sam_prompts)
      -> point prompt: a random pixel of it + 0..n negatives outside; -> K masks
      -> box prompt: its box, jittered;                                  -> 1 mask
    masks upsampled to the input size; per mask: 20 x focal + 1 x dice against the object;
    the point prompt backpropagates only its best (lowest-loss) mask; the IoU head learns
    every mask's true IoU by MSE. loss = mean of the two prompts' losses.

Evaluation, over every object of the eval split: mIoU from one point (the pixel deepest
inside the object; the mask with the highest predicted IoU, as SAM picks it), from the
same point with the best of the K masks ("oracle", as the paper also reports), and from
the exact box.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.sam import SAM, SAMConfig
from models.sam_prompts import (
    all_objects,
    center_points,
    jitter_boxes,
    one_object_per_image,
    random_points,
)
from models.vision_model import DenseTargets, Metrics, VisionModel

__all__ = ["SAM_MODEL", "dice_loss", "imagenet_normalization", "mask_iou", "mask_losses",
           "raw_model", "sigmoid_focal_loss"]


def imagenet_normalization(in_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)``: ImageNet's for RGB, else 0.5 (to [-1, 1])."""
    if in_channels == 3:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return (0.5,) * in_channels, (0.5,) * in_channels


def raw_model(model: nn.Module) -> nn.Module:
    """The module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float,
                       gamma: float) -> torch.Tensor:
    """Per-pixel focal loss (Lin et al. 2017) of ``logits`` against 0/1 ``targets``."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t).pow(gamma)
    return loss * (alpha * targets + (1 - alpha) * (1 - targets)) if alpha >= 0 else loss


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of sigmoid(``logits``) (..., H, W) against ``targets``: shape (...)."""
    p = torch.sigmoid(logits).flatten(-2)
    t = targets.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of bool masks ``pred`` (..., H, W) and ``target`` (broadcastable): shape (...).
    Two empty masks have IoU 1."""
    inter = (pred & target).flatten(-2).sum(-1).float()
    union = (pred | target).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), 1.0)


def mask_losses(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor, cfg: SAMConfig) -> tuple[torch.Tensor, Metrics]:
    """SAM's loss of one prompt per row: focal + dice on the best of the masks + IoU MSE.

    Args:
        logits: (N, M, h, w) mask logits; upsampled (bilinear) to the target's size.
        iou_pred: (N, M) predicted IoUs.
        target: bool (N, H, W).
        weight: float (N,): 1 for real objects, 0 for stand-ins.

    Returns:
        ``(loss, metrics)``: the weighted mean loss (0-d, fp32); metrics ``focal``,
        ``dice``, ``iou_mse`` (of the chosen masks) and ``miou`` (IoU of the chosen mask,
        detached).
    """
    logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear",
                           align_corners=False)  # (N, M, H, W)
    t = target.unsqueeze(1).float().expand_as(logits)
    focal = sigmoid_focal_loss(logits, t, alpha=cfg.focal_alpha,
                               gamma=cfg.focal_gamma).flatten(2).mean(2)  # (N, M)
    dice = dice_loss(logits, t)  # (N, M)
    combined = cfg.focal_weight * focal + cfg.dice_weight * dice  # (N, M)
    best = combined.detach().argmin(1, keepdim=True)  # (N, 1)
    with torch.no_grad():
        true_iou = mask_iou(logits > 0, target.unsqueeze(1))  # (N, M)
    iou_mse = (iou_pred.float() - true_iou).pow(2).mean(1)  # (N,)
    per_object = combined.gather(1, best).squeeze(1) + cfg.iou_weight * iou_mse
    n = weight.sum().clamp_min(1)
    loss = (per_object * weight).sum() / n

    def mean(v: torch.Tensor) -> torch.Tensor:
        return ((v.detach() * weight).sum() / n).float()

    return loss, {"focal": mean(focal.gather(1, best).squeeze(1)),
                  "dice": mean(dice.gather(1, best).squeeze(1)), "iou_mse": mean(iou_mse),
                  "miou": mean(true_iou.gather(1, best).squeeze(1))}


def _sam_train_step(model: nn.Module, x: torch.Tensor, y: DenseTargets
                    ) -> tuple[torch.Tensor, Metrics]:
    cfg: SAMConfig = raw_model(model).config
    size = (x.shape[2], x.shape[3])
    obj = one_object_per_image(y)  # row i: an object of image i
    points, labels = random_points(obj.masks, cfg.negative_points)
    boxes = jitter_boxes(obj.boxes, size, noise=cfg.box_noise, max_noise=cfg.box_noise_max)
    point_masks, point_iou, box_masks, box_iou = model(x, points, labels, boxes)
    weight = obj.valid.float()
    point_loss, point_stats = mask_losses(point_masks, point_iou, obj.masks, weight, cfg)
    box_loss, box_stats = mask_losses(box_masks, box_iou, obj.masks, weight, cfg)
    metrics = {f"point_{k}": v for k, v in point_stats.items()}
    metrics.update({f"box_{k}": v for k, v in box_stats.items()})
    return (point_loss + box_loss) / 2, metrics


def _upsampled(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False) > 0


def _sam_eval_sums(model: nn.Module, x: torch.Tensor, y: DenseTargets) -> Metrics:
    sam = raw_model(model)
    size = (x.shape[2], x.shape[3])
    obj = all_objects(y)
    zero = torch.zeros((), device=x.device)
    if not len(obj.image):
        return {"objects": zero, "iou_point": zero, "iou_point_oracle": zero, "iou_box": zero}
    embedding = sam.embed(x)[obj.image]  # (N, C, g, g): one row per object
    points = center_points(obj.masks)
    labels = torch.ones(points.shape[:2], dtype=torch.long, device=x.device)
    masks, iou_pred = sam.decode(embedding, size=size, points=points, labels=labels,
                                 multimask=True)
    ious = mask_iou(_upsampled(masks, size), obj.masks.unsqueeze(1))  # (N, K)
    picked = ious.gather(1, iou_pred.float().argmax(1, keepdim=True)).squeeze(1)
    box_masks, _ = sam.decode(embedding, size=size, boxes=obj.boxes, multimask=False)
    box_ious = mask_iou(_upsampled(box_masks, size)[:, 0], obj.masks)  # (N,)
    return {"objects": torch.tensor(float(len(obj.image)), device=x.device),
            "iou_point": picked.sum(), "iou_point_oracle": ious.max(1).values.sum(),
            "iou_box": box_ious.sum()}


def _sam_eval_finish(sums: Metrics) -> dict[str, Any]:
    n = sums["objects"].clamp_min(1)
    return {"miou_point": float(sums["iou_point"] / n),
            "miou_point_oracle": float(sums["iou_point_oracle"] / n),
            "miou_box": float(sums["iou_box"] / n), "objects": int(sums["objects"])}


SAM_MODEL = VisionModel(
    name="sam", config_type=SAMConfig, build=SAM, labels=True, targets="dense",
    num_classes=lambda cfg: None,  # class-agnostic: any object of any class is a mask
    normalization=lambda cfg: imagenet_normalization(cfg.in_channels),
    image_size=lambda cfg: cfg.image_size,
    train_step=_sam_train_step, eval_sums=_sam_eval_sums, eval_finish=_sam_eval_finish,
)
