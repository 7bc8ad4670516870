"""The ThunderNet detector as a vision kind: training on boxes, COCO mAP evaluation.

Registered in :data:`models.task_vision.VISION_MODELS` as ``thundernet``, with dense
targets (:class:`~models.vision_model.DenseTargets`): its objects are the boxes of the
masks' connected components and their mask class ids (1..num_classes), padded per batch
to (B, G, 4) and (B, G) (class 0 = padding) for the model's batched loss.

Evaluation gathers every image's detections and ground truth
(:mod:`models.detection_eval`) and runs pycocotools' COCOeval once over the eval split:
``map`` (AP@[.50:.95]), ``map_50`` (AP@.50), ``map_75``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.detection_eval import detection_metrics, detection_sums
from models.thundernet import ThunderNet, ThunderNetConfig
from models.vision_model import DenseTargets, Metrics, VisionModel
from models.vision_sam import imagenet_normalization, raw_model

__all__ = ["THUNDERNET_MODEL", "padded_boxes"]


def padded_boxes(targets: DenseTargets, multiple: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image boxes as ``(boxes (B, G, 4), labels (B, G))``; G = the most boxes of an
    image rounded up to a ``multiple`` (so that a compiled model sees few distinct shapes);
    padding rows are the box (0, 0, 1, 1) with class 0."""
    B, device = len(targets.boxes), targets.masks.device
    most = max([1] + [int(b.shape[0]) for b in targets.boxes])
    G = -(-most // multiple) * multiple
    boxes = torch.tensor([0.0, 0.0, 1.0, 1.0], device=device).repeat(B, G, 1)
    labels = torch.zeros(B, G, dtype=torch.long, device=device)
    for i, (b, lab) in enumerate(zip(targets.boxes, targets.box_labels, strict=True)):
        if len(b):
            boxes[i, : len(b)] = b.float()
            labels[i, : len(b)] = lab.long()
    return boxes, labels


def _train_step(model: nn.Module, x: torch.Tensor, y: DenseTargets
                ) -> tuple[torch.Tensor, Metrics]:
    boxes, labels = padded_boxes(y)
    loss, parts = model(x, boxes, labels)
    return loss, parts


def _eval_sums(model: nn.Module, x: torch.Tensor, y: DenseTargets) -> Metrics:
    detections = raw_model(model).detect(x)  # (B, K, 6)
    sums = detection_sums(detections, y.boxes, y.box_labels)
    sums["images"] = torch.tensor(float(x.shape[0]), device=x.device)
    return sums


THUNDERNET_MODEL = VisionModel(
    name="thundernet", config_type=ThunderNetConfig, build=ThunderNet, labels=True,
    targets="dense", num_classes=lambda cfg: cfg.num_classes,
    normalization=lambda cfg: imagenet_normalization(cfg.in_channels),
    image_size=lambda cfg: cfg.image_size,
    train_step=_train_step, eval_sums=_eval_sums, eval_finish=detection_metrics,
)
