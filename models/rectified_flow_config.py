"""The DiT and objective of a :class:`~models.rectified_flow.RectifiedFlow`, torch-free.

SD3-lite: a DiT (Peebles & Xie 2023) with adaLN-Zero, 2D sin-cos positions and QK
normalisation predicts the velocity of the straight path x_t = (1 - t) x_0 + t eps
(rectified flow, Liu et al. 2022); timesteps are drawn logit-normal (Esser et al. 2024,
the SD3 paper) or uniform; classes condition it, dropped with ``class_dropout`` so that
classifier-free guidance works. ``latent_from`` trains it on an autoencoder's latents
instead of pixels; ``reflow_from`` makes it a 2-rectified flow of a trained one.
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

__all__ = ["RECTIFIED_FLOW_PRESETS", "RectifiedFlowConfig", "TIMESTEP_SAMPLING"]

TIMESTEP_SAMPLING = ("logit_normal", "uniform")

RECTIFIED_FLOW_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(image_size=16, patch_size=2, dim=64, depth=2, n_head=2, sample_steps=4,
                 reflow_steps=4),  # CPU tests: 64 tokens of width 64
    "small": dict(dim=384, depth=12, n_head=6),  # DiT-S/2
    "base": dict(dim=768, depth=12, n_head=12),  # DiT-B/2
}


@dataclass
class RectifiedFlowConfig:
    """The architecture; stored as a dict in checkpoints."""

    image_size: int = 32  # pixel side the task resizes images to
    in_channels: int = 3  # RGB pixels (with latent_from: the autoencoder's input channels)
    # vae / vqvae / vqgan checkpoint (ckpt.pt or run folder): the DiT models its latents
    # (VAE: the posterior mean; VQ: the quantized code vectors), frozen, decoded for samples;
    # None = pixels
    latent_from: str | None = None
    patch_size: int = 2  # p x p patches per token (DiT-*/2)
    dim: int = 384  # token width
    depth: int = 12  # DiT blocks
    n_head: int = 6
    mlp_ratio: float = 4.0
    qk_norm: bool = True  # RMS-normalise queries and keys per head (SD3: stabler at bf16)
    num_classes: int = 0  # class conditioning; 0 = unconditional (the image labels fill it)
    class_dropout: float = 0.1  # labels dropped to the null class: CFG (DiT: 0.1)
    timesteps: str = "logit_normal"  # SD3's logit-normal (mean, std) or uniform t in (0, 1)
    logit_mean: float = 0.0  # SD3's best: m = 0, s = 1
    logit_std: float = 1.0
    sample_steps: int = 16  # Euler steps of the samples the evaluation scores
    guidance: float = 1.5  # CFG scale of those samples; 1 = the conditional velocity alone
    # 1-RF checkpoint of the same architecture: this run is its reflow (2-RF), trained on
    # (noise, teacher sample) pairs and started from the teacher's weights. For a student
    # meant for one or two steps, set timesteps "uniform" (the Rectified Flow paper's reflow):
    # logit-normal rarely draws t near 1, the only t a one-step sample uses (BENCHMARKS.md)
    reflow_from: str | None = None
    reflow_steps: int = 32  # teacher Euler steps per pair
    # evaluation: EfficientNet checkpoint for the Frechet distance (models.frechet);
    # None = seeded random features
    fid_from: str | None = None

    def __post_init__(self) -> None:
        check_types(self)
        positive_ints(self, ("image_size", "in_channels", "patch_size", "dim", "depth", "n_head",
                             "sample_steps", "reflow_steps"))
        positive_ints(self, ("num_classes",), low=0)
        check_number(self, "mlp_ratio", low_open=True)
        check_number(self, "class_dropout", high=1.0)
        check_number(self, "logit_std", low_open=True)
        check_number(self, "logit_mean", low=-float("inf"))
        check_number(self, "guidance")
        check_choice(self, "timesteps", TIMESTEP_SAMPLING)
        if self.dim % self.n_head or (self.dim // self.n_head) % 4:
            raise FieldValueError("RectifiedFlowConfig", "dim", f"must split into n_head "
                                  f"({self.n_head}) heads of a width divisible by 4, got {self.dim}")
        if self.dim % 4:
            raise FieldValueError("RectifiedFlowConfig", "dim", "must be divisible by 4 (2D "
                                  f"sin-cos positions), got {self.dim}")
        for name in ("latent_from", "reflow_from", "fid_from"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise FieldValueError("RectifiedFlowConfig", name,
                                      "must be a checkpoint URI or None")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> RectifiedFlowConfig:
        """A named configuration (``"tiny"``, ``"small"``, ``"base"``) with ``overrides``.

        Raises:
            ValueError: unknown preset name.
            TypeError: an override that is not a RectifiedFlowConfig field.
        """
        return cls(**preset_values(cls, RECTIFIED_FLOW_PRESETS, name, overrides))
