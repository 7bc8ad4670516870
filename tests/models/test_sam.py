"""The SAM-style segmenter: prompt encoder, decoder shapes, prompts drawn from masks, the
loss and mIoU evaluation, training on CPU."""

from __future__ import annotations

import math

import pytest
import torch
from dense_testlib import write_dense_images
from detect_testlib import dense_batch, fit

from models.config_fields import FieldError
from models.kinds import build_configs, train_model
from models.sam import SAM, SAMConfig
from models.sam_prompts import (
    all_objects,
    center_points,
    jitter_boxes,
    one_object_per_image,
    random_points,
)
from models.train_config import TrainConfig
from models.vision_model import DenseTargets
from models.vision_sam import SAM_MODEL, mask_iou, mask_losses


def tiny(**overrides) -> SAMConfig:
    return SAMConfig.preset("tiny", **overrides)


@pytest.mark.parametrize("fields, bad", [({"patch_size": 5}, "patch_size"),
                                         ({"prompt_dim": 40}, "prompt_dim"),
                                         ({"decoder_heads": 3}, "decoder_heads"),
                                         ({"encoder_heads": 5}, "encoder_heads"),
                                         ({"focal_alpha": 1.5}, "focal_alpha"),
                                         ({"negative_points": -1}, "negative_points")])
def test_bad_config_fields_are_named(fields, bad):
    with pytest.raises(FieldError) as err:
        SAMConfig(**fields)
    assert err.value.field == bad


def test_prompt_encoder_points_boxes_and_both():
    torch.manual_seed(0)
    enc = SAM(tiny()).prompt_encoder
    points = torch.tensor([[[3.0, 4.0], [10.0, 2.0]]]).expand(2, -1, -1)
    labels = torch.tensor([[1, -1], [1, 0]])
    boxes = torch.tensor([[1.0, 2.0, 20.0, 30.0]] * 2)
    sparse, dense = enc(points, labels, None, (32, 32))
    assert sparse.shape == (2, 3, 32) and dense.shape == (2, 32, 1, 1)  # + a padding point
    pad = enc.not_a_point.weight[0]
    torch.testing.assert_close(sparse[0, 1], pad)  # label -1: no position, "not a point"
    torch.testing.assert_close(sparse[1, 2], pad)  # the padding point of a prompt w/o box
    assert not torch.allclose(sparse[1, 1], pad)
    assert enc(None, None, boxes, (32, 32))[0].shape == (2, 2, 32)  # two corners
    assert enc(points, labels, boxes, (32, 32))[0].shape == (2, 4, 32)  # no padding point
    with pytest.raises(ValueError, match="needs points"):
        enc(None, None, None, (32, 32))
    with pytest.raises(ValueError, match="labels"):
        enc(points, None, None, (32, 32))


def test_point_positions_match_the_image_grid_encoding():
    # The centre of token cell (i, j) of a 32 px image with an 8x8 grid is pixel
    # (4j + 2, 4i + 2) and, shifted to the pixel centre, the point (4j + 1.5, 4i + 1.5).
    pe = SAM(tiny()).prompt_encoder.positions
    grid = pe.grid(8, 8)[0]  # (C, 8, 8)
    xy = torch.tensor([[4 * 5 + 1.5 + 0.5, 4 * 2 + 1.5 + 0.5]])
    torch.testing.assert_close(pe.points(xy, (32, 32))[0], grid[:, 2, 5])
    assert grid.abs().max() <= 1.0


def test_decoder_shapes_single_and_multimask():
    torch.manual_seed(0)
    model = SAM(tiny())
    x, _ = dense_batch(2, 32)
    emb = model.embed(x)
    assert emb.shape == (2, 32, 8, 8)
    points, labels = torch.full((2, 1, 2), 5.0), torch.ones(2, 1, dtype=torch.long)
    masks, iou = model.decode(emb, size=(32, 32), points=points, labels=labels, multimask=True)
    assert masks.shape == (2, 3, 32, 32) and iou.shape == (2, 3)
    masks, iou = model.decode(emb, size=(32, 32), boxes=torch.tensor([[0.0, 0, 9, 9]] * 2),
                              multimask=False)
    assert masks.shape == (2, 1, 32, 32) and iou.shape == (2, 1)
    out = model(x, points, labels, torch.tensor([[0.0, 0, 9, 9]] * 2))
    assert [tuple(t.shape) for t in out] == [(2, 3, 32, 32), (2, 3), (2, 1, 32, 32), (2, 1)]
    with pytest.raises(ValueError, match="multiples of 4"):
        model.embed(torch.zeros(1, 3, 30, 32))


def test_random_points_fall_inside_and_outside():
    torch.manual_seed(0)
    masks = torch.zeros(64, 10, 12, dtype=torch.bool)
    masks[:, 2:6, 3:9] = True
    masks[0] = True  # a mask covering the image: no negatives possible
    points, labels = random_points(masks, negatives=3)
    assert points.shape == (64, 4, 2) and labels.shape == (64, 4)
    x, y = points[..., 0].long(), points[..., 1].long()
    inside = masks[torch.arange(64)[:, None], y, x]  # (64, 4)
    assert (labels[:, 0] == 1).all() and inside[:, 0].all()
    assert (~inside[labels == 0]).all()
    assert (labels[:, 1:] <= 0).all() and (labels[0, 1:] == -1).all()
    assert (labels[:, 1:] == 0).sum(1).unique().numel() > 1  # 0..3 negatives, drawn


def test_center_point_is_the_deepest_pixel():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:7, 3:10] = True  # 5 rows x 7 columns: depth 3 along row 4, columns 5..7
    masks[1, :9, :5] = True  # at the border, which counts as outside: depth 3 at column 2
    assert center_points(masks)[:, 0].tolist() == [[5.0, 4.0], [2.0, 2.0]]


