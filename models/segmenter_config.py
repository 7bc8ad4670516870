"""The architecture of a :class:`~models.segmenter.Segmenter`, torch-free.

Kept apart from :mod:`models.segmenter` so that a config file can be checked (and
:mod:`models.kinds` imported) before torch loads; :mod:`models.segmenter` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.config_fields import (
    FieldValueError,
    check_choice,
    check_number,
    check_types,
    positive_ints,
    preset_values,
)
from models.mobilenet_config import MobileNetV2Config

__all__ = ["HEADS", "SEGMENTER_PRESETS", "SegmenterConfig", "UPSAMPLES"]

HEADS = ("fcn", "unet", "deeplab")
UPSAMPLES = ("bilinear", "transposed", "pixel_shuffle")
SEGMENTER_PRESETS: dict[str, dict[str, Any]] = {
    # CPU tests and smoke runs: a 0.25-wide backbone at output stride 8 on the 32 px sample
    # images (a 4x4 deepest grid), ASPP rates 1, 2, 3 (x2 at stride 8) that still fit it.
    "tiny": dict(width=0.25, output_stride=8, decoder_channels=32, aspp_rate=1, dropout=0.0),
    # DeepLab-v3's setting on a MobileNetV2 1.0 backbone (the class defaults).
    "base": {},
}


@dataclass
class SegmenterConfig:
    """The architecture; ``SegmenterConfig.preset("tiny", head="unet", num_classes=3)``.

    The net predicts ``num_classes + 1`` classes per pixel: 0 is the background and
    class ``c >= 1`` is label id ``c - 1``, the mask convention of the image dataset.
    """

    num_classes: int = 20  # object classes without the background (PASCAL VOC: 20); data fills it
    in_channels: int = 3  # RGB
    head: str = "deeplab"  # fcn (FCN-8s skips) | unet (decoder at every stride) | deeplab (ASPP)
    # bilinear (fixed) | transposed (learned, bilinear init) | pixel_shuffle (learned, ICNR init)
    upsample: str = "bilinear"
    # input side / deepest feature side; 16 or 8 dilate the backbone's last stages (atrous);
    # deeplab takes 8 or 16 (its paper's values), fcn and unet also 32
    output_stride: int = 16
    width: float = 1.0  # MobileNetV2 width multiplier of the backbone
    # deeplab: the ASPP branches' width (the paper's 256); fcn: the conv before the scores;
    # unet: the deepest decoder level's width, halved at each finer level (at least 8)
    decoder_channels: int = 256
    # ASPP atrous rates: (1, 2, 3) x this at output stride 16, twice that at 8 (the paper's
    # (6, 12, 18) and (12, 24, 36)); small images want small rates (tiny: 1)
    aspp_rate: int = 6
    dropout: float = 0.1  # before the pixel classifier (DeepLab-v3's 0.1)
    # weight of an auxiliary pixel classifier on the deepest backbone feature (training only;
    # torchvision's segmentation recipe 0.5, PSPNet 0.4); 0 = none. It makes the deep path
    # learn the classes even where skips make the boundaries easy (unet stalls without it)
    aux_loss: float = 0.4
    resolution: int | None = None  # side the trainer resizes to; None = as stored in the shards
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        check_types(self)
        positive_ints(self, ("num_classes", "in_channels", "decoder_channels", "aspp_rate",
                             "resolution"))
        check_choice(self, "head", HEADS)
        check_choice(self, "upsample", UPSAMPLES)
        check_choice(self, "output_stride", (8, 16, 32))
        if self.head == "deeplab" and self.output_stride == 32:
            raise FieldValueError("SegmenterConfig", "output_stride", "deeplab's ASPP runs at "
                                  "output stride 8 or 16 (atrous backbone), got 32")
        check_number(self, "width", low_open=True)
        check_number(self, "bn_eps", low_open=True)
        for name in ("dropout", "bn_momentum"):
            check_number(self, name, high=1.0)
        check_number(self, "aux_loss")
        if self.resolution is not None and self.resolution % self.output_stride:
            raise FieldValueError("SegmenterConfig", "resolution", f"{self.resolution} is not "
                                  f"a multiple of output_stride {self.output_stride}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SegmenterConfig:
        """A named configuration (:data:`SEGMENTER_PRESETS`) with ``overrides`` applied.

        Raises:
            ValueError: an unknown preset name.
            TypeError: an override that is not a SegmenterConfig field.
        """
        return cls(**preset_values(cls, SEGMENTER_PRESETS, name, overrides))

    @property
    def mask_classes(self) -> int:
        """Classes per pixel: the background and ``num_classes`` objects."""
        return self.num_classes + 1

    def backbone(self) -> MobileNetV2Config:
        """The MobileNetV2 backbone's config (its classifier fields unused)."""
        return MobileNetV2Config(in_channels=self.in_channels, width=self.width,
                                 output_stride=self.output_stride, bn_momentum=self.bn_momentum,
                                 bn_eps=self.bn_eps, dropout=0.0)

    def aspp_rates(self) -> tuple[int, int, int]:
        """The three atrous rates of the ASPP's 3x3 branches."""
        scale = self.aspp_rate * (2 if self.output_stride == 8 else 1)
        return (scale, 2 * scale, 3 * scale)
