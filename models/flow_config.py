"""The architecture of a normalizing :class:`~models.flows.Flow`, torch-free.

``coupling: additive`` is NICE (Dinh et al. 2014): volume-preserving additive couplings
with the halves swapped between layers and a diagonal scaling layer at the end.
``coupling: affine`` is RealNVP/Glow (Dinh et al. 2016; Kingma & Dhariwal 2018): each
step is actnorm, an invertible 1x1 convolution and an affine coupling. Both use the
multi-scale architecture: squeeze (C, H, W) -> (4C, H/2, W/2), ``steps`` flow steps, then
half the channels leave as latents (every level but the last).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.config_fields import (
    FieldValueError,
    check_choice,
    check_types,
    positive_ints,
    preset_values,
)

__all__ = ["COUPLINGS", "FlowConfig", "FLOW_PRESETS"]

COUPLINGS = ("additive", "affine")

FLOW_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(levels=2, steps=2, hidden_channels=32, image_size=16),  # CPU tests
    "base": {},  # Glow's CIFAR-10 shape at a third of its depth and width
}


@dataclass
class FlowConfig:
    """The architecture; stored as a dict in checkpoints (``FlowConfig(**d)`` rebuilds it)."""

    coupling: str = "affine"  # "additive" (NICE) or "affine" (RealNVP/Glow)
    in_channels: int = 3  # RGB
    image_size: int = 32  # side the task resizes images to (the scaling layer is per dimension)
    levels: int = 3  # multi-scale levels (Glow's L); each squeezes, the side must divide 2**L
    steps: int = 8  # flow steps per level (Glow's K: 32; fewer train in minutes)
    hidden_channels: int = 256  # width of each coupling's conv net (Glow: 512)
    # evaluation: EfficientNet checkpoint for the Frechet distance of samples (models.frechet);
    # None = seeded random features
    fid_from: str | None = None

    def __post_init__(self) -> None:
        check_types(self)
        check_choice(self, "coupling", COUPLINGS)
        positive_ints(self, ("in_channels", "image_size", "levels", "steps", "hidden_channels"))
        if self.image_size % 2**self.levels:
            raise FieldValueError("FlowConfig", "image_size", f"must be divisible by 2**levels "
                                  f"= {2**self.levels}, got {self.image_size}")
        if self.fid_from is not None and not self.fid_from.strip():
            raise FieldValueError("FlowConfig", "fid_from", "must be a checkpoint URI or None")

    @property
    def dims(self) -> int:
        """D = C * H * W, the dimension of an image and of its latent."""
        return self.in_channels * self.image_size**2

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> FlowConfig:
        """A named configuration (``"tiny"``, ``"base"``) with ``overrides`` applied.

        Raises:
            ValueError: unknown preset name.
            TypeError: an override that is not a FlowConfig field.
        """
        return cls(**preset_values(cls, FLOW_PRESETS, name, overrides))
