"""Normalizing flows for images: NICE (additive) and RealNVP/Glow (affine), one file.

    x (B, C, H, W) in [-1, 1], dequantized: y = 2 (u + U[0, 1)) / 256 - 1, u the uint8 pixel
      for each of L levels: squeeze (C, H, W) -> (4C, H/2, W/2); K flow steps;
                            all levels but the last factor half the channels out as latents
      z = concat of the factored-out parts, flattened (B, D);   NICE: z <- z * exp(s)
    log p(y) = log N(z; 0, I) + log |det dz/dy|
    bits/dim = -(log p(y) + D log(2/256)) / (D ln 2)   (a bound on the uint8 image's bits)

A flow step is
    additive (NICE):      reverse the channels; y_b = x_b + m(x_a)            (log-det 0)
    affine (RealNVP/Glow): actnorm; invertible 1x1 conv; y_b = (x_b + t(x_a)) * sigmoid(r(x_a) + 2)
with x_a, x_b the two channel halves and m, (t, r) a small conv net whose last layer starts
at zero, so every step starts as the identity (Glow). NICE ends with its diagonal scaling
layer; Glow's actnorm (zero mean, unit variance per channel) and NICE's scaling layer (unit
variance per dimension) initialise from the first training batch, averaged over ranks under
DDP. Every layer's inverse is exact, so ``inverse(forward(x)) == x`` up to float error.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from models.flow_config import FlowConfig

__all__ = ["ActNorm", "Coupling", "DiagonalScale", "Flow", "FlowConfig", "InvConv1x1", "bits_per_dim",
           "dequantize", "squeeze", "unsqueeze"]

LOG_2PI = math.log(2 * math.pi)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in at least float32 (fp16/bf16 -> fp32; float64 stays: exact tests run in it)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 block of pixels becomes 4 channels."""
    B, C, H, W = x.shape
    x = x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(B, 4 * C, H // 2, W // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`squeeze`."""
    B, C, H, W = x.shape
    x = x.view(B, C // 4, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(B, C // 4, 2 * H, 2 * W)


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [-1, 1] (from uint8) -> y = 2 (u + U[0, 1)) / 256 - 1, float32."""
    u = torch.round((x.float() + 1.0) * 127.5).clamp(0, 255)
    noise = torch.rand(u.shape, device=u.device, generator=generator)
    return (u + noise) / 128.0 - 1.0


def bits_per_dim(log_py: torch.Tensor, dims: int) -> torch.Tensor:
    """Bits per dimension of uint8 images from the density ``log_py`` (B,) of dequantized y."""
    return -(log_py + dims * math.log(2.0 / 256.0)) / (dims * math.log(2.0))


class _InitFromData(nn.Module):
    """A layer whose parameters are set from its first training batch (Glow's actnorm trick).

    ``initialized`` is a buffer, so a loaded checkpoint is not re-initialised; subclasses
    implement ``_init(x)`` and call :meth:`_init_once` at the top of ``forward``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._ready: bool | None = None  # host copy of `initialized`: read once

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._ready = None

    def _init(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def _init_once(self, x: torch.Tensor) -> None:
        if self._ready is None:
            self._ready = bool(self.initialized)
        if self.training and not self._ready:
            self._init_no_grad(x)

    @torch.compiler.disable
    @torch.no_grad()
    def _init_no_grad(self, x: torch.Tensor) -> None:
        self._init(x)
        self.initialized.fill_(True)
        self._ready = True


def _moments(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of ``x`` over ``dims`` (kept), in float32, averaged over
    the ranks under DDP so every rank initialises alike."""
    x = x.float()
    mean = x.mean(dims, keepdim=True)
    sq = x.pow(2).mean(dims, keepdim=True)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        stats = torch.cat([mean, sq])
        dist.all_reduce(stats)
        mean, sq = (stats / dist.get_world_size()).chunk(2)
    return mean, (sq - mean.pow(2)).clamp_min(0).sqrt()


class ActNorm(_InitFromData):
    """y = (x + loc) * exp(logs) per channel; data-dependent init on the first training batch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def _init(self, x: torch.Tensor) -> None:
        mean, std = _moments(x, (0, 2, 3))  # (1, C, 1, 1): zero mean, unit variance
        self.loc.copy_(-mean)
        self.logs.copy_(-torch.log(std + 1e-6))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._init_once(x)
        logdet = x.shape[2] * x.shape[3] * _wide(self.logs).sum()
        return (x + self.loc) * torch.exp(self.logs), logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.logs) - self.loc


class DiagonalScale(_InitFromData):
    """NICE's scaling layer z * exp(log_scale) over all D dimensions (log-det: the sum).

    It is NICE's only layer that changes volume, so its scales set how far the density can
    tighten; from zero, Adam moves each by about the learning rate a step, thousands of
    steps to reach the data's scale. It therefore starts at the inverse standard deviation
    of each dimension on the first training batch (floored at ``min_std``), as actnorm does.
    """

    def __init__(self, dims: int, min_std: float = 1e-3) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(dims))
        self.min_std = min_std

    def _init(self, z: torch.Tensor) -> None:
        _, std = _moments(z, (0,))
        self.log_scale.copy_(-torch.log(std[0].clamp_min(self.min_std)))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._init_once(z)
        return z * torch.exp(self.log_scale), self.log_scale.sum().expand(z.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.exp(-self.log_scale)


class InvConv1x1(nn.Module):
    """y = W x at every position, W (C, C) invertible (a random rotation at init)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]  # orthogonal: log|det| = 0
        self.weight = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        C = self.weight.shape[0]
        logdet = x.shape[2] * x.shape[3] * torch.linalg.slogdet(_wide(self.weight))[1]
        return F.conv2d(x, self.weight.view(C, C, 1, 1)), logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        C = self.weight.shape[0]
        w_inv = torch.linalg.inv(self.weight.double()).to(y.dtype)
        return F.conv2d(y, w_inv.view(C, C, 1, 1))


class Reverse(nn.Module):
    """NICE's fixed permutation: the channel order reversed, so the halves swap roles."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flip(1), _wide(x.new_zeros(x.shape[0]))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(1)


class Coupling(nn.Module):
    """x_b is shifted (additive) or shifted and scaled (affine) by a net of x_a."""

    def __init__(self, channels: int, hidden: int, affine: bool) -> None:
        super().__init__()
        self.affine = affine
        half = channels // 2
        out = nn.Conv2d(hidden, (channels - half) * (2 if affine else 1), 3, padding=1)
        nn.init.zeros_(out.weight)  # the step starts as the identity (Glow)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(nn.Conv2d(half, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden, 1), nn.ReLU(), out)

    def _params(self, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = _wide(self.net(xa))
        if not self.affine:
            return h, None
        shift, raw = h[:, 0::2], h[:, 1::2]
        return shift, torch.sigmoid(raw + 2.0)  # scale in (0, 1), ~0.88 at init

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = x.shape[1] // 2
        xa, xb = x[:, :half], x[:, half:]
        shift, scale = self._params(xa)
        if scale is None:
            return torch.cat([xa, xb + shift.to(xb.dtype)], 1), _wide(x.new_zeros(x.shape[0]))
        yb = (_wide(xb) + shift) * scale
        return torch.cat([xa, yb.to(x.dtype)], 1), torch.log(scale).flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        half = y.shape[1] // 2
        ya, yb = y[:, :half], y[:, half:]
        shift, scale = self._params(ya)
        xb = _wide(yb) / scale - shift if scale is not None else _wide(yb) - shift
        return torch.cat([ya, xb.to(y.dtype)], 1)


class Flow(nn.Module):
    """A multi-scale flow ``forward(y) -> (z (B, D), log|det|) (B,)`` and its exact inverse."""

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        self.config = cfg = config
        affine = cfg.coupling == "affine"
        levels, shapes = [], []  # shapes: of each factored-out latent, then the last
        c, s = cfg.in_channels, cfg.image_size
        for level in range(cfg.levels):
            c, s = 4 * c, s // 2
            steps: list[nn.Module] = []
            for _ in range(cfg.steps):
                steps += ([ActNorm(c), InvConv1x1(c)] if affine else [Reverse()])
                steps.append(Coupling(c, cfg.hidden_channels, affine))
            levels.append(nn.ModuleList(steps))
            if level < cfg.levels - 1:
                shapes.append((c // 2, s, s))
                c //= 2
        shapes.append((c, s, s))
        self.levels = nn.ModuleList(levels)
        self.shapes = shapes
        self.scale = DiagonalScale(cfg.dims) if not affine else None  # NICE's last layer

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # checkpoints written before the scaling layer became a module held its bare
        # parameter, already trained: load it as an initialised DiagonalScale
        old = state_dict.pop(prefix + "log_scale", None)
        if old is not None:
            state_dict[prefix + "scale.log_scale"] = old
            state_dict[prefix + "scale.initialized"] = torch.ones((), dtype=torch.bool)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, D) float32 and log|det dz/dy| (B,) of images ``y`` (B, C, S, S)."""
        cfg = self.config
        if y.dim() != 4 or tuple(y.shape[1:]) != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise ValueError(f"expected images (B, {cfg.in_channels}, {cfg.image_size}, "
                             f"{cfg.image_size}), got {tuple(y.shape)}")
        logdet = _wide(y.new_zeros(y.shape[0]))
        zs, h = [], y
        for i, steps in enumerate(self.levels):
            h = squeeze(h)
            for step in steps:
                h, ld = step(h)
                logdet = logdet + ld
            if i < len(self.levels) - 1:
                z, h = h.chunk(2, dim=1)  # (B, c/2, s, s) leaves, the rest goes on
                zs.append(z)
        zs.append(h)
        z = torch.cat([_wide(t).flatten(1) for t in zs], dim=1)  # (B, D)
        if self.scale is not None:
            z, ld = self.scale(z)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, C, S, S) from latents ``z`` (B, D)."""
        if self.scale is not None:
            z = self.scale.inverse(z)
        parts = torch.split(z, [c * s * s for c, s, _ in self.shapes], dim=1)
        zs = [p.reshape(-1, *shape) for p, shape in zip(parts, self.shapes, strict=True)]
        h = zs[-1]
        for i in reversed(range(len(self.levels))):
            if i < len(self.levels) - 1:
                h = torch.cat([zs[i], h], dim=1)
            for step in reversed(self.levels[i]):
                h = step.inverse(h)
            h = unsqueeze(h)
        return h

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """log p(y) (B,) under the standard normal prior on z."""
        z, logdet = self(y)
        return -0.5 * (z.pow(2) + LOG_2PI).sum(1) + logdet

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean bits/dim, bits/dim per image (B,))`` of images ``x`` in [-1, 1], dequantized."""
        bpd = bits_per_dim(self.log_prob(dequantize(x)), self.config.dims)
        return bpd.mean(), bpd.detach()

    @torch.no_grad()
    def sample(self, n: int, *, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images (clamped to [-1, 1]) from z ~ N(0, temperature^2 I)."""
        device = next(self.parameters()).device
        z = torch.randn((n, self.config.dims), device=device, generator=generator) * temperature
        return self.inverse(z).clamp(-1.0, 1.0)
