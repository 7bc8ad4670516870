"""MobileNetV2: the paper's architecture, the width multiplier and the atrous output strides."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from models.config_fields import FieldTypeError, FieldValueError
from models.mobilenet import (
    InvertedResidual,
    MobileNetV2,
    MobileNetV2Config,
    MobileNetV2Features,
    make_divisible,
)


def test_the_reference_network_has_the_reference_parameter_count():
    # torchvision's mobilenet_v2() and timm's mobilenetv2_100: 3,504,872 parameters
    assert MobileNetV2(MobileNetV2Config()).num_params() == 3_504_872


@pytest.mark.parametrize(
    ("width", "stem", "stages", "last"),
    [
        (1.0, 32, [16, 24, 32, 64, 96, 160, 320], 1280),
        (0.5, 16, [8, 16, 16, 32, 48, 80, 160], 1280),  # a narrow net keeps its last layer
        (1.4, 48, [24, 32, 48, 88, 136, 224, 448], 1792),  # ... a wide one widens it
        (0.35, 16, [8, 8, 16, 24, 32, 56, 112], 1280),
    ],
)
def test_width_multiplier_rounds_channels_to_multiples_of_8(width, stem, stages, last):
    cfg = MobileNetV2Config(width=width)
    assert cfg.stem_width == stem and cfg.last_width == last
    assert [s.out_channels for s in cfg.stages()] == stages
    assert all(c % 8 == 0 for c in stages)


def test_make_divisible_never_rounds_down_more_than_10_percent():
    assert [make_divisible(v) for v in (3, 12, 13, 20, 36, 100)] == [8, 16, 16, 24, 40, 104]


def test_an_inverted_residual_expands_filters_depthwise_and_projects_linearly():
    cfg = MobileNetV2Config()
    block = InvertedResidual(24, 24, expand=6, stride=1, dilation=1, cfg=cfg)
    expand, depthwise, project = block.block
    assert expand[0].out_channels == 144 and isinstance(expand[-1], nn.ReLU6)
    assert depthwise[0].groups == 144 and depthwise[0].kernel_size == (3, 3)
    assert project[0].out_channels == 24 and isinstance(project[-1], nn.BatchNorm2d)  # linear
    assert block.residual
    x = torch.randn(2, 24, 8, 8)
    block.eval()
    torch.testing.assert_close(block(x), x + block.block(x))
    down = InvertedResidual(24, 32, expand=6, stride=2, dilation=1, cfg=cfg)
    assert not down.residual and down(x).shape == (2, 32, 4, 4)


@pytest.mark.parametrize(
    ("output_stride", "sides", "dilations"),
    [
        (32, [16, 8, 4, 2, 1], {1}),
        (16, [16, 8, 4, 2, 2], {1, 2}),
        (8, [16, 8, 4, 4, 4], {1, 2, 4}),
    ],
)
def test_output_stride_dilates_the_last_stages_instead_of_striding(output_stride, sides,
                                                                   dilations):
    cfg = MobileNetV2Config(width=0.25, output_stride=output_stride)
    features = MobileNetV2Features(cfg)
    out = features(torch.randn(2, 3, 32, 32))
    assert [f.shape[-1] for f in out] == sides
    assert [f.shape[1] for f in out] == features.channels == [8, 8, 8, 24, 80]
    assert features.strides == [min(s, output_stride) for s in (2, 4, 8, 16, 32)]
    used = {m.dilation[0] for m in features.modules() if isinstance(m, nn.Conv2d)}
    assert used == dilations


def test_classifier_forward_loss_and_channels_last_autocast():
    cfg = MobileNetV2Config.preset("tiny", num_classes=5)
    model = MobileNetV2(cfg)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 4])
    logits, loss = model(x, y)
    assert logits.shape == (4, 5) and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(torch.log(torch.tensor(5.0)).item(), abs=0.1)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model = model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(x.contiguous(memory_format=torch.channels_last))
    assert logits.shape == (4, 5) and torch.isfinite(logits.float()).all()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))


def test_config_errors_name_the_field():
    with pytest.raises(FieldValueError, match="MobileNetV2Config.output_stride: must be one of"):
        MobileNetV2Config(output_stride=4)
    with pytest.raises(FieldValueError, match="MobileNetV2Config.width"):
        MobileNetV2Config(width=0)
    with pytest.raises(FieldTypeError, match="MobileNetV2Config.num_classes: must be an int"):
        MobileNetV2Config(num_classes=2.0)
    with pytest.raises(ValueError, match="unknown MobileNetV2Config preset 'v3'"):
        MobileNetV2Config.preset("v3")
    tiny = MobileNetV2Config.preset("tiny", num_classes=3)
    assert dataclasses.replace(tiny) == MobileNetV2Config(**dataclasses.asdict(tiny))
