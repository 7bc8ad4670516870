"""The architecture and training recipe of a :class:`~models.sam.SAM`, torch-free.

Kept apart from :mod:`models.sam` so that a config file can be checked (and
:mod:`models.kinds` imported) before torch loads. :mod:`models.sam` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.config_fields import (
    FieldValueError,
    check_number,
    check_types,
    positive_ints,
    preset_values,
)

__all__ = ["SAMConfig", "SAM_PRESETS"]

SAM_PRESETS: dict[str, dict[str, Any]] = {
    # CPU tests and smoke runs: 32 px images, an 8x8 token grid, 80k parameters.
    "tiny": dict(image_size=32, patch_size=4, encoder_dim=32, encoder_depth=2, encoder_heads=2,
                 prompt_dim=32, decoder_heads=2, decoder_mlp_dim=64, iou_head_hidden=32),
    # The sample images (shapes of 32-64 px): 64 px in, 16x16 tokens, full-size masks (4.0M).
    "small": {},
    # 128 px in, patch 8: the same 16x16 tokens over twice the side, a wider encoder (19M).
    "base": dict(image_size=128, patch_size=8, encoder_dim=384, encoder_depth=8, encoder_heads=6,
                 prompt_dim=256, decoder_heads=8, decoder_mlp_dim=2048, iou_head_hidden=256),
}


@dataclass
class SAMConfig:
    """Image encoder, prompt encoder and mask decoder sizes, and the loss weights.

    Stored as a dict in checkpoints (``SAMConfig(**d)`` rebuilds it).
    """

    image_size: int = 64  # input side; the task resizes images to it on the device
    in_channels: int = 3  # RGB
    patch_size: int = 4  # ViT patch: a 64 px image -> 16x16 tokens (SAM: 16 on 1024 px)
    encoder_dim: int = 192  # ViT width (SAM ViT-B: 768)
    encoder_depth: int = 6  # ViT blocks, global attention (the grid is small: no windows)
    encoder_heads: int = 3  # ViT heads (head size 64, as ViT-B's)
    mlp_ratio: float = 4.0  # ViT MLP hidden = mlp_ratio x encoder_dim
    prompt_dim: int = 128  # C: the image embedding, prompt tokens and decoder width (SAM: 256)
    decoder_depth: int = 2  # two-way attention blocks, as SAM's
    decoder_heads: int = 8  # as SAM's
    decoder_mlp_dim: int = 1024  # MLP hidden of a two-way block (SAM: 2048 at C=256)
    attention_downsample: int = 2  # cross attention runs at C / 2 wide, as SAM's
    multimask: int = 3  # masks for an ambiguous prompt (whole, part, subpart), + 1 single mask
    iou_head_depth: int = 3  # MLP layers of the IoU prediction head
    iou_head_hidden: int = 256  # its hidden width, as SAM's
    pe_scale: float = 1.0  # std of the random Fourier features of the prompt positions
    # --- training recipe (SAM section 3 and appendix A) ---
    focal_weight: float = 20.0  # focal : dice = 20 : 1, as SAM
    dice_weight: float = 1.0
    iou_weight: float = 1.0  # MSE of the predicted IoU against the mask's true IoU
    focal_alpha: float = 0.25  # focal loss (Lin et al. 2017) defaults
    focal_gamma: float = 2.0
    negative_points: int = 2  # a point prompt holds 1 positive and 0..this many negatives
    box_noise: float = 0.1  # box jitter std, as a fraction of the box's side (SAM: 10%)
    box_noise_max: float = 20.0  # ... clamped at this many pixels (SAM: 20)

    def __post_init__(self) -> None:
        check_types(self)
        positive_ints(self, ("image_size", "in_channels", "patch_size", "encoder_dim",
                             "encoder_depth", "encoder_heads", "prompt_dim", "decoder_depth",
                             "decoder_heads", "decoder_mlp_dim", "attention_downsample",
                             "multimask", "iou_head_depth", "iou_head_hidden"))
        positive_ints(self, ("negative_points",), low=0)
        for name in ("mlp_ratio", "pe_scale"):
            check_number(self, name, low_open=True)
        for name in ("focal_weight", "dice_weight", "iou_weight", "focal_gamma", "box_noise",
                     "box_noise_max"):
            check_number(self, name)
        check_number(self, "focal_alpha", high=1.0, high_open=False)
        if self.image_size % self.patch_size:
            raise FieldValueError("SAMConfig", "patch_size", f"must divide image_size "
                                  f"{self.image_size}, got {self.patch_size}")
        if self.encoder_dim % self.encoder_heads:
            raise FieldValueError("SAMConfig", "encoder_heads", f"must divide encoder_dim "
                                  f"{self.encoder_dim}, got {self.encoder_heads}")
        if self.prompt_dim % 16:  # the upscaler goes to C/8; the PE needs C/2 even
            raise FieldValueError("SAMConfig", "prompt_dim", f"must be a multiple of 16, got "
                                  f"{self.prompt_dim}")
        inner = self.prompt_dim // self.attention_downsample
        if self.prompt_dim % self.attention_downsample or inner % self.decoder_heads:
            raise FieldValueError("SAMConfig", "decoder_heads", f"must divide prompt_dim / "
                                  f"attention_downsample = {self.prompt_dim} / "
                                  f"{self.attention_downsample}, got {self.decoder_heads}")

    @property
    def grid(self) -> int:
        """Tokens along each side of the image embedding."""
        return self.image_size // self.patch_size

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SAMConfig:
        """A named configuration (``"tiny"``, ``"small"``, ``"base"``) with ``overrides``.

        Raises:
            ValueError: unknown preset name.
            TypeError: an override that is not a SAMConfig field.
        """
        return cls(**preset_values(cls, SAM_PRESETS, name, overrides))
