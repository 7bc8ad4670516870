"""The dense data path (masks, boxes -> DenseTargets) and the new kinds through the one loop."""

from __future__ import annotations

import json

import pytest
import torch
from dense_testlib import CLASSES, write_dense_images

from models.checkpoint import load_checkpoint
from models.kinds import build_configs, train_model
from models.seg_metrics import confusion_matrix, segmentation_metrics
from models.segmenter import Segmenter, SegmenterConfig
from models.task_vision import IMAGENET_MEAN, IMAGENET_STD, VISION_MODELS, VisionTask
from models.train_config import TrainConfig
from models.vision_data import decode_dense, image_spec, to_dense_targets, to_model_input
from models.vision_model import DenseTargets
from records.reader import RecordDataset

CONTEXT = {"num_classes": CLASSES}
TRAIN = dict(batch_size=8, lr=1e-2, min_lr=1e-3, warmup_steps=2, weight_decay=0.0,
             log_every=5, device="cpu", progress=False)


def reader(uri: str, split: str = "train", batch_size: int = 8):
    return RecordDataset(uri, split, batch_size=batch_size, shuffle=False, bytes_as="uint8",
                         feature_spec=image_spec(labels=True, dense=True))


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return write_dense_images(tmp_path_factory.mktemp("dense"), train=32, eval=8)


def test_decode_dense_reads_masks_and_boxes_as_written(dense):
    images, labels, masks, boxes, box_labels, counts = decode_dense(next(iter(reader(dense))),
                                                                    num_classes=CLASSES)
    assert images.shape == (8, 32, 32, 3) and masks.shape == (8, 32, 32)
    assert boxes.shape == (8, 1, 4) and counts.tolist() == [1] * 8
    assert torch.equal(box_labels[:, 0], labels + 1)  # one object per image: its label + 1
    for i in range(8):  # the box is the extent of the object's pixels, x1/y1 exclusive
        rows, cols = masks[i].nonzero(as_tuple=True)
        assert boxes[i, 0].tolist() == [int(cols.min()), int(rows.min()),
                                        int(cols.max()) + 1, int(rows.max()) + 1]
        assert set(masks[i].unique().tolist()) == {0, int(labels[i]) + 1}


def test_an_image_without_a_mask_raises_naming_it(tmp_path):
    uri = write_dense_images(tmp_path, train=8, eval=0, maskless=5)
    with pytest.raises(ValueError, match="image 5 of the batch has no mask \\(feature 'mask'"):
        decode_dense(next(iter(reader(uri))))
    batch = next(iter(reader(write_dense_images(tmp_path, train=8, eval=0, name="other"))))
    batch["mask"][2, 7] = CLASSES + 1  # one pixel of a class the labels do not have
    with pytest.raises(ValueError, match="mask class ids must lie in \\[0, 3\\] .*got 4"):
        decode_dense(batch, num_classes=CLASSES)


def test_targets_follow_the_model_input_size(dense):
    images, labels, masks, boxes, box_labels, counts = decode_dense(next(iter(reader(dense))))
    same = to_dense_targets(labels, masks, boxes, box_labels, counts, size=(32, 32),
                            device=torch.device("cpu"))
    assert torch.equal(same.masks, masks.long()) and same.masks.dtype == torch.int64
    big = to_dense_targets(labels, masks, boxes, box_labels, counts, size=(64, 96),
                           device=torch.device("cpu"))
    assert big.masks.shape == (8, 64, 96)
    assert torch.equal(big.masks[:, ::2, ::3], masks.long())  # nearest: each pixel repeated
    assert torch.equal(big.boxes[0], boxes[0].float() * torch.tensor([3.0, 2.0, 3.0, 2.0]))
    assert [len(b) for b in big.boxes] == counts.tolist() == [len(b) for b in big.box_labels]
    moved = big.to(torch.device("cpu"))
    assert isinstance(moved, DenseTargets) and torch.equal(moved.labels, labels)


