"""A convolutional VAE with a Gaussian or a Gumbel-softmax categorical latent, one file.

    x (B, C, H, W) in [-1, 1] -> Encoder (stride-2 convs + residual stack) -> q(z | x)
      gaussian: (mu, log sigma^2) (B, Z, h, w);  z = mu + sigma * eps, eps ~ N(0, I)
      gumbel:   logits (B, Z, K, h, w);          z = softmax((logits + g) / tau), g ~ Gumbel(0, 1)
                (straight-through: the one-hot argmax forward, the soft sample's gradient),
                embedded by a learned 1x1 conv from Z*K one-hots to the decoder's width
      -> Decoder -> x_hat;  p(x | z) = N(x_hat, obs_sigma^2 I)

    ELBO = E_q[log p(x | z)] - KL(q(z | x) || p(z))     (nats per image)
      gaussian KL to N(0, I): 0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2)
      gumbel KL to uniform:   sum_k q_k log(q_k * K), per categorical variable
    loss = (-rec_ll + beta * KL) / (C*H*W)             (per dimension: scale-free for Adam)

The Gumbel temperature anneals exponentially per training step, tau(s) = max(tau_min,
tau_start * exp(-s * ln(tau_start / tau_min) / anneal_steps)), reaching tau_min at
``anneal_steps``; the step count is a buffer, so a resumed run continues the schedule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.vae_config import VAEConfig
from models.vqvae import ResBlock, psnr

__all__ = ["VAE", "VAEConfig", "gaussian_kl", "gumbel_softmax", "categorical_kl"]

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(0, 1)) summed over all but the batch dim -> (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def categorical_kl(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """KL(softmax(logits) || uniform) over classes on ``dim``, summed over all but batch -> (B,)."""
    logq = F.log_softmax(logits, dim=dim)
    kl = (logq.exp() * (logq + math.log(logits.shape[dim]))).sum(dim)
    return kl.flatten(1).sum(1)


def gumbel_softmax(logits: torch.Tensor, tau: float | torch.Tensor, *, dim: int, hard: bool,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A relaxed one-hot sample of softmax(logits) along ``dim`` at temperature ``tau``.

    ``hard``: the argmax one-hot in value with the soft sample's gradient
    (straight-through). Same shape as ``logits``.
    """
    u = torch.rand(logits.shape, device=logits.device, dtype=logits.dtype, generator=generator)
    g = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))  # Gumbel(0, 1)
    soft = F.softmax((logits + g) / tau, dim=dim)
    if not hard:
        return soft
    onehot = F.one_hot(soft.argmax(dim), logits.shape[dim]).movedim(-1, dim).to(soft.dtype)
    return onehot + soft - soft.detach()


