"""COCO box mAP of a detector over an eval split, by pycocotools' ``COCOeval``.

COCO mAP is not a sum over batches, so a detector's eval "sums" are *gathered*: keys
that start with :data:`models.train_common.GATHER` are concatenated along dim 0 over
batches and ranks (in order) instead of added. Per eval batch (:func:`detection_sums`):

    gather/detections   (B, K, 6) x0, y0, x1, y1, score, class; class 0 = no detection
    gather/gt           (n, 6)    image of the batch, x0, y0, x1, y1, class (n objects)
    gather/batches      (1, 2)    B, n: where one batch's images and objects end

:func:`coco_map` turns them into in-memory COCO dicts (image ids in gathered order,
boxes as ``[x, y, w, h]`` with x1, y1 exclusive, categories 1..num_classes) and runs
the reference evaluator: ``map`` (AP at IoU .50:.05:.95, COCO's primary metric),
``map_50`` (PASCAL VOC's AP at IoU 0.5) and ``map_75``, at most 100 detections per image.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch

from models.train_common import GATHER

__all__ = ["coco_map", "detection_metrics", "detection_sums"]

DETECTIONS, GT, BATCHES = f"{GATHER}detections", f"{GATHER}gt", f"{GATHER}batches"


def detection_sums(detections: torch.Tensor, boxes: list[torch.Tensor],
                   labels: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """One eval batch's gathered tensors (see the module docstring).

    Args:
        detections: (B, K, 6) as :meth:`models.thundernet.ThunderNet.detect` returns them.
        boxes, labels: per image the ground truth, (N_i, 4) and (N_i,) class ids >= 1.
    """
    device = detections.device
    rows = [torch.cat([torch.full((len(b), 1), float(i), device=device), b.float().to(device),
                       lab.float().to(device).view(-1, 1)], dim=1)
            for i, (b, lab) in enumerate(zip(boxes, labels, strict=True))]
    gt = torch.cat(rows) if rows else torch.zeros(0, 6, device=device)
    return {DETECTIONS: detections.float(), GT: gt,
            BATCHES: torch.tensor([[len(boxes), len(gt)]], dtype=torch.float64, device=device)}


def _split(sums: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Gathered tensors -> detections (N, 7) and gt (M, 6) rows with global image ids."""
    dets = sums[DETECTIONS].double().cpu().numpy()  # (I, K, 6)
    gt = sums[GT].double().cpu().numpy()  # (M, 6)
    image_base = np.zeros(len(gt))
    start = row = 0
    for images, objects in sums[BATCHES].cpu().numpy().astype(int).tolist():
        image_base[row:row + objects] = start
        start, row = start + images, row + objects
    gt = np.concatenate([(gt[:, :1] + image_base[:, None]), gt[:, 1:]], axis=1)
    image = np.repeat(np.arange(dets.shape[0]), dets.shape[1])
    flat = dets.reshape(-1, 6)
    keep = flat[:, 5] > 0
    return np.concatenate([image[keep, None], flat[keep]], axis=1), gt


def coco_map(detections: np.ndarray, ground_truth: np.ndarray, *, images: int,
             num_classes: int) -> dict[str, float]:
    """pycocotools' box AP of ``detections`` against ``ground_truth``.

    Args:
        detections: (N, 7) image, x0, y0, x1, y1, score, class.
        ground_truth: (M, 6) image, x0, y0, x1, y1, class.
        images: images evaluated (ids 0 .. images - 1; an image may have no objects).
        num_classes: categories 1 .. num_classes.

    Returns:
        ``map``, ``map_50``, ``map_75``: -1.0 when there is no ground truth at all (as
        COCOeval reports a category without any); 0.0 when there are objects but no
        detections.
    """
    from pycocotools.coco import COCO  # imported here: only evaluation needs it
    from pycocotools.cocoeval import COCOeval

    if not len(ground_truth):
        return {"map": -1.0, "map_50": -1.0, "map_75": -1.0}
    if not len(detections):
        return {"map": 0.0, "map_50": 0.0, "map_75": 0.0}

    def xywh(rows: np.ndarray) -> np.ndarray:
        return np.stack([rows[:, 0], rows[:, 1], rows[:, 2] - rows[:, 0],
                         rows[:, 3] - rows[:, 1]], axis=1)

    gt_boxes = xywh(ground_truth[:, 1:5])
    dataset = {
        "images": [{"id": i} for i in range(images)],
        "categories": [{"id": c} for c in range(1, num_classes + 1)],
        "annotations": [{"id": k + 1, "image_id": int(g[0]), "category_id": int(g[5]),
                         "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0}
                        for k, (g, box) in enumerate(zip(ground_truth, gt_boxes, strict=True))],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress and the table
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        results = np.concatenate([detections[:, :1], xywh(detections[:, 1:5]),
                                  detections[:, 5:7]], axis=1)  # image, x, y, w, h, score, class
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"map": float(stats[0]), "map_50": float(stats[1]), "map_75": float(stats[2])}


def detection_metrics(sums: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Gathered eval tensors -> ``map``, ``map_50``, ``map_75``, ``images``, ``objects``,
    ``detections`` (kept, over the split).

    The categories are 1 .. the largest class id seen: COCOeval averages over the
    categories that have ground truth only, so naming more would change nothing.
    """
    detections, gt = _split(sums)
    images = int(sums[DETECTIONS].shape[0])
    top = max([1] + [int(rows[:, c].max()) for rows, c in ((gt, 5), (detections, 6))
                     if len(rows)])
    out: dict[str, Any] = coco_map(detections, gt, images=images, num_classes=top)
    out.update(images=images, objects=len(gt), detections=len(detections))
    return out