def test_jitter_keeps_boxes_in_the_image():
    torch.manual_seed(0)
    boxes = torch.tensor([[0.0, 0, 4, 4], [10, 10, 30, 30]]).repeat(50, 1)
    out = jitter_boxes(boxes, (32, 40), noise=0.5, max_noise=6.0)
    assert (out[:, :2] >= 0).all() and (out[:, 2] <= 40).all() and (out[:, 3] <= 32).all()
    assert ((out[:, 2:] - out[:, :2]) >= 1).all() and ((out - boxes).abs() <= 6).all()
    assert not torch.equal(out, boxes)
    torch.testing.assert_close(jitter_boxes(boxes, (32, 40), noise=0.0, max_noise=6.0), boxes)


def objects_batch() -> DenseTargets:
    masks = torch.zeros(3, 8, 8, dtype=torch.long)
    masks[0, 0:2, 0:2] = 1
    masks[0, 5:8, 5:8] = 1  # two components of class 1
    masks[2, 3:5, 2:6] = 2
    boxes = [torch.tensor([[0.0, 0, 2, 2], [5, 5, 8, 8]]), torch.zeros(0, 4),
             torch.tensor([[2.0, 3, 6, 5], [0, 0, 1, 1]])]  # the last box holds no class 2
    labels = [torch.tensor([1, 1]), torch.zeros(0, dtype=torch.long), torch.tensor([2, 2])]
    return DenseTargets(torch.zeros(3, dtype=torch.long), masks, boxes, labels)


def test_objects_are_components_inside_their_box():
    objs = all_objects(objects_batch())
    assert objs.image.tolist() == [0, 0, 2]  # the empty object is dropped
    assert objs.masks.flatten(1).sum(1).tolist() == [4, 9, 8]
    assert not objs.masks[0, 5:, 5:].any()  # the other component of the class stays out
    torch.manual_seed(0)
    one = one_object_per_image(objects_batch())
    assert one.image.tolist() == [0, 1, 2] and one.valid.tolist()[:2] == [True, False]
    assert not one.masks[1].any() and one.boxes[1].tolist() == [0, 0, 8, 8]


def test_mask_loss_backpropagates_the_best_mask():
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[:, 2:6, 2:6] = True
    good = torch.where(target, 10.0, -10.0)
    logits = torch.stack([-good, good, torch.zeros_like(good)], dim=1).requires_grad_()
    iou_pred = torch.zeros(2, 3, requires_grad=True)
    loss, stats = mask_losses(logits, iou_pred, target, torch.tensor([1.0, 0.0]), tiny())
    loss.backward()
    assert stats["miou"] == 1.0 and stats["focal"] < 1e-4
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[0, 2].abs().sum() == 0
    assert logits.grad[1].abs().sum() == 0  # weight 0
    # the IoU head learns every mask's true IoU: 0, 1 and 16/64 (logits 0 -> all pixels off)
    assert iou_pred.grad[0].tolist() == pytest.approx([0.0, -2 / 3, 0.0])
    assert mask_iou(torch.zeros(1, 4, 4, dtype=torch.bool),
                    torch.zeros(1, 4, 4, dtype=torch.bool)).tolist() == [1.0]


def test_training_improves_the_masks_of_a_fixed_batch():
    torch.manual_seed(0)
    model = SAM(tiny())
    x, y = dense_batch(4, 32, seed=2)
    losses = fit(model, SAM_MODEL.train_step, x, y, steps=25)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
    model.zero_grad()
    loss, metrics = SAM_MODEL.train_step(model, x, y)
    assert {"point_focal", "point_dice", "point_iou_mse", "point_miou", "box_miou"} <= set(metrics)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP needs every gradient


def test_eval_reports_miou_from_a_point_and_a_box():
    torch.manual_seed(0)
    model = SAM(tiny()).eval()
    x, y = dense_batch(3, 32)
    with torch.no_grad():
        metrics = SAM_MODEL.eval_finish(SAM_MODEL.eval_sums(model, x, y))
    assert metrics["objects"] == 3
    assert 0 <= metrics["miou_point"] <= metrics["miou_point_oracle"] <= 1
    assert 0 <= metrics["miou_box"] <= 1


def test_trains_from_shards_through_the_loop(tmp_path):
    uri = write_dense_images(tmp_path, train=8, eval=4, size=32)
    model_cfg, _ = build_configs("sam", preset="tiny", model={}, train={}, context={})
    cfg = TrainConfig(kind="sam", steps=3, batch_size=4, warmup_steps=1, log_every=1,
                      device="cpu", progress=False)
    result = train_model("sam", dataset_uri=uri, out_uri=(tmp_path / "run").as_uri(),
                         model_config=model_cfg, train_config=cfg)
    assert result.steps == 3 and math.isfinite(result.final_loss)
    assert {"point_miou", "box_miou"} <= set(result.train_metrics)
    assert set(result.eval_metrics) == {"step", "miou_point", "miou_point_oracle", "miou_box",
                                        "objects"}
    assert result.eval_metrics["objects"] == 4


def test_a_batch_without_objects_weighs_nothing():
    torch.manual_seed(0)
    model = SAM(tiny())
    x, _ = dense_batch(2, 32)
    empty = DenseTargets(torch.zeros(2, dtype=torch.long), torch.zeros(2, 32, 32, dtype=torch.long),
                         [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2)
    loss, _ = SAM_MODEL.train_step(model, x, empty)
    assert float(loss.detach()) == 0.0
    with torch.no_grad():
        metrics = SAM_MODEL.eval_finish(SAM_MODEL.eval_sums(model.eval(), x, empty))
    assert metrics["objects"] == 0 and metrics["miou_point"] == 0.0