def _encoder(cfg: VAEConfig, out_channels: int) -> nn.Sequential:
    c, layers = cfg.in_channels, []
    for _ in range(cfg.downsample):
        layers += [nn.Conv2d(c, cfg.hidden_channels, 4, stride=2, padding=1), nn.SiLU()]
        c = cfg.hidden_channels
    layers.append(nn.Conv2d(c, cfg.hidden_channels, 3, padding=1))
    layers += [ResBlock(cfg.hidden_channels, cfg.hidden_channels // 2)
               for _ in range(cfg.res_blocks)]
    layers += [nn.SiLU(), nn.Conv2d(cfg.hidden_channels, out_channels, 1)]
    return nn.Sequential(*layers)


def _decoder(cfg: VAEConfig, in_channels: int) -> nn.Sequential:
    hid = cfg.hidden_channels
    layers: list[nn.Module] = [nn.Conv2d(in_channels, hid, 3, padding=1)]
    layers += [ResBlock(hid, hid // 2) for _ in range(cfg.res_blocks)]
    layers.append(nn.SiLU())
    for i in range(cfg.downsample):
        last = i == cfg.downsample - 1
        layers.append(nn.ConvTranspose2d(hid, cfg.in_channels if last else hid, 4, 2, 1))
        if not last:
            layers.append(nn.SiLU())
    if cfg.downsample == 0:
        layers.append(nn.Conv2d(hid, cfg.in_channels, 3, padding=1))
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Encoder, reparameterised latent (Gaussian or Gumbel-softmax), Gaussian decoder."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = cfg = config
        Z, K = cfg.latent_channels, cfg.categories
        gumbel = cfg.latent == "gumbel"
        self.encoder = _encoder(cfg, Z * K if gumbel else 2 * Z)
        # gumbel: one-hots (B, Z*K, h, w) -> (B, hid, h, w), a learned codebook per variable
        self.embed = nn.Conv2d(Z * K, cfg.hidden_channels, 1, bias=False) if gumbel else None
        self.decoder = _decoder(cfg, cfg.hidden_channels if gumbel else Z)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def tau(self) -> torch.Tensor:
        """The Gumbel-softmax temperature at the current training step, a 0-d float32 tensor
        computed on the device from the step buffer (no host sync, no recompiles)."""
        cfg = self.config
        if cfg.anneal_steps == 0:
            return torch.full((), cfg.tau_min, device=self.steps_done.device)
        rate = math.log(cfg.tau_start / cfg.tau_min) / cfg.anneal_steps
        tau = cfg.tau_start * torch.exp(-rate * self.steps_done.float())
        return tau.clamp_min(cfg.tau_min)

    def _check(self, x: torch.Tensor) -> None:
        f, c = self.config.factor, self.config.in_channels
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"expected images (B, {c}, H, W) with H and W divisible by {f}, "
                             f"got {tuple(x.shape)}")

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        """q(z | x)'s parameters: gaussian (B, 2, Z, h, w) = (mu, logvar); gumbel logits
        (B, Z, K, h, w); float32."""
        self._check(x)
        h = self.encoder(x).float()  # (B, 2Z or Z*K, h, w)
        B, _, hh, ww = h.shape
        Z, K = self.config.latent_channels, self.config.categories
        if self.config.latent == "gaussian":
            return h.view(B, 2, Z, hh, ww)
        return h.view(B, Z, K, hh, ww)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x_hat (B, C, H, W) from a latent: gaussian (B, Z, h, w); gumbel one-hots
        (B, Z, K, h, w) (relaxed or hard)."""
        if self.config.latent == "gumbel":
            z = self.embed(z.flatten(1, 2).to(self.embed.weight.dtype))  # (B, hid, h, w)
        return self.decoder(z)

    def forward(self, x: torch.Tensor, tau: float | torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One reparameterised pass; counts a training step when in training mode.

        Args:
            tau: the Gumbel temperature; None = :meth:`tau` (the annealed one).

        Returns:
            ``(x_hat, loss, stats)``: the per-dimension negative ELBO (with ``beta``);
            detached ``elbo`` (nats/image, beta = 1), ``rec_nll``, ``kl``, ``mse``, ``psnr``
            and, for gumbel, ``tau``.
        """
        cfg = self.config
        q = self.posterior(x)
        if cfg.latent == "gaussian":
            mu, logvar = q[:, 0], q[:, 1].clamp(-30.0, 20.0)  # (B, Z, h, w)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            kl = gaussian_kl(mu, logvar)  # (B,)
        else:
            tau = self.tau() if tau is None else tau
            z = gumbel_softmax(q, tau, dim=2, hard=cfg.straight_through)  # (B, Z, K, h, w)
            kl = categorical_kl(q, dim=2)
        x_hat = self.decode(z)
        rec_nll = self.rec_nll(x_hat, x)  # (B,)
        dims = x[0].numel()
        loss = (rec_nll + cfg.beta * kl).mean() / dims
        mse = (x_hat.float() - x.float()).pow(2).mean().detach()
        stats = {"elbo": -(rec_nll + kl).mean().detach(), "rec_nll": rec_nll.mean().detach(),
                 "kl": kl.mean().detach(), "mse": mse, "psnr": psnr(mse)}
        if cfg.latent == "gumbel":
            stats["tau"] = torch.as_tensor(tau, device=x.device).detach().float()
        if self.training:
            self.steps_done.add_(1)
        return x_hat, loss, stats

    def rec_nll(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log N(x | x_hat, obs_sigma^2) summed per image -> (B,), float32."""
        s = self.config.obs_sigma
        sq = (x.float() - x_hat.float()).pow(2).flatten(1).sum(1)
        return 0.5 * sq / s**2 + x[0].numel() * (math.log(s) + 0.5 * LOG_2PI)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic reconstruction: the posterior mean (gaussian) or mode (gumbel)."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic latent of ``x``: mu (B, Z, h, w) or the one-hot mode (B, Z, K, h, w)."""
        q = self.posterior(x)
        if self.config.latent == "gaussian":
            return q[:, 0]
        return F.one_hot(q.argmax(2), self.config.categories).movedim(-1, 2).float()

    @torch.no_grad()
    def sample(self, n: int, *, latent_hw: tuple[int, int],
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images from the prior: N(0, I), or uniform categories (one-hot)."""
        device = next(self.parameters()).device
        Z, K = self.config.latent_channels, self.config.categories
        h, w = latent_hw
        if self.config.latent == "gaussian":
            z = torch.randn((n, Z, h, w), device=device, generator=generator)
        else:
            idx = torch.randint(0, K, (n, Z, h, w), device=device, generator=generator)
            z = F.one_hot(idx, K).movedim(-1, 2).float()  # (n, Z, K, h, w)
        return self.decode(z)
