"""Theoretical receptive fields of known nets; the effective one from input gradients."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn

from models.mobilenet import MobileNetV2Config, MobileNetV2Features
from models.receptive_field import (
    conv_chain,
    effective_receptive_field,
    erf_radius,
    receptive_field_jump,
    theoretical_receptive_field,
    upsample_layer,
)
from models.segmenter import Segmenter, SegmenterConfig


def vgg16(until_pool5: bool = True) -> list[tuple[int, int, int]]:
    """VGG-16's 13 3x3 convs in 5 blocks (2, 2, 3, 3, 3), a 2x2/2 max pool after each."""
    layers = []
    for i, convs in enumerate((2, 2, 3, 3, 3)):
        layers += [(3, 1, 1)] * convs
        if until_pool5 or i < 4:
            layers.append((2, 2, 1))
    return layers


ALEXNET = [(11, 4, 1), (3, 2, 1), (5, 1, 1), (3, 2, 1), (3, 1, 1), (3, 1, 1), (3, 1, 1)]


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ([], 1),
        ([(3, 1, 1)] * 2, 5),
        (vgg16(until_pool5=False), 196),  # conv5_3
        (vgg16(), 212),  # pool5
        (ALEXNET, 163),  # conv5
        (ALEXNET + [(3, 2, 1)], 195),  # pool5
        # Yu & Koltun's context module: 3x3 convs dilated 1, 1, 2, 4, 8, 16, 1 -> 67
        ([(3, 1, d) for d in (1, 1, 2, 4, 8, 16, 1)], 67),
        ([(3, 1, 2), (3, 1, 4)], 13),
        ([(3, 1)] * 3, 7),  # dilation may be left out
    ],
)
def test_known_nets(layers, expected):
    assert theoretical_receptive_field(layers) == expected


def test_upsampling_layers_shrink_the_jump():
    # down x8 then bilinear up x8: the jump returns to 1 and a last 3x3 adds 2 pixels
    down = [(2, 2, 1)] * 3
    r, j = receptive_field_jump(down + [upsample_layer("bilinear", 8)])
    assert (r, j) == (8 + 8, 1)
    assert theoretical_receptive_field(down + [upsample_layer("bilinear", 8), (3, 1, 1)]) == 18
    assert upsample_layer("transposed", 8, kernel=16) == (2, Fraction(1, 8), 1)
    assert upsample_layer("pixel_shuffle", 2) == (1, Fraction(1, 2), 1)
    with pytest.raises(ValueError, match="kernel"):
        upsample_layer("transposed", 2)
    with pytest.raises(ValueError, match="layer 1"):
        theoretical_receptive_field([(3, 1, 1), (0, 1, 1)])


def test_conv_chain_reads_a_module_in_forward_order():
    blocks = []
    for convs in (2, 2, 3, 3, 3):
        for _ in range(convs):
            blocks += [nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()]
        blocks.append(nn.MaxPool2d(2))
    assert theoretical_receptive_field(conv_chain(nn.Sequential(*blocks))) == 212


def test_dilation_at_output_stride_8_keeps_the_receptive_field_of_stride_32():
    """Atrous stages see at least as far as the strided ones they replace."""
    rf = {os: theoretical_receptive_field(conv_chain(MobileNetV2Features(
        MobileNetV2Config(width=0.25, output_stride=os)))) for os in (8, 16, 32)}
    assert rf[8] >= rf[32] and rf[16] >= rf[32] and rf[32] > 224


def _ones_net(dilations) -> nn.Sequential:
    convs = [nn.Conv2d(1, 1, 3, padding=d, dilation=d, bias=False) for d in dilations]
    for conv in convs:
        nn.init.ones_(conv.weight)
    return nn.Sequential(*convs)


def test_effective_receptive_field_fills_exactly_the_theoretical_square():
    """With positive weights every input pixel of the field has a gradient, none outside."""
    net = _ones_net((1, 2))  # theoretical 1 + 2 + 4 = 7
    x = torch.randn(3, 1, 21, 21)
    erf, out = effective_receptive_field(net, x)
    assert out.shape == (3, 1, 21, 21) and not out.requires_grad
    support = (erf > 0).nonzero()
    side = theoretical_receptive_field([(3, 1, 1), (3, 1, 2)])
    assert side == 7
    assert support.min(0).values.tolist() == [10 - 3, 10 - 3]
    assert support.max(0).values.tolist() == [10 + 3, 10 + 3]
    assert len(support) == side * side
    assert torch.equal(erf, erf.flip(0).flip(1))  # a linear net: the same for any input
    assert erf_radius(erf, mass=1.0) == 3.5


def test_a_segmenters_erf_is_an_image_sized_map_around_the_centre():
    model = Segmenter(SegmenterConfig.preset("tiny", head="fcn", num_classes=3)).eval()
    erf, logits = effective_receptive_field(lambda x: model(x)[0], torch.randn(2, 3, 32, 32))
    assert erf.shape == (32, 32) and logits.shape == (2, 4, 32, 32)
    assert float(erf.sum()) > 0 and 0 < erf_radius(erf) <= 16
