"""Rectified flow with a DiT, SD3-lite (Liu et al. 2022; Esser et al. 2024), one file.

    data x_0 (pixels, or an autoencoder's latents / their std), noise eps ~ N(0, I)
    x_t = (1 - t) x_0 + t eps,   the straight path; its velocity dx_t/dt = eps - x_0
    loss = | v_theta(x_t, t, y) - (eps - x_0) |^2,   t ~ logit-normal(m, s) or U(0, 1)
    sample: integrate dx/dt = v from t = 1 (noise) to t = 0 (data): Euler with N steps, or
            the adaptive Dormand-Prince 5(4) solver of torchdiffeq
    guidance: v = v(x, t, none) + w (v(x, t, y) - v(x, t, none)); labels are dropped to
            "none" with probability class_dropout while training (classifier-free guidance)

Reflow (2-rectified flow): a trained 1-RF (the teacher) maps noise eps to x_0' by its
ODE; a student started from its weights and trained on the pairs (x_0', eps) learns
straighter paths, so few Euler steps (even one) land close to where many do.
Latent mode (``latent_from``): a frozen VAE / VQ-VAE / VQGAN encodes the images; the
latents are divided by their std, measured on the first training batch (SD's scale factor).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from models.dit import DiT
from models.rectified_flow_config import RectifiedFlowConfig

__all__ = ["LatentCodec", "RectifiedFlow", "RectifiedFlowConfig", "adaptive_sample",
           "euler_sample", "load_codec", "sample_timesteps", "student_config"]

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, t (B,)) -> v


def sample_timesteps(n: int, kind: str, *, mean: float = 0.0, std: float = 1.0,
                     device: torch.device | str = "cpu",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` times in (0, 1): ``logit_normal`` = sigmoid(N(mean, std^2)) (SD3: the middle
    of the path, where the velocity is hardest to predict, gets most samples) or ``uniform``."""
    if kind == "logit_normal":
        return torch.sigmoid(mean + std * torch.randn(n, device=device, generator=generator))
    if kind == "uniform":
        return torch.rand(n, device=device, generator=generator)
    raise ValueError(f"timestep sampling must be 'logit_normal' or 'uniform', got {kind!r}")


