"""PA, MPA and MIoU from a confusion matrix, against hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from models.seg_metrics import confusion_matrix, segmentation_metrics

# truth:  0 0 0 1 1 2        rows = truth, columns = prediction
# pred:   0 0 1 1 2 2        [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
TRUTH = torch.tensor([[0, 0, 0], [1, 1, 2]])
PRED = torch.tensor([[0, 0, 1], [1, 2, 2]])


def test_confusion_matrix_rows_are_truth_columns_predictions():
    cm = confusion_matrix(PRED, TRUTH, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert cm.dtype == torch.int64


@pytest.mark.parametrize(
    ("pred", "truth", "classes", "pa", "mpa", "miou", "class_iou"),
    [
        # PA = 4/6; accuracies 2/3, 1/2, 1; IoUs 2/(3+2-2), 1/(2+2-1), 1/(1+2-1)
        (PRED, TRUTH, 3, 4 / 6, (2 / 3 + 1 / 2 + 1) / 3, (2 / 3 + 1 / 3 + 1 / 2) / 3,
         [2 / 3, 1 / 3, 1 / 2]),
        # a 4th class neither in the truth nor predicted has no IoU and no accuracy
        (PRED, TRUTH, 4, 4 / 6, (2 / 3 + 1 / 2 + 1) / 3, (2 / 3 + 1 / 3 + 1 / 2) / 3,
         [2 / 3, 1 / 3, 1 / 2, None]),
        # background is a class: an all-background image predicted right scores 1 everywhere
        (torch.zeros(2, 2), torch.zeros(2, 2), 3, 1.0, 1.0, 1.0, [1.0, None, None]),
        # a class predicted but absent from the truth has IoU 0 (counted) and no accuracy:
        # truth 0 0 0 0, pred 0 0 0 2 -> IoU0 = 3/4, IoU2 = 0; MPA over class 0 only
        (torch.tensor([0, 0, 0, 2]), torch.zeros(4), 3, 3 / 4, 3 / 4, (3 / 4 + 0) / 2,
         [3 / 4, None, 0.0]),
    ],
)
def test_metrics_by_hand(pred, truth, classes, pa, mpa, miou, class_iou):
    out = segmentation_metrics(confusion_matrix(pred, truth, classes))
    assert out["pixel_accuracy"] == pytest.approx(pa)
    assert out["mean_accuracy"] == pytest.approx(mpa)
    assert out["mean_iou"] == pytest.approx(miou)
    assert out["class_iou"] == [pytest.approx(v) if v is not None else None for v in class_iou]
    assert out["pixels"] == truth.numel()


def test_summed_matrices_give_the_metrics_of_the_whole_split():
    """Per-batch matrices add up; averaging per-batch MIoU would not give the same number."""
    a, b = confusion_matrix(PRED[:1], TRUTH[:1], 3), confusion_matrix(PRED[1:], TRUTH[1:], 3)
    whole = segmentation_metrics(confusion_matrix(PRED, TRUTH, 3))
    assert segmentation_metrics(a + b) == whole
    mean_of_batches = (segmentation_metrics(a)["mean_iou"] + segmentation_metrics(b)["mean_iou"]) / 2
    assert mean_of_batches != pytest.approx(whole["mean_iou"])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ"):
        confusion_matrix(PRED, TRUTH[:1], 3)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix(PRED, TRUTH, 2)
    assert segmentation_metrics(torch.zeros(3, 3))["mean_iou"] == 0.0  # nothing seen yet