def test_the_dense_task_reads_the_mask_features_and_resizes_targets_with_images(dense):
    cfg = SegmenterConfig.preset("tiny", num_classes=CLASSES)
    task = VisionTask(VISION_MODELS["segmenter"], cfg,
                      TrainConfig(kind="segmenter", image_size=64, **TRAIN))
    spec = task.reader_options["feature_spec"]
    assert {"mask", "mask_shape", "boxes", "box_labels", "label"} <= set(spec)
    batch = next(task.stream(iter(reader(dense))))
    x, y = task.prepare(batch, torch.device("cpu"))
    assert x.shape == (8, 3, 64, 64) and y.masks.shape == (8, 64, 64)
    assert float(y.boxes[0][0, 2]) == 2 * float(batch[3][0, 0, 2])
    expected = to_model_input(batch[0], mean=IMAGENET_MEAN, std=IMAGENET_STD, size=64)
    torch.testing.assert_close(x, expected)
    classifier = VisionTask(VISION_MODELS["mobilenet_v2"], build_configs(
        "mobilenet_v2", preset="tiny", model={}, train={}, context=CONTEXT)[0],
        TrainConfig(kind="mobilenet_v2", **TRAIN))
    assert set(classifier.reader_options["feature_spec"]) == {"image", "image_shape", "label"}


def lines(result) -> list[dict]:
    with open(result.metrics_uri.removeprefix("file://")) as f:
        return [json.loads(line) for line in f]


def test_segmenter_trains_and_evaluates_pa_mpa_miou_and_the_erf(dense, tmp_path):
    model_cfg, train_cfg = build_configs(
        "segmenter", preset="tiny", model={"head": "fcn", "upsample": "bilinear"},
        train={"steps": 30, "eval_every": 15, **TRAIN}, context=CONTEXT)
    result = train_model("segmenter", dataset_uri=dense, out_uri=(tmp_path / "seg").as_uri(),
                         model_config=model_cfg, train_config=train_cfg)
    assert result.final_loss < result.first_loss * 0.6, result
    ev = result.eval_metrics
    assert ev["step"] == 30 and ev["images"] == 8
    assert {"pixel_accuracy", "mean_accuracy", "mean_iou", "class_iou", "erf", "erf_radius"} <= set(ev)
    assert len(ev["erf"]) == 32 and max(max(row) for row in ev["erf"]) == 1.0
    assert result.train_metrics["receptive_field"] > 32
    assert [r["eval"]["step"] for r in lines(result) if "eval" in r] == [15, 30]

    # The logged metrics are those of the checkpoint's model over the whole eval split.
    ckpt = load_checkpoint(result.checkpoint_uri)
    model = Segmenter(model_cfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    cm = torch.zeros(4, 4, dtype=torch.int64)
    with torch.no_grad():
        for batch in reader(dense, "eval"):
            images, labels, masks, *_ = decode_dense(batch)
            x = to_model_input(images, mean=IMAGENET_MEAN, std=IMAGENET_STD)
            cm += confusion_matrix(model(x)[0].argmax(1), masks.long(), 4)
    by_hand = segmentation_metrics(cm)
    for name in ("pixel_accuracy", "mean_accuracy", "mean_iou"):
        assert ev[name] == pytest.approx(by_hand[name], abs=1e-6), name


def test_mobilenet_v2_overfits_a_tiny_batch(dense, tmp_path):
    model_cfg, train_cfg = build_configs(
        "mobilenet_v2", preset="tiny", model={"resolution": 32},
        train={"steps": 40, **{**TRAIN, "batch_size": 8, "lr": 3e-3}}, context=CONTEXT)
    one_batch = write_dense_images(tmp_path, train=8, eval=8, name="one-batch")
    result = train_model("mobilenet_v2", dataset_uri=one_batch,
                         out_uri=(tmp_path / "mnv2").as_uri(), model_config=model_cfg,
                         train_config=train_cfg)
    assert result.train_metrics["accuracy"] == 1.0  # on its one batch, BatchNorm in train mode
    assert result.final_loss < result.first_loss / 5, result
    assert set(result.eval_metrics) == {"step", "accuracy", "loss", "images"}