@torch.no_grad()
def euler_sample(velocity: Velocity, x1: torch.Tensor, steps: int) -> torch.Tensor:
    """Integrates dx/dt = velocity(x, t) from t = 1 to t = 0 in ``steps`` equal Euler steps.

    Exact for velocity fields constant along the path (a perfectly straight flow).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x, ts = x1, torch.linspace(1.0, 0.0, steps + 1, device=x1.device)
    for i in range(steps):
        t = ts[i].expand(x.shape[0])
        x = x + (ts[i + 1] - ts[i]) * velocity(x, t).to(x.dtype)
    return x


@torch.no_grad()
def adaptive_sample(velocity: Velocity, x1: torch.Tensor, *, rtol: float = 1e-5,
                    atol: float = 1e-5, method: str = "dopri5") -> tuple[torch.Tensor, int]:
    """Integrates dx/dt = velocity(x, t) from t = 1 to 0 with torchdiffeq's adaptive solver.

    Returns:
        ``(x_0, nfe)``: the end point and the number of velocity evaluations it took.

    Raises:
        ImportError: torchdiffeq is not installed (``pip install torchdiffeq``).
    """
    from torchdiffeq import odeint

    nfe = 0

    def f(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        return velocity(x, t.expand(x.shape[0])).to(x.dtype)

    ts = torch.tensor([1.0, 0.0], device=x1.device, dtype=x1.dtype)
    return odeint(f, x1, ts, rtol=rtol, atol=atol, method=method)[-1], nfe


class LatentCodec(nn.Module):
    """A frozen autoencoder as ``encode`` (images -> latents) and ``decode`` (latents -> images).

    VAE (Gaussian): the posterior mean; VQ-VAE / VQGAN: the quantized code vectors
    (decoded after snapping to the nearest code).
    """

    def __init__(self, kind: str, model: nn.Module, source: str) -> None:
        super().__init__()
        self.kind, self.model, self.source = kind, model, source
        cfg = model.config
        self.factor = cfg.factor
        self.channels = cfg.latent_channels if kind == "vae" else cfg.embedding_dim
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LatentCodec:
        return super().train(False)  # frozen: no EMA codebook updates, no sampling noise

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "vae":
            return self.model.encode(x).float()  # (B, Z, h, w)
        vq = getattr(self.model, "vq", self.model)
        idx = vq.encode(x)  # (B, h, w)
        return F.embedding(idx, vq.quantizer.embed).permute(0, 3, 1, 2).float()  # (B, D, h, w)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "vae":
            return self.model.decode(z.to(next(self.model.parameters()).dtype))
        vq = getattr(self.model, "vq", self.model)
        B, D, h, w = z.shape
        idx = vq.quantizer.nearest(z.float().permute(0, 2, 3, 1).reshape(-1, D)).view(B, h, w)
        return vq.decode_indices(idx)


def load_codec(uri: str) -> LatentCodec:
    """The :class:`LatentCodec` of a ``vae`` (Gaussian), ``vqvae`` or ``vqgan`` checkpoint.

    Raises:
        ValueError: another kind, or a Gumbel VAE (its latent is categorical).
    """
    from models.checkpoint import checkpoint_file, load_checkpoint

    path = checkpoint_file(uri)
    ckpt = load_checkpoint(path)
    kind = ckpt["extra"].get("kind")
    if kind == "vae":
        from models.vae import VAE, VAEConfig

        model = VAE(VAEConfig(**ckpt["model_config"]))
        if model.config.latent != "gaussian":
            raise ValueError(f"{path}: a {model.config.latent} VAE has a categorical latent; "
                             "latent rectified flow needs a gaussian VAE, a vqvae or a vqgan")
    elif kind == "vqvae":
        from models.vqvae import VQVAE, VQVAEConfig

        model = VQVAE(VQVAEConfig(**ckpt["model_config"]))
    elif kind == "vqgan":
        from models.vqgan import VQGAN, VQGANConfig

        model = VQGAN(VQGANConfig(**ckpt["model_config"]))
    else:
        raise ValueError(f"{path} holds a {kind!r} model; latent_from needs a vae, vqvae or "
                         "vqgan checkpoint")
    model.load_state_dict(ckpt["model"])
    return LatentCodec(kind, model, path)


# Fields that must agree between a reflow student and its teacher (the DiT and the data).
_ARCH = ("image_size", "in_channels", "latent_from", "patch_size", "dim", "depth", "n_head",
         "mlp_ratio", "qk_norm", "num_classes")


class RectifiedFlow(nn.Module):
    """A DiT velocity field on pixels or latents, its training loss and its samplers."""

    def __init__(self, config: RectifiedFlowConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.codec = load_codec(cfg.latent_from) if cfg.latent_from is not None else None
        channels = self.codec.channels if self.codec is not None else cfg.in_channels
        size = cfg.image_size // (self.codec.factor if self.codec is not None else 1)
        self.dit = DiT(channels=channels, size=size, patch=cfg.patch_size, dim=cfg.dim,
                       depth=cfg.depth, n_head=cfg.n_head, mlp_ratio=cfg.mlp_ratio,
                       qk_norm=cfg.qk_norm, num_classes=cfg.num_classes)
        self.shape = (channels, size, size)
        # latents / latent_scale have unit std; set from the first training batch (pixels: 1)
        self.register_buffer("latent_scale", torch.ones(()))
        self.register_buffer("scale_set", torch.tensor(self.codec is None))
        self._scale_ready: bool | None = None
        self.teacher = None
        if cfg.reflow_from is not None:
            self.teacher = self._load_teacher(cfg.reflow_from)

    def _load_teacher(self, uri: str) -> RectifiedFlow:
        from models.checkpoint import checkpoint_file, load_checkpoint

        path = checkpoint_file(uri)
        ckpt = load_checkpoint(path)
        if ckpt["extra"].get("kind") != "rectified_flow":
            raise ValueError(f"reflow_from: {path} holds a {ckpt['extra'].get('kind')!r} "
                             "model, not a rectified_flow")
        tcfg = RectifiedFlowConfig(**{**ckpt["model_config"], "reflow_from": None})
        diff = [f for f in _ARCH if getattr(tcfg, f) != getattr(self.config, f)]
        if diff:
            raise ValueError(f"reflow_from: {path} differs from this model in {diff}")
        teacher = RectifiedFlow(tcfg)
        teacher.load_state_dict({k: v for k, v in ckpt["model"].items()
                                 if not k.startswith("teacher.")})
        own = {k: v for k, v in teacher.state_dict().items()}  # the student starts as the teacher
        self.load_state_dict(own, strict=False)
        teacher.requires_grad_(False)
        return teacher.eval()

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._scale_ready = None

    def train(self, mode: bool = True) -> RectifiedFlow:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen
        return self

    @torch.compiler.disable
    @torch.no_grad()
    def _set_scale(self, z: torch.Tensor) -> None:
        stats = torch.stack([z.float().mean(), z.float().pow(2).mean()])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
            stats /= dist.get_world_size()
        std = (stats[1] - stats[0] ** 2).clamp_min(1e-12).sqrt()
        self.latent_scale.copy_(std)
        self.scale_set.fill_(True)
        self._scale_ready = True

    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> what the DiT models (pixels, or scaled latents)."""
        if self.codec is None:
            return x
        z = self.codec.encode(x)
        if self._scale_ready is None:
            self._scale_ready = bool(self.scale_set)
        if self.training and not self._scale_ready:
            self._set_scale(z)
        return z / self.latent_scale

    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_latent`: images in [-1, 1] (clamped)."""
        if self.codec is not None:
            z = self.codec.decode(z * self.latent_scale)
        return z.float().clamp(-1.0, 1.0)

    def null_labels(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.full((n,), self.config.num_classes, dtype=torch.long, device=device)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
                 guidance: float = 1.0) -> torch.Tensor:
        """v(x, t, y), with classifier-free guidance ``guidance`` (1 = conditional only;
        y None or an unconditional model: the null class)."""
        if y is None or self.config.num_classes == 0:
            return self.dit(x, t, self.null_labels(x.shape[0], x.device))
        if guidance == 1.0:
            return self.dit(x, t, y)
        v = self.dit(torch.cat([x, x]), torch.cat([t, t]),
                     torch.cat([y, self.null_labels(x.shape[0], x.device)]))
        v_cond, v_null = v.chunk(2)
        return v_null + guidance * (v_cond - v_null)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The rectified-flow loss on images ``x`` (B, C, H, W) in [-1, 1] and labels ``y``.

        Returns:
            ``(loss, stats)``: mean squared velocity error (float32); detached ``t_mean``.
        """
        cfg = self.config
        x0 = self.to_latent(x)  # (B, c, s, s)
        B, dev = x0.shape[0], x0.device
        noise = torch.randn(x0.shape, device=dev, generator=generator, dtype=x0.dtype)
        if self.teacher is not None:  # reflow: the teacher's end point of this noise
            x0 = euler_sample(lambda z, t: self.teacher.velocity(z, t, y), noise,
                              cfg.reflow_steps)
        t = sample_timesteps(B, cfg.timesteps, mean=cfg.logit_mean, std=cfg.logit_std,
                             device=dev, generator=generator)
        tb = t.view(B, 1, 1, 1)
        xt = (1.0 - tb) * x0 + tb * noise
        labels = self.null_labels(B, dev) if y is None else y
        if self.training and y is not None and cfg.class_dropout > 0:
            drop = torch.rand(B, device=dev, generator=generator) < cfg.class_dropout
            labels = torch.where(drop, self.null_labels(B, dev), labels)
        v = self.dit(xt, t, labels)
        loss = F.mse_loss(v.float(), (noise - x0).float())
        return loss, {"t_mean": t.mean().detach()}

    @torch.no_grad()
    def sample(self, n: int, *, y: torch.Tensor | None = None, steps: int | None = None,
               guidance: float | None = None, method: str = "euler",
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images (B, C, H, W) in [-1, 1] from noise, by ``method`` ``euler`` (``steps``,
        default ``sample_steps``) or ``dopri5`` (adaptive, torchdiffeq)."""
        cfg = self.config
        device = self.dit.pos.device
        noise = torch.randn((n, *self.shape), device=device, generator=generator)
        w = cfg.guidance if guidance is None else guidance

        def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.velocity(x, t, y, w)

        if method == "euler":
            z = euler_sample(v, noise, steps or cfg.sample_steps)
        else:
            z, _ = adaptive_sample(v, noise, method=method)
        return self.from_latent(z)


def student_config(teacher: RectifiedFlowConfig, uri: str, **overrides) -> RectifiedFlowConfig:
    """The config of a reflow (2-RF) student of ``teacher`` trained from checkpoint ``uri``."""
    return dataclasses.replace(teacher, reflow_from=uri, **overrides)
