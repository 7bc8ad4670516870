"""The generative vision kinds as :class:`~models.vision_model.VisionModel` entries.

    vqgan           VQ-VAE + perceptual + PatchGAN (models.vqgan); eval: reconstruction MSE,
                    PSNR, code usage, perceptual distance, FD(reconstructions, images)
    vae             Gaussian / Gumbel-softmax VAE (models.vae); train logs the ELBO and its
                    terms (rec_nll, kl; tau); eval: ELBO, MSE, FD of reconstructions and of
                    prior samples
    flow            NICE / RealNVP-Glow (models.flows); eval: bits/dim, FD of samples
    rectified_flow  DiT rectified flow (models.rectified_flow); eval: loss at fixed noise and
                    times, FD of guided Euler samples (``sample_steps``)

All of them see images in [-1, 1] (normalization 0.5, 0.5). The Frechet distances use the
features of :mod:`models.frechet` (the ``fid_from`` classifier, else seeded random
features: ``fd_features`` says which). :func:`sample_grid` draws what the report shows.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.flow_config import FlowConfig
from models.flows import Flow, bits_per_dim, dequantize
from models.frechet import fd_from_sums, feature_net, feature_sums
from models.rectified_flow import RectifiedFlow
from models.rectified_flow_config import RectifiedFlowConfig
from models.vae import VAE
from models.vae_config import VAEConfig
from models.vision_model import Metrics, VisionModel
from models.vqgan import VQGAN, adaptive_weight
from models.vqgan_config import VQGANConfig
from models.vqvae import perplexity, psnr

__all__ = ["GENERATIVE_MODELS", "raw_module", "sample_grid"]

_HALF = lambda cfg: ((0.5,) * cfg.in_channels, (0.5,) * cfg.in_channels)  # noqa: E731 [-1, 1]


def raw_module(model: nn.Module) -> nn.Module:
    """The module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return getattr(model, "_orig_mod", model)


