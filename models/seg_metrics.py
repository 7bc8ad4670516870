"""Segmentation metrics from a confusion matrix: PA, MPA, MIoU (Long et al. 2015, FCN, sec. 5).

With ``n_ij`` the pixels of ground-truth class ``i`` predicted as class ``j`` and
``t_i = sum_j n_ij`` the pixels of class ``i``::

    pixel accuracy        PA   = sum_i n_ii / sum_i t_i
    mean pixel accuracy   MPA  = (1 / n_cl) sum_i n_ii / t_i
    mean IoU              MIoU = (1 / n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)

Background is a class like any other (class 0 of the masks), as in the definitions and in
PASCAL VOC's 21 classes. ``n_cl`` counts the classes the averages are defined for: a class
absent from the ground truth has no accuracy and is left out of MPA; a class neither in the
ground truth nor predicted has no IoU and is left out of MIoU (a class predicted but absent
scores IoU 0). This is the ``nanmean`` convention of mmsegmentation and torchmetrics.

The matrix is additive, so the trainer sums it over batches and ranks and the metrics come
from the total (:func:`segmentation_metrics`), never from averaging per-batch scores.
"""

from __future__ import annotations

import torch

__all__ = ["confusion_matrix", "segmentation_metrics"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts: row = ground truth, column = prediction.

    Args:
        pred, target: integer class ids of the same shape, in ``[0, num_classes)``.

    Raises:
        ValueError: shapes differ, or an id is out of range.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if pred.numel() and (int(torch.minimum(pred.min(), target.min())) < 0
                         or int(torch.maximum(pred.max(), target.max())) >= num_classes):
        raise ValueError(f"class ids must lie in [0, {num_classes})")
    index = target * num_classes + pred  # one bin per (truth, prediction) pair
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_metrics(confusion: torch.Tensor) -> dict[str, float | list[float | None]]:
    """PA, MPA, MIoU (and per-class IoU and accuracy) of a summed confusion matrix.

    Returns:
        ``pixel_accuracy``, ``mean_accuracy``, ``mean_iou`` (floats; 0.0 for an empty
        matrix), ``class_iou`` and ``class_accuracy`` (per class, None where undefined)
        and ``pixels``.
    """
    cm = confusion.double()
    hits = cm.diagonal()  # n_ii
    truth = cm.sum(1)  # t_i
    predicted = cm.sum(0)  # sum_j n_ji
    union = truth + predicted - hits
    total = float(cm.sum())
    has_truth, has_union = truth > 0, union > 0
    accuracy = torch.where(has_truth, hits / truth.clamp_min(1), torch.nan)
    iou = torch.where(has_union, hits / union.clamp_min(1), torch.nan)

    def mean(values: torch.Tensor, valid: torch.Tensor) -> float:
        return float(values[valid].mean()) if bool(valid.any()) else 0.0

    def plain(values: torch.Tensor) -> list[float | None]:
        return [None if v != v else float(v) for v in values.tolist()]  # NaN -> None

    return {
        "pixel_accuracy": float(hits.sum()) / total if total else 0.0,
        "mean_accuracy": mean(accuracy, has_truth),
        "mean_iou": mean(iou, has_union),
        "class_iou": plain(iou),
        "class_accuracy": plain(accuracy),
        "pixels": int(total),
    }
