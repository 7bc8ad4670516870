"""COCO mAP through pycocotools on hand-built cases, and the loop's gathered eval sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.detection_eval import coco_map, detection_metrics, detection_sums
from models.train_common import GATHER, evaluate

BOX_A, BOX_B = [10.0, 10.0, 30.0, 40.0], [5.0, 0.0, 25.0, 20.0]
MISSED = 51 / 101  # precision 1 up to recall 0.5, nothing after: 51 of COCO's 101 points


def dets(*rows):
    """(1, K, 6) detections of one image from (box, score, class) rows, padded to K = 3."""
    out = torch.zeros(1, 3, 6)
    for k, (box, score, cls) in enumerate(rows):
        out[0, k] = torch.tensor([*box, score, cls])
    return out


def gt(*rows):
    return [torch.tensor([r[0] for r in rows]).view(-1, 4)], [torch.tensor([r[1] for r in rows])]


def gathered(*batches):
    """The loop's merge of per-batch sums: GATHER keys concatenated, the rest added."""
    out = {}
    for sums in batches:
        for k, v in sums.items():
            out[k] = v if k not in out else (torch.cat([out[k], v]) if k.startswith(GATHER)
                                             else out[k] + v)
    return out


def test_perfect_detections_score_one():
    sums = gathered(detection_sums(dets((BOX_A, 0.9, 1), (BOX_B, 0.8, 2)), *gt((BOX_A, 1),
                                                                            (BOX_B, 2))),
                    detection_sums(dets((BOX_B, 0.7, 1)), *gt((BOX_B, 1))))
    metrics = detection_metrics(sums)
    assert metrics["map"] == pytest.approx(1.0)
    assert metrics["map_50"] == pytest.approx(1.0)
    assert (metrics["images"], metrics["objects"], metrics["detections"]) == (2, 3, 3)


def test_a_missed_object_halves_recall():
    # Two images with one class-1 object each; the second image's detection is another
    # class, so class 1 reaches recall 0.5 at precision 1 (and class 2 has no ground truth).
    sums = gathered(detection_sums(dets((BOX_A, 0.9, 1)), *gt((BOX_A, 1))),
                    detection_sums(dets((BOX_B, 0.9, 2)), *gt((BOX_B, 1))))
    metrics = detection_metrics(sums)
    assert metrics["map_50"] == pytest.approx(MISSED)
    assert metrics["map"] == pytest.approx(MISSED)


def test_image_ids_follow_the_gathered_batches():
    # Batch 1 has two images (the second without objects), batch 2 one: the gt of batch 2
    # must land on global image 2. Swapping its detection to image 1 would miss it.
    b1 = detection_sums(torch.cat([dets((BOX_A, 0.9, 1)), dets()]),
                        [torch.tensor([BOX_A]), torch.zeros(0, 4)],
                        [torch.tensor([1]), torch.zeros(0, dtype=torch.long)])
    b2 = detection_sums(dets((BOX_B, 0.8, 1)), *gt((BOX_B, 1)))
    assert detection_metrics(gathered(b1, b2))["map"] == pytest.approx(1.0)
    wrong = dict(b1)
    wrong["gather/detections"] = torch.cat([dets((BOX_A, 0.9, 1)), dets((BOX_B, 0.8, 1))])
    b2_without = dict(b2, **{"gather/detections": dets()})
    assert detection_metrics(gathered(wrong, b2_without))["map_50"] == pytest.approx(MISSED)


def test_loose_boxes_count_at_iou_half_only():
    loose = [BOX_A[0], BOX_A[1], BOX_A[2], BOX_A[3] + 15]  # IoU 600 / 900 = 0.67
    metrics = detection_metrics(detection_sums(dets((loose, 0.9, 1)), *gt((BOX_A, 1))))
    assert metrics["map_50"] == pytest.approx(1.0)
    # AP is 1 at thresholds .50 .. .65 (4 of 10), 0 above
    assert metrics["map"] == pytest.approx(0.4)
    assert metrics["map_75"] == pytest.approx(0.0)


def test_no_detections_and_no_objects():
    assert coco_map(np.zeros((0, 7)), np.array([[0, *BOX_A, 1]]), images=1,
                    num_classes=1)["map"] == 0.0
    assert coco_map(np.zeros((0, 7)), np.zeros((0, 6)), images=1, num_classes=1) == {
        "map": -1.0, "map_50": -1.0, "map_75": -1.0}  # COCOeval's "no ground truth"


class _Task:
    """Two eval batches: an additive count and a gathered tensor of varying length."""

    def eval_batches(self, reader):
        return iter(reader)

    def prepare(self, batch, device):
        return batch

    def eval_sums(self, model, inputs):
        return {"n": torch.tensor(float(len(inputs))), f"{GATHER}rows": inputs}

    def eval_finish(self, sums):
        return {"n": float(sums["n"]), "rows": sums[f"{GATHER}rows"].tolist()}


def test_evaluate_concatenates_gathered_keys_and_sums_the_rest():
    reader = [torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0]])]
    out = evaluate(_Task(), nn.Linear(1, 1), reader, device=torch.device("cpu"))
    assert out == {"n": 3.0, "rows": [[1.0], [2.0], [3.0]]}