def _count(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(float(x.shape[0]), device=x.device)


def _fd_sums(cfg: Any, real: torch.Tensor, fakes: dict[str, torch.Tensor]) -> Metrics:
    """Feature statistics of ``real`` and each fake set (float32, outside autocast)."""
    net = feature_net(cfg.fid_from, real.shape[1], real.device)
    with torch.autocast(real.device.type, enabled=False):
        sums = feature_sums(net.embed(real.float()), "real")
        for name, fake in fakes.items():
            sums.update(feature_sums(net.embed(fake.float()), name))
    sums["fd_random"] = torch.tensor(float(net.source == "random"), device=real.device)
    return sums


def _fd_finish(sums: Metrics, fakes: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {f"fd_{name}" if name != "fake" else "fd": fd_from_sums(sums, "real", name)
                           for name in fakes}
    out["fd_features"] = "random" if float(sums.get("fd_random", 0)) > 0 else "classifier"
    return out


# VQGAN -------------------------------------------------------------------------------------

def _vqgan_train_step(model: nn.Module, x: torch.Tensor, _: Any) -> tuple[torch.Tensor, Metrics]:
    raw = raw_module(model)
    cfg = raw.config
    # The adaptive weight backpropagates the compiled graph with retain_graph=True before the
    # trainer's own backward. AOTAutograd's donated buffers forbid that, and it reads the flag
    # both when it compiles the forward and when it (lazily) compiles and runs the backward,
    # so the whole step runs without them (a no-op when eager).
    from torch._functorch import config as functorch_config

    with functorch_config.patch(donated_buffer=False):
        x_hat, terms = model(x)  # compiled / DDP: the generator and its own losses
        loss = terms["nll"] + cfg.commitment * terms["commitment"]
        metrics = {k: terms[k].detach() for k in ("rec", "perceptual", "commitment", "psnr",
                                                  "usage", "perplexity")}
        zero = torch.zeros((), device=x.device)
        if raw.adversarial_now():  # eager, outside the compiled forward
            g_loss = raw.generator_adversarial(x_hat)
            weight = cfg.disc_weight * adaptive_weight(terms["nll"], g_loss, raw.last_layer(),
                                                       cfg.max_adaptive_weight)
            loss = loss + weight * g_loss
            metrics.update(raw.discriminator_step(x, x_hat), g_loss=g_loss.detach(),
                           adaptive_weight=weight)
        else:  # the same keys every step (ranks average them by name)
            metrics.update(d_loss=zero, g_loss=zero, adaptive_weight=zero, logits_real=zero,
                           logits_fake=zero)
    raw.count_step()
    return loss, metrics


def _vqgan_eval_sums(model: nn.Module, x: torch.Tensor, _: Any) -> Metrics:
    raw = raw_module(model)
    indices = raw.encode(x)  # (B, h, w)
    x_hat = raw.decode_indices(indices).float()  # (B, C, H, W)
    K = raw.config.codebook_size
    return {
        "squared_error": F.mse_loss(x_hat, x.float(), reduction="sum"),
        "values": torch.tensor(float(x.numel()), device=x.device),
        "codes": torch.bincount(indices.flatten(), minlength=K).float(),
        "perceptual": raw.perceptual(x_hat, x).sum(), "images": _count(x),
        **_fd_sums(raw.config, x, {"fake": x_hat}),
    }


def _vqgan_eval_finish(sums: Metrics) -> dict[str, Any]:
    mse = sums["squared_error"] / sums["values"].clamp_min(1)
    return {"mse": float(mse), "psnr": float(psnr(mse)),
            "perplexity": float(perplexity(sums["codes"])),
            "usage": float((sums["codes"] > 0).float().mean()),
            "perceptual": float(sums["perceptual"] / sums["images"].clamp_min(1)),
            **_fd_finish(sums, ("fake",))}


# VAE ---------------------------------------------------------------------------------------

def _vae_train_step(model: nn.Module, x: torch.Tensor, _: Any) -> tuple[torch.Tensor, Metrics]:
    _, loss, stats = model(x)
    return loss, stats


def _vae_eval_sums(model: nn.Module, x: torch.Tensor, _: Any) -> Metrics:
    raw = raw_module(model)
    cfg = raw.config
    _, _, stats = raw(x, tau=cfg.tau_min)  # one posterior sample at the final temperature
    n = _count(x)
    x_rec = raw.reconstruct(x).float()
    f = cfg.factor
    samples = raw.sample(x.shape[0], latent_hw=(x.shape[2] // f, x.shape[3] // f)).float()
    return {"images": n, "elbo": stats["elbo"] * n, "rec_nll": stats["rec_nll"] * n,
            "kl": stats["kl"] * n, "squared_error": F.mse_loss(x_rec, x.float(), reduction="sum"),
            "values": torch.tensor(float(x.numel()), device=x.device),
            **_fd_sums(cfg, x, {"fake": x_rec, "samples": samples.clamp(-1, 1)})}


def _vae_eval_finish(sums: Metrics) -> dict[str, Any]:
    n = sums["images"].clamp_min(1)
    mse = sums["squared_error"] / sums["values"].clamp_min(1)
    dims = float(sums["values"] / n)
    return {"elbo": float(sums["elbo"] / n), "elbo_per_dim": float(sums["elbo"] / n / dims),
            "rec_nll": float(sums["rec_nll"] / n), "kl": float(sums["kl"] / n),
            "mse": float(mse), "psnr": float(psnr(mse)), **_fd_finish(sums, ("fake", "samples"))}


# Flows -------------------------------------------------------------------------------------

def _flow_bpd(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    z, logdet = model(dequantize(x))  # (B, D), (B,)
    log_py = -0.5 * (z.pow(2) + 1.8378770664093453).sum(1) + logdet  # + log 2 pi
    return bits_per_dim(log_py, z.shape[1])


def _flow_train_step(model: nn.Module, x: torch.Tensor, _: Any) -> tuple[torch.Tensor, Metrics]:
    bpd = _flow_bpd(model, x)
    return bpd.mean(), {"bpd": bpd.mean().detach()}


def _flow_eval_sums(model: nn.Module, x: torch.Tensor, _: Any) -> Metrics:
    raw = raw_module(model)
    with torch.autocast(x.device.type, enabled=False):  # densities in fp32
        bpd = _flow_bpd(raw, x.float())
        samples = raw.sample(x.shape[0])
    return {"images": _count(x), "bpd": bpd.sum(), **_fd_sums(raw.config, x, {"fake": samples})}


def _flow_eval_finish(sums: Metrics) -> dict[str, Any]:
    return {"bpd": float(sums["bpd"] / sums["images"].clamp_min(1)), **_fd_finish(sums, ("fake",))}


# Rectified flow ----------------------------------------------------------------------------

def _rf_labels(raw: RectifiedFlow, y: torch.Tensor | None) -> torch.Tensor | None:
    return y if raw.config.num_classes > 0 else None


def _rf_train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None
                   ) -> tuple[torch.Tensor, Metrics]:
    return model(x, _rf_labels(raw_module(model), y))


def _rf_eval_sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> Metrics:
    raw = raw_module(model)
    labels = _rf_labels(raw, y)
    gen = torch.Generator(device=x.device).manual_seed(0)  # the same noise and t every eval
    loss, _ = raw(x, labels, generator=gen)
    samples = raw.sample(x.shape[0], y=labels, generator=gen)
    n = _count(x)
    return {"images": n, "loss": loss.float() * n, **_fd_sums(raw.config, x, {"fake": samples})}


def _rf_eval_finish(sums: Metrics) -> dict[str, Any]:
    return {"loss": float(sums["loss"] / sums["images"].clamp_min(1)),
            **_fd_finish(sums, ("fake",))}


GENERATIVE_MODELS: dict[str, VisionModel] = {
    "vqgan": VisionModel(
        name="vqgan", config_type=VQGANConfig, build=VQGAN, labels=False,
        num_classes=lambda cfg: None, normalization=_HALF, image_size=lambda cfg: None,
        train_step=_vqgan_train_step, eval_sums=_vqgan_eval_sums,
        eval_finish=_vqgan_eval_finish,
        state_metrics=lambda model: {"restarts": int(model.quantizer.restarts)},
    ),
    "vae": VisionModel(
        name="vae", config_type=VAEConfig, build=VAE, labels=False,
        num_classes=lambda cfg: None, normalization=_HALF, image_size=lambda cfg: None,
        train_step=_vae_train_step, eval_sums=_vae_eval_sums, eval_finish=_vae_eval_finish,
    ),
    "flow": VisionModel(
        name="flow", config_type=FlowConfig, build=Flow, labels=False,
        num_classes=lambda cfg: None, normalization=_HALF,
        image_size=lambda cfg: cfg.image_size, train_step=_flow_train_step,
        eval_sums=_flow_eval_sums, eval_finish=_flow_eval_finish,
    ),
    "rectified_flow": VisionModel(
        name="rectified_flow", config_type=RectifiedFlowConfig, build=RectifiedFlow,
        labels=True, num_classes=lambda cfg: cfg.num_classes or None, normalization=_HALF,
        image_size=lambda cfg: cfg.image_size, train_step=_rf_train_step,
        eval_sums=_rf_eval_sums, eval_finish=_rf_eval_finish,
    ),
}


@torch.no_grad()
def sample_grid(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None,
                *, seed: int = 0) -> torch.Tensor:
    """What the report shows for a trained generative model, (N, C, H, W) in [-1, 1].

    vqvae / vqgan: the images (first half) over their reconstructions (second half);
    vae: reconstructions then prior samples; flow: samples at temperature 0.8;
    rectified_flow: samples (of ``labels`` when class-conditional) at its ``sample_steps``.
    ``images`` (N, C, H, W) in [-1, 1] at the model's input size.
    """
    model = raw_module(model).eval()
    n = images.shape[0]
    gen = torch.Generator(device=images.device).manual_seed(seed)
    if hasattr(model, "decode_indices"):  # VQ-VAE, VQGAN
        return torch.cat([images, model.decode_indices(model.encode(images)).float()])
    if isinstance(model, VAE):
        f = model.config.factor
        prior = model.sample(n, latent_hw=(images.shape[2] // f, images.shape[3] // f),
                             generator=gen)
        return torch.cat([images, model.reconstruct(images).float(), prior.float()]).clamp(-1, 1)
    if isinstance(model, Flow):
        return model.sample(n, temperature=0.8, generator=gen)
    if isinstance(model, RectifiedFlow):
        y = labels if model.config.num_classes > 0 else None
        return model.sample(n, y=y, generator=gen)
    raise TypeError(f"no sample grid for a {type(model).__name__}")
