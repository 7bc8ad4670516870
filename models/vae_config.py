"""The architecture and objective of a :class:`~models.vae.VAE`, torch-free.

``latent: gaussian`` is Kingma & Welling's VAE (a diagonal Gaussian posterior and the
reparameterisation z = mu + sigma * eps); ``latent: gumbel`` puts a categorical variable of
``categories`` classes at each of ``latent_channels`` places per latent position, sampled
with the Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017) at a temperature that
anneals from ``tau_start`` to ``tau_min``; ``straight_through`` uses the hard one-hot in
the forward pass and the soft sample's gradient.
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

__all__ = ["LATENTS", "VAEConfig", "VAE_PRESETS"]

LATENTS = ("gaussian", "gumbel")

VAE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_channels=32, res_blocks=1, latent_channels=4, categories=8,
                 anneal_steps=50),  # CPU tests: milliseconds a step at 32x32
    "base": {},
}


@dataclass
class VAEConfig:
    """The architecture; stored as a dict in checkpoints (``VAEConfig(**d)`` rebuilds it)."""

    latent: str = "gaussian"  # "gaussian" (reparameterised) or "gumbel" (categorical)
    in_channels: int = 3  # RGB
    hidden_channels: int = 128  # conv width of encoder and decoder
    res_blocks: int = 2  # residual blocks on each side of the latent
    downsample: int = 2  # stride-2 convs: a 32x32 image -> an 8x8 latent grid
    latent_channels: int = 8  # gaussian: channels of z; gumbel: categorical variables per place
    categories: int = 16  # gumbel: classes of each categorical variable
    # decoder likelihood N(x_hat, sigma^2) on the [-1, 1] scale: the ELBO's reconstruction
    # term is sum (x - x_hat)^2 / (2 sigma^2) + const; smaller sigma = sharper, less KL
    obs_sigma: float = 0.1
    beta: float = 1.0  # KL weight (1 = the ELBO; beta-VAE otherwise)
    tau_start: float = 1.0  # gumbel: temperature at step 0
    tau_min: float = 0.5  # gumbel: floor of the annealed temperature (Jang et al.: 0.5)
    anneal_steps: int = 2000  # gumbel: steps over which tau decays exponentially to tau_min
    straight_through: bool = False  # gumbel: hard one-hot forward, soft gradient (ST estimator)
    # evaluation: EfficientNet checkpoint for the Frechet distance (models.frechet);
    # None = seeded random features
    fid_from: str | None = None

    def __post_init__(self) -> None:
        check_types(self)
        check_choice(self, "latent", LATENTS)
        positive_ints(self, ("in_channels", "hidden_channels", "latent_channels"))
        positive_ints(self, ("res_blocks", "downsample", "anneal_steps"), low=0)
        positive_ints(self, ("categories",), low=2)
        for name in ("obs_sigma", "tau_start", "tau_min"):
            check_number(self, name, low_open=True)
        check_number(self, "beta")
        if self.tau_min > self.tau_start:
            raise FieldValueError("VAEConfig", "tau_min", f"must be <= tau_start "
                                  f"({self.tau_start}), got {self.tau_min}")
        if self.fid_from is not None and not self.fid_from.strip():
            raise FieldValueError("VAEConfig", "fid_from", "must be a checkpoint URI or None")

    @property
    def factor(self) -> int:
        """Pixels per latent position along each side."""
        return 2**self.downsample

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> VAEConfig:
        """A named configuration (``"tiny"``, ``"base"``) with ``overrides`` applied.

        Raises:
            ValueError: unknown preset name.
            TypeError: an override that is not a VAEConfig field.
        """
        return cls(**preset_values(cls, VAE_PRESETS, name, overrides))
