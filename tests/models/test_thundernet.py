"""ThunderNet: SNet, box arithmetic, anchors and sampling, training and detection on CPU."""

from __future__ import annotations

import math

import pytest
import torch
from dense_testlib import write_dense_images
from detect_testlib import dense_batch, fit

from models.box_ops import balanced_sample, box_iou, decode_boxes, encode_boxes, grid_anchors
from models.config_fields import FieldError
from models.kinds import build_configs, train_model
from models.snet import SNET, SNet, channel_shuffle
from models.thundernet import ThunderNet, ThunderNetConfig
from models.train_config import TrainConfig
from models.vision_detect import THUNDERNET_MODEL, padded_boxes
from models.vision_model import DenseTargets


def tiny(**overrides) -> ThunderNetConfig:
    return ThunderNetConfig.preset("tiny", num_classes=3, **overrides)


@pytest.mark.parametrize("field, value", [("image_size", 100), ("backbone", "resnet50"),
                                          ("rpn_bg_iou", 0.8), ("ops", "cuda"),
                                          ("anchor_octaves", 0), ("cem", 1)])
def test_bad_config_fields_are_named(field, value):
    with pytest.raises(FieldError) as err:
        ThunderNetConfig(**{field: value})
    assert err.value.field == field


@pytest.mark.parametrize("name, c4, c5", [("snet49", 120, 512), ("snet146", 264, 528),
                                          ("snet535", 496, 992)])
def test_snet_strides_and_widths(name, c4, c5):
    net = SNet(SNET[name]).eval()
    f4, f5 = net(torch.zeros(1, 3, 64, 64))
    assert f4.shape == (1, c4, 4, 4) and f5.shape == (1, c5, 2, 2)
    assert (net.c4_channels, net.c5_channels) == (c4, c5)
    no_c5 = SNet(SNET[name], c5=False)
    assert no_c5(torch.zeros(1, 3, 64, 64))[1] is None and no_c5.stage4 is None


def test_channel_shuffle_interleaves_the_two_halves():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_grid_anchors_centres_sizes_and_order():
    anchors = grid_anchors((2, 3), 16, sizes=(32, 64), ratios=(0.5, 1.0))
    assert anchors.shape == (2 * 3 * 4, 4)
    # cell (0, 0) centred on (8, 8): size 32 ratio 0.5 is 32/sqrt(.5) wide, 32*sqrt(.5) high
    w, h = 32 / math.sqrt(0.5), 32 * math.sqrt(0.5)
    torch.testing.assert_close(anchors[0], torch.tensor([8 - w / 2, 8 - h / 2, 8 + w / 2,
                                                         8 + h / 2]))
    torch.testing.assert_close(anchors[1], torch.tensor([-8.0, -8.0, 24.0, 24.0]))
    torch.testing.assert_close(anchors[4 + 3], torch.tensor([24 - 32.0, -24.0, 24 + 32, 40]))
    # row-major cells: the 4th cell is (1, 0), centred on (8, 24)
    torch.testing.assert_close(anchors[3 * 4 + 1], torch.tensor([-8.0, 8.0, 24.0, 40.0]))


def test_box_coding_round_trips_and_iou():
    refs = torch.tensor([[0.0, 0, 10, 20], [5, 5, 7, 9]])
    targets = torch.tensor([[2.0, -3, 14, 30], [4, 6, 8, 8]])
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        torch.testing.assert_close(decode_boxes(encode_boxes(targets, refs, weights), refs,
                                                weights), targets)
    iou = box_iou(refs, targets)
    assert iou.shape == (2, 2)
    assert iou[0, 0] == pytest.approx(8 * 20 / (200 + 12 * 33 - 8 * 20))
    assert iou[1, 0] == pytest.approx(2 * 4 / (12 * 33))  # inside: its area / the other's
    assert box_iou(refs, torch.tensor([[20.0, 20, 30, 30]])).tolist() == [[0.0], [0.0]]


def test_balanced_sample_quotas():
    torch.manual_seed(0)
    labels = torch.tensor([[1] * 10 + [0] * 100 + [-1] * 5, [1] * 2 + [0] * 113])
    pos, neg = balanced_sample(labels, total=16, positive_fraction=0.25)
    assert pos.sum(1).tolist() == [4, 2] and neg.sum(1).tolist() == [12, 14]
    assert not (pos & (labels != 1)).any() and not (neg & (labels != 0)).any()


