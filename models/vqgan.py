"""VQGAN (Esser et al. 2021, "Taming Transformers for High-Resolution Image Synthesis"), one file.

    x (B, C, H, W) in [-1, 1] -> VQ-VAE (models.vqvae: encoder, EMA codebook, decoder) -> x_hat
    nll   = |x - x_hat|_1 + perceptual_weight * d_perceptual(x, x_hat)         (models.perceptual)
    loss  = nll + commitment * |z_e - sg(z_q)|^2 + lambda * (-mean D(x_hat))    after disc_start
    lambda = disc_weight * |grad_L nll| / (|grad_L g_loss| + 1e-4)              L: decoder's last layer
    D: a PatchGAN (pix2pix's NLayerDiscriminator): one logit per overlapping patch,
       trained with the hinge loss 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))

The adaptive weight lambda balances the two gradients where they meet (the last decoder
layer), so neither the reconstruction nor the adversarial term drowns the other whatever
their scales.

Two optimizers, one loop. The shared trainer (models/trainer.py) owns the generator's
AdamW, its LR schedule, loss scaling and gradient clipping; the discriminator is a
submodule whose parameters never require gradients outside its own update, so that
optimizer never sees them (``make_optimizer`` takes trainable parameters only). The
module owns the discriminator's Adam and, for fp16, its own GradScaler;
:meth:`VQGAN.discriminator_step` runs inside the kind's train step, right after the
generator's forward, on the detached reconstruction. The generator's adversarial term
reads a detached snapshot of D's weights, so D's in-place update cannot invalidate the
generator graph the loop backpropagates afterwards. The discriminator's optimizer and
scaler states travel in the module's state dict (``get_extra_state``), so checkpoints and
``--resume`` keep them; under DDP its gradients are all-reduced by hand (DDP only reduces
the parameters that required gradients when it wrapped the model).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from models.perceptual import PerceptualLoss, from_checkpoint
from models.vqgan_config import VQGANConfig
from models.vqvae import VQVAE, perplexity, psnr

__all__ = ["PatchDiscriminator", "VQGAN", "VQGANConfig", "adaptive_weight", "hinge_d_loss",
           "load_vq"]


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))), in float32."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """|d nll / d L| / (|d g_loss / d L| + 1e-4), clamped to [0, max_weight], detached.

    Both losses must still hold their graphs (they are backpropagated afterwards).
    A non-finite ratio (fp16 gradients that overflowed) counts as 0 for this step.
    """
    g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    w = g_nll.float().norm() / (g_adv.float().norm() + 1e-4)
    return torch.nan_to_num(w, nan=0.0, posinf=0.0).clamp(0.0, max_weight).detach()


class PatchDiscriminator(nn.Module):
    """(B, C, H, W) -> (B, 1, h, w) patch logits: conv4x4/2 + LeakyReLU, then
    ``layers - 1`` conv4x4/2 + BN + LeakyReLU, conv4x4/1 + BN + LeakyReLU, conv4x4/1 -> 1."""

    def __init__(self, in_channels: int, channels: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for n in range(1, layers + 1):
            c_out = channels * min(2**n, 8)
            stride = 2 if n < layers else 1
            mods += [nn.Conv2d(c, c_out, 4, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                     nn.LeakyReLU(0.2)]
            c = c_out
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)
        for m in self.modules():  # pix2pix init: N(0, 0.02) convs, N(1, 0.02) BN gains
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@contextmanager
def _trainable(module: nn.Module) -> Iterator[list[nn.Parameter]]:
    params = list(module.parameters())
    for p in params:
        p.requires_grad_(True)
    try:
        yield params
    finally:
        for p in params:
            p.requires_grad_(False)


class VQGAN(nn.Module):
    """The VQ-VAE generator, a perceptual distance and a PatchGAN with its own optimizer."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.config = config
        self.vq = VQVAE(config)  # reads the VQ-VAE fields of the config
        self.perceptual = PerceptualLoss(from_checkpoint(config.perceptual_from,
                                                         config.in_channels))
        self.discriminator = PatchDiscriminator(config.in_channels, config.disc_channels,
                                                config.disc_layers)
        self.discriminator.requires_grad_(False)  # trained by its own optimizer only
        # micro-batches trained so far: decides when the discriminator switches on
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._steps: int | None = None  # host copy of steps_done (read once: no sync a step)
        self._d_opt: torch.optim.Adam | None = None  # built on first use, on the params' device
        self._d_scaler: torch.amp.GradScaler | None = None
        self._pending: dict[str, Any] = {}  # optimizer/scaler state loaded before they exist

    @property
    def quantizer(self) -> nn.Module:
        return self.vq.quantizer

    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight, where the adaptive weight compares the gradients."""
        return [m for m in self.vq.decoder.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
                ][-1].weight

    # --- the generator -------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstructs ``x`` (B, C, H, W) in [-1, 1] and computes the generator's own terms.

        Returns:
            ``(x_hat, terms)``: ``terms`` holds ``rec`` (pixel loss), ``perceptual``,
            ``nll`` = rec + perceptual_weight * perceptual, ``commitment``, with graphs;
            and detached ``psnr``, ``usage``, ``perplexity``.
        """
        cfg = self.config
        self.vq._check(x)
        z_e = self.vq.encoder(x)  # (B, D, h, w)
        z_q, commitment, _, counts = self.vq.quantizer(z_e)  # (B, D, h, w) fp32
        x_hat = self.vq.decoder(z_q)  # (B, C, H, W)
        diff = x_hat.float() - x.float()
        rec = diff.abs().mean() if cfg.rec_loss == "l1" else diff.pow(2).mean()
        perceptual = (self.perceptual(x_hat, x).mean() if cfg.perceptual_weight > 0
                      else x_hat.new_zeros((), dtype=torch.float32))
        return x_hat, {"rec": rec, "perceptual": perceptual,
                       "nll": rec + cfg.perceptual_weight * perceptual, "commitment": commitment,
                       "psnr": psnr(diff.detach().pow(2).mean()),
                       "usage": (counts > 0).float().mean(), "perplexity": perplexity(counts)}

    def generator_adversarial(self, x_hat: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial term -mean D(x_hat), through a copy of D's weights.

        A copy, taken eagerly (call it outside ``torch.compile``): the discriminator's
        in-place Adam step, which follows in the same train step, must not touch tensors the
        generator's backward still needs (``detach()`` would share their version counter, and
        a compiled graph may elide the copy).
        """
        frozen = {name: p.detach().clone() for name, p in self.discriminator.named_parameters()}
        logits = functional_call(self.discriminator, frozen, (x_hat,))  # (B, 1, h', w')
        return -logits.float().mean()

    def adversarial_now(self) -> bool:
        """Whether this training step uses the discriminator (``disc_start`` steps done)."""
        if self._steps is None:
            self._steps = int(self.steps_done)
        return self._steps >= self.config.disc_start

    def count_step(self) -> None:
        """One training micro-batch done (host counter and the checkpointed buffer)."""
        self.adversarial_now()
        self._steps += 1
        self.steps_done.add_(1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices (B, H/f, W/f) of images in [-1, 1]."""
        return self.vq.encode(x)

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images (B, C, h*f, w*f) from code indices (B, h, w)."""
        return self.vq.decode_indices(indices)

    # --- the discriminator and its own optimizer ---------------------------------------

    def _optimizer(self) -> tuple[torch.optim.Adam, torch.amp.GradScaler]:
        device = next(self.discriminator.parameters()).device
        if self._d_opt is None:
            cfg = self.config
            self._d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.disc_lr,
                                           betas=(cfg.disc_beta1, cfg.disc_beta2))
            if self._pending.get("optimizer"):
                self._d_opt.load_state_dict(self._pending["optimizer"])  # moved to the device
        if self._d_scaler is None:
            fp16 = (torch.is_autocast_enabled(device.type)
                    and torch.get_autocast_dtype(device.type) == torch.float16)
            self._d_scaler = torch.amp.GradScaler(device.type, enabled=fp16)
            if fp16 and self._pending.get("scaler"):
                self._d_scaler.load_state_dict(self._pending["scaler"])
        return self._d_opt, self._d_scaler

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """One Adam step of the discriminator on ``real`` and (detached) ``fake`` images.

        Runs under the caller's autocast; fp16 scales the loss with the module's own
        GradScaler. Leaves no ``.grad`` behind (the loop's clipping never sees D).

        Returns:
            Detached metrics: ``d_loss``, ``logits_real``, ``logits_fake`` (means).
        """
        opt, scaler = self._optimizer()
        with _trainable(self.discriminator) as params:
            logits_real = self.discriminator(real.detach())
            logits_fake = self.discriminator(fake.detach())
            loss = hinge_d_loss(logits_real, logits_fake)
            grads = torch.autograd.grad(scaler.scale(loss), params)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            grads = torch.split(flat, [g.numel() for g in grads])
        for p, g in zip(params, grads, strict=True):
            p.grad = g.view_as(p)
        scaler.step(opt)
        scaler.update()
        for p in params:
            p.grad = None
        return {"d_loss": loss.detach(), "logits_real": logits_real.detach().float().mean(),
                "logits_fake": logits_fake.detach().float().mean()}

    def get_extra_state(self) -> dict[str, Any]:
        opt = self._d_opt.state_dict() if self._d_opt is not None else self._pending.get("optimizer", {})
        scaler = (self._d_scaler.state_dict() if self._d_scaler is not None
                  and self._d_scaler.is_enabled() else self._pending.get("scaler", {}))
        return {"optimizer": opt, "scaler": scaler}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._pending = dict(state)
        self._d_opt = self._d_scaler = None  # rebuilt (and loaded) at the next step
        self._steps = None  # re-read steps_done, loaded with the buffers


def load_vq(ckpt: dict[str, Any]) -> VQVAE | VQGAN:
    """The VQ-VAE or VQGAN of a loaded checkpoint (``models.checkpoint.load_checkpoint``),
    with its weights, in eval mode; both have ``encode`` and ``decode_indices``.

    Raises:
        ValueError: the checkpoint holds another kind of model.
    """
    from models.vqvae_config import VQVAEConfig

    kind = ckpt["extra"].get("kind")
    if kind == "vqvae":
        model: VQVAE | VQGAN = VQVAE(VQVAEConfig(**ckpt["model_config"]))
    elif kind == "vqgan":
        model = VQGAN(VQGANConfig(**ckpt["model_config"]))
    else:
        raise ValueError(f"the checkpoint holds a {kind!r} model, not a VQ-VAE or VQGAN")
    model.load_state_dict(ckpt["model"])
    return model.eval()
