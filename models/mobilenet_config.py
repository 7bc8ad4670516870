"""The architecture of a :class:`~models.mobilenet.MobileNetV2`, torch-free.

Kept apart from :mod:`models.mobilenet` so that a config file can be checked (and
:mod:`models.kinds` imported) before torch loads; :mod:`models.mobilenet` re-exports it.
The width multiplier and the output stride are arithmetic on this config, so they live
here too (:meth:`MobileNetV2Config.stages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.config_fields import (
    check_choice,
    check_number,
    check_types,
    positive_ints,
    preset_values,
)

__all__ = ["INVERTED_RESIDUALS", "MOBILENET_PRESETS", "MobileNetV2Config", "MobileStage",
           "OUTPUT_STRIDES", "make_divisible"]

# The paper's Table 2 (Sandler et al. 2018): (expansion t, out channels c, repeats n, stride s).
INVERTED_RESIDUALS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
OUTPUT_STRIDES = (8, 16, 32)  # input side / feature side of the last stage (32 = no dilation)
MOBILENET_PRESETS: dict[str, dict[str, Any]] = {
    # CPU tests and smoke runs: ~0.1M parameters, 32 px inputs, a step in milliseconds.
    "tiny": dict(width=0.25, resolution=32, last_channels=128, dropout=0.0),
    # The paper's ImageNet network, MobileNetV2 1.0 at 224 px (the class defaults; 3.5M params).
    "v2_100": {},
    # The paper's width multipliers 0.5 and 1.4 (1.4 at 224 px, as released).
    "v2_050": dict(width=0.5),
    "v2_140": dict(width=1.4),
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor``, never down by more than 10%.

    The rule of the reference implementation (TF-slim ``_make_divisible``), so that a
    width multiplier gives the released channel counts.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


@dataclass(frozen=True)
class MobileStage:
    """One stage after width scaling and output-stride dilation."""

    expand: int
    in_channels: int  # of the stage's first block
    out_channels: int
    repeats: int
    stride: int  # of the first block (1 where dilation replaced the stride)
    dilation: int  # of the depthwise convs of its blocks after the first
    first_dilation: int  # of the first block's depthwise conv
    feature_stride: int  # input side / this stage's output side


@dataclass
class MobileNetV2Config:
    """The architecture; ``MobileNetV2Config.preset("v2_100", num_classes=10)``."""

    num_classes: int = 1000  # ImageNet; the image dataset's label count fills it
    in_channels: int = 3  # RGB
    width: float = 1.0  # width multiplier alpha: every layer's channels x alpha (paper: 0.35..1.4)
    resolution: int = 224  # input side; the trainer resizes images to it on the device
    stem_channels: int = 32  # before width scaling
    # the 1x1 conv before pooling; scaled by width only when width > 1 (as the paper does:
    # a narrow net keeps a wide last layer)
    last_channels: int = 1280
    # input side / last feature side: 32 = the classifier; 16 or 8 dilate the last stages
    # instead of striding them (DeepLab's atrous backbone) for the segmentation heads
    output_stride: int = 32
    divisor: int = 8  # channel counts are multiples of this (hardware friendly)
    dropout: float = 0.2  # before the classifier, as in the reference
    bn_momentum: float = 0.1  # PyTorch convention (TF-slim's decay 0.997 ~ 0.003)
    bn_eps: float = 1e-5
    label_smoothing: float = 0.0  # of the training loss; the paper trained without it

    def __post_init__(self) -> None:
        check_types(self)
        positive_ints(self, ("num_classes", "in_channels", "resolution", "stem_channels",
                             "last_channels", "divisor"))
        check_number(self, "width", low_open=True)
        check_number(self, "bn_eps", low_open=True)
        for name in ("dropout", "label_smoothing", "bn_momentum"):
            check_number(self, name, high=1.0)
        check_choice(self, "output_stride", OUTPUT_STRIDES)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MobileNetV2Config:
        """A named configuration (:data:`MOBILENET_PRESETS`) with ``overrides`` applied.

        Raises:
            ValueError: an unknown preset name.
            TypeError: an override that is not a MobileNetV2Config field.
        """
        return cls(**preset_values(cls, MOBILENET_PRESETS, name, overrides))

    @property
    def stem_width(self) -> int:
        return make_divisible(self.stem_channels * self.width, self.divisor)

    @property
    def last_width(self) -> int:
        return make_divisible(self.last_channels * max(1.0, self.width), self.divisor)

    def stages(self) -> list[MobileStage]:
        """The seven stages after width scaling; strides beyond ``output_stride`` dilate.

        Once the feature stride reaches ``output_stride``, a stage that would stride keeps
        stride 1 and multiplies the dilation of every later depthwise conv by its stride
        instead, so the receptive field grows as if it had strided (its first block keeps
        the dilation before, as DeepLab's backbones do).
        """
        out, c_in, feature_stride, dilation = [], self.stem_width, 2, 1  # the stem strides by 2
        for expand, channels, repeats, stride in INVERTED_RESIDUALS:
            c_out = make_divisible(channels * self.width, self.divisor)
            first_dilation = dilation
            if stride > 1 and feature_stride >= self.output_stride:
                dilation, stride = dilation * stride, 1
            else:
                feature_stride *= stride
            out.append(MobileStage(expand, c_in, c_out, repeats, stride, dilation,
                                   first_dilation, feature_stride))
            c_in = c_out
        return out
