"""The segmenter: every head with every upsampling, their inits, receptive fields and config."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from models.config_fields import FieldValueError
from models.receptive_field import theoretical_receptive_field
from models.segmenter import (
    ASPP,
    HEADS,
    UPSAMPLES,
    Segmenter,
    SegmenterConfig,
    Upsample,
)


def tiny(**overrides) -> SegmenterConfig:
    return SegmenterConfig.preset("tiny", num_classes=3, **overrides)


@pytest.mark.parametrize(("head", "upsample"), list(itertools.product(HEADS, UPSAMPLES)))
def test_every_head_and_upsampling_gives_full_resolution_logits(head, upsample):
    torch.manual_seed(0)
    model = Segmenter(tiny(head=head, upsample=upsample))
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    logits, loss = model(x, y)
    assert logits.shape == (2, 4, 32, 32)  # background + 3 classes, at the input's size
    # small classifier inits: each loss starts at about log(4) whatever the head
    first = (1 + model.config.aux_loss) * torch.log(torch.tensor(4.0)).item()
    assert loss.item() == pytest.approx(first, abs=0.2)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    layers = model.receptive_field_layers()
    assert theoretical_receptive_field(layers) > 32
    assert sum(1 for _, stride, _ in layers if stride < 1) > 0  # the head upsamples


def test_output_stride_16_on_64_px_and_channels_last_bf16():
    model = Segmenter(tiny(head="deeplab", output_stride=16)).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(x, torch.zeros(2, 64, 64, dtype=torch.long))
    assert logits.shape == (2, 4, 64, 64) and torch.isfinite(loss)
    assert model.backbone.strides == [2, 4, 8, 16, 16]


def test_transposed_upsampling_starts_as_bilinear_interpolation():
    up = Upsample(3, 4, "transposed")
    up.reset_parameters()
    x = torch.randn(1, 3, 6, 6)
    ours, bilinear = up(x), F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    assert ours.shape == bilinear.shape == (1, 3, 24, 24)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # away from the zero padding
    torch.testing.assert_close(ours[inner], bilinear[inner])


def test_pixel_shuffle_starts_as_nearest_upsampling_of_one_conv():
    up = Upsample(2, 2, "pixel_shuffle")
    up.reset_parameters()
    out = up(torch.randn(1, 2, 5, 5))  # (1, 2, 10, 10)
    assert out.shape == (1, 2, 10, 10)
    blocks = out.unfold(2, 2, 2).unfold(3, 2, 2)  # (1, 2, 5, 5, 2, 2): the sub-pixels
    torch.testing.assert_close(blocks, blocks[..., :1, :1].expand_as(blocks))  # ICNR: no checkerboard


def test_bilinear_and_identity_upsampling_have_no_parameters():
    assert not list(Upsample(4, 8, "bilinear").parameters())
    same = Upsample(4, 1, "transposed")
    x = torch.randn(1, 4, 3, 3)
    assert same(x) is x and not list(same.parameters())


def test_aspp_rates_double_at_output_stride_8_and_the_field_follows_the_widest():
    assert SegmenterConfig(output_stride=16).aspp_rates() == (6, 12, 18)
    assert SegmenterConfig(output_stride=8).aspp_rates() == (12, 24, 36)
    model = Segmenter(tiny(head="deeplab"))
    aspp = next(m for m in model.modules() if isinstance(m, ASPP))
    dilations = [b[0].dilation[0] for b in aspp.branches]
    assert dilations == [1, 2, 4, 6] and model.global_context
    assert (3, 1, 6) in model.head.rf_layers()
    wider = Segmenter(tiny(head="deeplab", aspp_rate=2))
    assert (theoretical_receptive_field(wider.receptive_field_layers())
            == theoretical_receptive_field(model.receptive_field_layers()) + 2 * 6 * 8)


def test_wrong_inputs_raise():
    model = Segmenter(tiny())
    with pytest.raises(ValueError, match="multiples of output_stride 8"):
        model(torch.randn(1, 3, 36, 36))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(head="pspnet"), "SegmenterConfig.head: must be one of"),
        (dict(upsample="nearest"), "SegmenterConfig.upsample: must be one of"),
        (dict(head="deeplab", output_stride=32), "SegmenterConfig.output_stride: deeplab"),
        (dict(resolution=36), "SegmenterConfig.resolution: 36 is not a multiple of output_stride 8"),
        (dict(aspp_rate=0), "SegmenterConfig.aspp_rate: must be positive"),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(FieldValueError, match=message):
        tiny(**overrides)


def test_mask_classes_count_the_background():
    assert tiny().mask_classes == 4
    assert SegmenterConfig().backbone().output_stride == 16


def test_the_auxiliary_loss_trains_only_and_can_be_switched_off():
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    model = Segmenter(tiny(head="unet"))
    train_loss = model(x, y)[1]
    model.eval()
    logits, eval_loss = model(x, y)
    assert eval_loss.item() == pytest.approx(F.cross_entropy(logits, y).item())  # main only
    assert train_loss.item() > 1.3 * eval_loss.item()  # + 0.4 x the auxiliary loss
    bare = Segmenter(tiny(head="unet", aux_loss=0.0))
    assert bare.aux is None and bare.num_params() < model.num_params()
