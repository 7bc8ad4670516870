"""The architecture of an :class:`~models.efficientnet.EfficientNet`, torch-free.

Compound scaling (B0..B7, see :mod:`models.efficientnet`) is arithmetic on this config,
so it lives here with it; kept apart from the torch modules so that a config file can be
checked (and :mod:`models.kinds` imported) before torch loads. :mod:`models.efficientnet`
re-exports all of it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from models.config_fields import check_number, check_types, positive_ints

__all__ = ["BASE_STAGES", "COMPOUND", "EFFICIENTNET_PRESETS", "EfficientNetConfig", "StageSpec",
           "round_filters", "round_repeats"]

# B0's stages (the paper's Table 1): (expand ratio, out channels, repeats, stride, kernel).
BASE_STAGES = (
    (1, 16, 1, 1, 3),
    (6, 24, 2, 2, 3),
    (6, 40, 2, 2, 5),
    (6, 80, 3, 2, 3),
    (6, 112, 3, 1, 5),
    (6, 192, 4, 2, 5),
    (6, 320, 1, 1, 3),
)
# φ -> (width, depth, resolution, dropout), as released with the TF reference.
COMPOUND = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 300, 0.3),
    4: (1.4, 1.8, 380, 0.4),
    5: (1.6, 2.2, 456, 0.4),
    6: (1.8, 2.6, 528, 0.5),
    7: (2.0, 3.1, 600, 0.5),
}
# Preset names: the released B0..B7, and a CPU-sized network for tests and smoke runs.
EFFICIENTNET_PRESETS = tuple(f"b{phi}" for phi in COMPOUND) + ("tiny",)
_TINY = dict(width=0.25, depth=0.1, resolution=32)  # ~0.1M parameters: CPU tests


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width``, rounded to a multiple of ``divisor`` (never down > 10%)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Blocks of a stage scaled by ``depth``, rounded up."""
    return int(math.ceil(depth * repeats))


@dataclass(frozen=True)
class StageSpec:
    """One stage after scaling."""

    expand: int
    in_channels: int  # of the stage's first block
    out_channels: int
    repeats: int
    stride: int  # of the first block; the others use 1
    kernel: int


@dataclass
class EfficientNetConfig:
    """The architecture; ``EfficientNetConfig.preset("b2", num_classes=10)`` for a Bφ."""

    num_classes: int = 1000  # ImageNet
    in_channels: int = 3  # RGB
    width: float = 1.0  # channel multiplier w (B0: 1.0)
    depth: float = 1.0  # block-count multiplier d (B0: 1.0)
    resolution: int = 224  # input side r; the trainer resizes images to it on the device
    dropout: float = 0.2  # before the classifier; grows with φ in the released models
    drop_connect: float = 0.2  # stochastic depth rate of the last block (linear in block index)
    se_ratio: float = 0.25  # SE bottleneck = se_ratio x the block's input channels
    stem_channels: int = 32  # B0's, before width scaling
    head_channels: int = 1280  # B0's, before width scaling
    divisor: int = 8  # channel counts are multiples of this (hardware friendly)
    bn_momentum: float = 0.01  # PyTorch convention; TF's EMA decay 0.99
    bn_eps: float = 1e-3  # the TF reference's
    label_smoothing: float = 0.1  # of the training loss, as in the reference ImageNet recipe

    def __post_init__(self) -> None:
        check_types(self)
        positive_ints(self, ("num_classes", "in_channels", "resolution", "stem_channels",
                             "head_channels", "divisor"))
        for name in ("width", "depth", "bn_eps"):
            check_number(self, name, low_open=True)
        for name in ("dropout", "drop_connect", "label_smoothing", "bn_momentum"):
            check_number(self, name, high=1.0)
        check_number(self, "se_ratio", low_open=True, high=1.0, high_open=False)

    @classmethod
    def from_phi(cls, phi: int, **overrides) -> EfficientNetConfig:
        """The compound-scaled B``phi`` (0..7) with ``overrides`` applied.

        Raises:
            ValueError: ``phi`` is not in :data:`COMPOUND`.
        """
        if phi not in COMPOUND:
            raise ValueError(f"phi must be one of {sorted(COMPOUND)}, got {phi!r}")
        width, depth, resolution, dropout = COMPOUND[phi]
        base = dict(width=width, depth=depth, resolution=resolution, dropout=dropout)
        return cls(**{**base, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides) -> EfficientNetConfig:
        """``"b0"`` .. ``"b7"`` (see :meth:`from_phi`) or ``"tiny"``, with ``overrides``.

        Raises:
            ValueError: an unknown preset name.
            TypeError: an override that is not an EfficientNetConfig field.
        """
        if name not in EFFICIENTNET_PRESETS:
            raise ValueError(f"unknown EfficientNet preset {name!r}; use 'b0' .. 'b7' or 'tiny'")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown EfficientNetConfig fields {sorted(unknown)}")
        if name == "tiny":
            return cls(**{**_TINY, **overrides})
        return cls.from_phi(int(name[1]), **overrides)

    @property
    def stem_width(self) -> int:
        return round_filters(self.stem_channels, self.width, self.divisor)

    @property
    def head_width(self) -> int:
        return round_filters(self.head_channels, self.width, self.divisor)

    def stages(self) -> list[StageSpec]:
        """The seven stages after width and depth scaling."""
        out, c_in = [], self.stem_width
        for expand, channels, repeats, stride, kernel in BASE_STAGES:
            c_out = round_filters(channels, self.width, self.divisor)
            out.append(StageSpec(expand, c_in, c_out, round_repeats(repeats, self.depth), stride,
                                 kernel))
            c_in = c_out
        return out
