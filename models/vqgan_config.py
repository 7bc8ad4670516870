"""The architecture and losses of a :class:`~models.vqgan.VQGAN`, torch-free.

A VQGAN is a VQ-VAE (every :class:`~models.vqvae_config.VQVAEConfig` field means what it
means there) trained with two more losses: a perceptual distance and a PatchGAN
discriminator's hinge loss, switched on after ``disc_start`` steps. Kept apart from
:mod:`models.vqgan` so that a config file can be checked before torch loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.config_fields import (
    FieldValueError,
    check_choice,
    check_number,
    positive_ints,
    preset_values,
)
from models.vqvae_config import VQVAEConfig

__all__ = ["REC_LOSSES", "VQGANConfig", "VQGAN_PRESETS"]

REC_LOSSES = ("l1", "l2")

VQGAN_PRESETS: dict[str, dict[str, Any]] = {
    # CPU tests and smoke runs: the VQ-VAE's tiny preset, a 2-layer discriminator that starts
    # after 2 steps, and a random-feature perceptual net.
    "tiny": dict(hidden_channels=32, res_blocks=1, res_channels=8, codebook_size=32,
                 embedding_dim=8, disc_channels=16, disc_layers=2, disc_start=2),
    # taming-transformers' defaults at the VQ-VAE's base width.
    "base": {},
}


@dataclass
class VQGANConfig(VQVAEConfig):
    """VQ-VAE fields plus the GAN and perceptual terms; stored as a dict in checkpoints."""

    rec_loss: str = "l1"  # pixel term: taming-transformers uses L1 (sharper than L2)
    perceptual_weight: float = 1.0  # weight of the perceptual distance (taming: 1.0); 0 = off
    # EfficientNet checkpoint (ckpt.pt or run folder) whose features the perceptual distance
    # compares (a classifier trained on the image shards: no pretrained weights can be
    # downloaded); None = a fixed, seeded random-feature convnet (models.perceptual)
    perceptual_from: str | None = None
    disc_channels: int = 64  # first PatchGAN conv width (pix2pix / taming: 64)
    disc_layers: int = 3  # stride-2 conv layers of the PatchGAN (taming: 3, a 70x70 patch)
    disc_start: int = 2000  # training steps before the discriminator and its loss switch on
    disc_weight: float = 0.8  # times the adaptive weight (taming's ImageNet configs: 0.8)
    disc_lr: float = 2e-4  # Adam LR of the discriminator's own optimizer (constant)
    disc_beta1: float = 0.5  # GAN-standard Adam betas (taming: 0.5, 0.9)
    disc_beta2: float = 0.9
    # 0 < adaptive weight <= this: the ratio of gradient norms explodes when the GAN term's
    # gradient is tiny (taming clamps at 1e4)
    max_adaptive_weight: float = 1e4
    # evaluation: EfficientNet checkpoint for the Frechet distance of reconstructions vs
    # eval images (models.frechet); None = random features (comparable only within a run)
    fid_from: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "rec_loss", REC_LOSSES)
        positive_ints(self, ("disc_channels", "disc_layers"))
        positive_ints(self, ("disc_start",), low=0)
        for name in ("perceptual_weight", "disc_weight"):
            check_number(self, name)
        check_number(self, "disc_lr", low_open=True)
        check_number(self, "max_adaptive_weight", low_open=True)
        for name in ("disc_beta1", "disc_beta2"):
            check_number(self, name, high=1.0)
        for name in ("perceptual_from", "fid_from"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise FieldValueError("VQGANConfig", name, "must be a checkpoint URI or None")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> VQGANConfig:
        """A named configuration (``"tiny"``, ``"base"``) with ``overrides`` applied.

        Raises:
            ValueError: unknown preset name.
            TypeError: an override that is not a VQGANConfig field.
        """
        return cls(**preset_values(cls, VQGAN_PRESETS, name, overrides))