def test_padded_boxes():
    t = DenseTargets(torch.zeros(2, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.long),
                     [torch.tensor([[0.0, 0, 2, 2], [1, 1, 4, 3]]), torch.zeros(0, 4)],
                     [torch.tensor([2, 3]), torch.zeros(0, dtype=torch.long)])
    boxes, labels = padded_boxes(t, multiple=1)
    assert labels.tolist() == [[2, 3], [0, 0]]
    assert boxes[1].tolist() == [[0, 0, 1, 1]] * 2 and boxes[0, 1].tolist() == [1, 1, 4, 3]
    boxes, labels = padded_boxes(t)  # G rounded up to 8: few shapes for torch.compile
    assert boxes.shape == (2, 8, 4) and labels[0].tolist() == [2, 3] + [0] * 6


def test_detections_shape_order_and_range():
    torch.manual_seed(0)
    model = ThunderNet(tiny(detections=20, score_threshold=0.0)).eval()
    x, _ = dense_batch(2, 64)
    dets = model(x)
    assert dets.shape == (2, 20, 6)
    scores, classes = dets[..., 4], dets[..., 5]
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # by decreasing score
    assert ((classes >= 0) & (classes <= 3)).all() and (classes[scores > 0] >= 1).all()
    assert (dets[..., :4] >= 0).all() and (dets[..., [0, 2]] <= 64).all()


def test_losses_decrease_on_a_fixed_batch():
    torch.manual_seed(0)
    model = ThunderNet(tiny())
    x, y = dense_batch(4, 64, seed=1)
    losses = fit(model, THUNDERNET_MODEL.train_step, x, y, steps=12)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses
    _, parts = THUNDERNET_MODEL.train_step(model, x, y)
    assert set(parts) == {"rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box", "rcnn_accuracy"}


@pytest.mark.parametrize("flags, absent", [({"cem": False}, ("cem.", "backbone.stage4.")),
                                           ({"spatial_attention": False}, ("attention.",))])
def test_ablations_drop_their_module(flags, absent):
    full = {n for n, _ in ThunderNet(tiny()).named_parameters()}
    model = ThunderNet(tiny(**flags))
    names = {n for n, _ in model.named_parameters()}
    for prefix in absent:
        assert any(n.startswith(prefix) for n in full)
        assert not any(n.startswith(prefix) for n in names)
    x, y = dense_batch(2, 64)
    loss, _ = THUNDERNET_MODEL.train_step(model, x, y)
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    assert all(p.grad is not None for p in model.parameters())  # DDP needs every gradient


def test_eval_sums_give_coco_metrics():
    torch.manual_seed(0)
    model = ThunderNet(tiny(score_threshold=0.0)).eval()
    x, y = dense_batch(3, 64)
    with torch.no_grad():
        metrics = THUNDERNET_MODEL.eval_finish(THUNDERNET_MODEL.eval_sums(model, x, y))
    assert (metrics["images"], metrics["objects"]) == (3, 3)
    assert 0.0 <= metrics["map"] <= metrics["map_50"] <= 1.0


def test_trains_from_shards_through_the_loop(tmp_path):
    uri = write_dense_images(tmp_path, train=8, eval=4, size=64)
    model_cfg, _ = build_configs("thundernet", preset="tiny", model={}, train={},
                                 context={"num_classes": 3})
    cfg = TrainConfig(kind="thundernet", steps=3, batch_size=4, warmup_steps=1, log_every=1,
                      device="cpu", progress=False)
    result = train_model("thundernet", dataset_uri=uri, out_uri=(tmp_path / "run").as_uri(),
                         model_config=model_cfg, train_config=cfg)
    assert result.steps == 3 and math.isfinite(result.final_loss)
    assert {"rpn_cls", "rcnn_cls", "rcnn_accuracy"} <= set(result.train_metrics)
    assert {"map", "map_50", "map_75", "images", "objects"} <= set(result.eval_metrics)
    assert result.eval_metrics["objects"] == 4


def test_images_without_objects_train_as_background_and_evaluate():
    torch.manual_seed(0)
    model = ThunderNet(tiny())
    x, _ = dense_batch(2, 64)
    empty = DenseTargets(torch.zeros(2, dtype=torch.long), torch.zeros(2, 64, 64, dtype=torch.long),
                         [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2)
    loss, parts = THUNDERNET_MODEL.train_step(model, x, empty)
    assert math.isfinite(float(loss.detach())) and float(parts["rpn_box"]) == 0.0
    with torch.no_grad():
        metrics = THUNDERNET_MODEL.eval_finish(THUNDERNET_MODEL.eval_sums(model.eval(), x, empty))
    assert metrics["map"] == -1.0 and metrics["objects"] == 0  # COCO: no ground truth
