"""The architecture and training recipe of a :class:`~models.thundernet.ThunderNet`, torch-free.

Kept apart from :mod:`models.thundernet` so that a config file can be checked (and
:mod:`models.kinds` imported) before torch loads. :mod:`models.thundernet` re-exports it.
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

__all__ = ["ANCHOR_RATIOS", "SNET", "THUNDERNET_PRESETS", "SNetSpec", "ThunderNetConfig"]

# ThunderNet's five anchor aspect ratios (height / width): {1:2, 3:4, 1:1, 4:3, 2:1}.
ANCHOR_RATIOS = (0.5, 0.75, 1.0, 4.0 / 3.0, 2.0)


@dataclass(frozen=True)
class SNetSpec:
    """An SNet: conv1 width, the three stages' widths and blocks, conv5 width (0 = none)."""

    conv1: int
    stages: tuple[int, int, int]
    repeats: tuple[int, int, int]
    conv5: int


# The paper's Table 1 (SNet49 keeps a 512-wide conv5; 146 and 535 drop it for wider stages),
# and a CPU-sized one for tests.
SNET = {
    "snet49": SNetSpec(24, (60, 120, 240), (4, 8, 4), 512),
    "snet146": SNetSpec(24, (132, 264, 528), (4, 8, 4), 0),
    "snet535": SNetSpec(48, (248, 496, 992), (4, 8, 4), 0),
    "snet_tiny": SNetSpec(8, (16, 32, 64), (1, 2, 1), 0),
}

THUNDERNET_PRESETS: dict[str, dict[str, Any]] = {
    # CPU tests and smoke runs: 64 px images, a 4x4 thin feature map, ~0.1M parameters.
    "tiny": dict(backbone="snet_tiny", image_size=64, ps_channels=2, rpn_channels=32,
                 fc_dim=64, anchor_base=8.0, anchor_octaves=4, pre_nms_train=200,
                 post_nms_train=64, pre_nms_test=100, post_nms_test=32, rcnn_batch=32,
                 rpn_batch=64),
    # The paper's ThunderNet with SNet146 at 320 px (the class defaults).
    "snet146": {},
    "snet49": dict(backbone="snet49"),
    "snet535": dict(backbone="snet535"),
}


@dataclass
class ThunderNetConfig:
    """Backbone, CEM, RPN, spatial attention, PS-RoIAlign head; anchors, sampling, NMS.

    Stored as a dict in checkpoints (``ThunderNetConfig(**d)`` rebuilds it).
    """

    num_classes: int = 80  # object classes, background excluded (COCO); the data fills it in
    in_channels: int = 3  # RGB
    image_size: int = 320  # input side (the paper's 320 x 320); a multiple of 32
    backbone: str = "snet146"  # a key of SNET
    ps_channels: int = 5  # alpha: the thin feature map has alpha x 7 x 7 = 245 channels
    roi_size: int = 7  # p: PS-RoIAlign bins per side
    cem: bool = True  # Context Enhancement Module (C4 + upsampled C5 + global); off: C4 alone
    spatial_attention: bool = True  # SAM: the RPN's features re-weight the thin map
    rpn_channels: int = 256  # the RPN's 5x5 depthwise + 1x1 conv width
    anchor_base: float = 32.0  # smallest anchor side (the paper: 32 .. 512 at 320 px)
    anchor_octaves: int = 5  # anchor sides anchor_base x 2^k, k < this; x 5 aspect ratios
    rpn_fg_iou: float = 0.7  # anchor IoU >= this: object (and every gt's best anchor)
    rpn_bg_iou: float = 0.3  # anchor IoU < this: background; between: ignored
    rpn_batch: int = 256  # anchors sampled per image for the RPN loss
    rpn_positive_fraction: float = 0.5
    rpn_nms: float = 0.7  # IoU threshold of the proposals' NMS
    pre_nms_train: int = 2000  # top-scoring anchors per image into NMS (training)
    post_nms_train: int = 300  # proposals per image after NMS (training)
    pre_nms_test: int = 1000
    post_nms_test: int = 200  # the paper's 200 proposals at test time
    min_box_size: float = 1.0  # proposals and detections narrower than this (px) are dropped
    rcnn_batch: int = 128  # RoIs sampled per image for the R-CNN loss
    rcnn_positive_fraction: float = 0.25
    rcnn_fg_iou: float = 0.5  # RoI IoU >= this: the matched object's class; below: background
    fc_dim: int = 1024  # the R-CNN subnet's one fully connected layer
    sampling_ratio: int = 2  # PS-RoIAlign samples per bin and side
    score_threshold: float = 0.05  # detections scoring below are dropped
    nms_threshold: float = 0.5  # per-class NMS of the detections
    detections: int = 100  # kept per image (COCO's maxDets)
    ops: str = "auto"  # PS-RoIAlign/NMS: torchvision's when it runs, "torch", "torchvision"

    def __post_init__(self) -> None:
        check_types(self)
        positive_ints(self, ("num_classes", "in_channels", "image_size", "ps_channels",
                             "roi_size", "rpn_channels", "anchor_octaves", "rpn_batch",
                             "pre_nms_train", "post_nms_train", "pre_nms_test", "post_nms_test",
                             "rcnn_batch", "fc_dim", "sampling_ratio", "detections"))
        check_choice(self, "backbone", tuple(SNET))
        check_choice(self, "ops", ("auto", "torch", "torchvision"))
        check_number(self, "anchor_base", low_open=True)
        check_number(self, "min_box_size")
        for name in ("rpn_fg_iou", "rpn_bg_iou", "rpn_positive_fraction", "rpn_nms",
                     "rcnn_positive_fraction", "rcnn_fg_iou", "score_threshold",
                     "nms_threshold"):
            check_number(self, name, high=1.0, high_open=False)
        if self.rpn_bg_iou > self.rpn_fg_iou:
            raise FieldValueError("ThunderNetConfig", "rpn_bg_iou", f"must be <= rpn_fg_iou "
                                  f"{self.rpn_fg_iou}, got {self.rpn_bg_iou}")
        if self.image_size % 32:
            raise FieldValueError("ThunderNetConfig", "image_size", f"must be a multiple of 32 "
                                  f"(the backbone's stride), got {self.image_size}")

    @property
    def thin_channels(self) -> int:
        """Channels of the CEM's thin feature map: alpha x p x p (245)."""
        return self.ps_channels * self.roi_size ** 2

    @property
    def anchor_sizes(self) -> tuple[float, ...]:
        return tuple(self.anchor_base * 2 ** k for k in range(self.anchor_octaves))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ThunderNetConfig:
        """A named configuration (``"tiny"``, ``"snet146"``, ``"snet49"``, ``"snet535"``).

        Raises:
            ValueError: unknown preset name.
            TypeError: an override that is not a ThunderNetConfig field.
        """
        return cls(**preset_values(cls, THUNDERNET_PRESETS, name, overrides))
