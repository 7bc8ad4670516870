"""The architecture of a :class:`~models.vqvae.VQVAE`, torch-free.

Kept apart from :mod:`models.vqvae` so that a config file can be checked (and
:mod:`models.kinds` imported) before torch loads. :mod:`models.vqvae` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.config_fields import check_number, check_types, positive_ints, preset_values

__all__ = ["VQVAEConfig", "VQVAE_PRESETS"]

VQVAE_PRESETS: dict[str, dict[str, Any]] = {
    # CPU tests and smoke runs: a step on a batch of 32x32 images takes milliseconds.
    "tiny": dict(hidden_channels=32, res_blocks=1, res_channels=8, codebook_size=32,
                 embedding_dim=8),
    # The paper's ImageNet model at 128 channels (the class defaults).
    "base": {},
}


@dataclass
class VQVAEConfig:
    """The architecture; stored as a dict in checkpoints (``VQVAEConfig(**d)`` rebuilds it)."""

    in_channels: int = 3  # RGB
    hidden_channels: int = 128  # conv width of encoder and decoder (the paper uses 256)
    res_blocks: int = 2  # residual blocks on each side of the bottleneck, as in the paper
    res_channels: int = 32  # bottleneck width inside a residual block
    downsample: int = 2  # stride-2 convs: one code per 4x4 pixels, a 64x64 image -> 16x16 codes
    codebook_size: int = 512  # K, as in the paper's ImageNet model
    embedding_dim: int = 64  # D, width of one code vector
    commitment: float = 0.25  # beta: pulls z_e towards its code (the paper found 0.1-2.0 robust)
    decay: float = 0.99  # EMA decay of the codebook statistics (paper appendix: 0.99)
    eps: float = 1e-5  # Laplace smoothing of the EMA cluster sizes
    restart_after: int = 100  # re-init codes unused for this many training batches; 0 = never

    def __post_init__(self) -> None:
        check_types(self)
        positive_ints(self, ("in_channels", "hidden_channels", "res_channels", "codebook_size",
                             "embedding_dim"))
        positive_ints(self, ("res_blocks", "downsample", "restart_after"), low=0)
        check_number(self, "decay", high=1.0)
        check_number(self, "eps", low_open=True)
        check_number(self, "commitment")

    @property
    def factor(self) -> int:
        """Pixels per code along each side."""
        return 2**self.downsample

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> VQVAEConfig:
        """A named configuration (``"tiny"``, ``"base"``) with ``overrides`` applied.

        Raises:
            ValueError: unknown preset name.
            TypeError: an override that is not a VQVAEConfig field.
        """
        return cls(**preset_values(cls, VQVAE_PRESETS, name, overrides))
