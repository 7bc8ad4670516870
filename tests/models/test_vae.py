"""models.vae: the KL terms, the Gumbel-softmax and its annealing, the ELBO through the loop."""

from __future__ import annotations

import math

import pytest
import torch
from vision_testlib import write_images

from models.kinds import train_model
from models.train_config import TrainConfig
from models.vae import VAE, VAEConfig, categorical_kl, gaussian_kl, gumbel_softmax


def test_gaussian_kl_matches_the_closed_form():
    mu, logvar = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, math.log(4.0)]])
    # KL(N(1, 4) || N(0, 1)) = 0.5 * (1 + 4 - 1 - ln 4); the first variable is the prior itself
    assert float(gaussian_kl(mu, logvar)[0]) == pytest.approx(0.5 * (4.0 - math.log(4.0)))


def test_categorical_kl_is_zero_for_uniform_and_log_k_for_one_hot():
    logits = torch.zeros(1, 1, 8, 1, 1)
    assert float(categorical_kl(logits, dim=2)[0]) == pytest.approx(0.0, abs=1e-6)
    sharp = torch.full((1, 1, 8, 1, 1), -1e4)
    sharp[0, 0, 3] = 0.0
    assert float(categorical_kl(sharp, dim=2)[0]) == pytest.approx(math.log(8), rel=1e-4)


def test_gumbel_softmax_samples_the_categorical_and_straight_through_is_one_hot():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1])).expand(20000, 3).clone().requires_grad_()
    gen = torch.Generator().manual_seed(0)
    hard = gumbel_softmax(logits, 0.5, dim=1, hard=True, generator=gen)
    assert torch.allclose(hard.detach().sum(1), torch.ones(20000))
    assert torch.allclose(hard.detach(), hard.detach().round(), atol=1e-6)  # one-hot in value
    freq = hard.detach().mean(0)  # argmax of logits + Gumbel noise ~ the categorical
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.02)
    (hard[:, 0] * 2.0).sum().backward()
    assert logits.grad.abs().sum() > 0  # the soft sample's gradient passes through
    soft = gumbel_softmax(logits.detach(), 0.5, dim=1, hard=False, generator=gen)
    assert torch.allclose(soft.sum(1), torch.ones(20000))
    assert float((soft.max(1).values < 0.99).float().mean()) > 0.5  # relaxed, not one-hot


def test_temperature_anneals_to_its_floor():
    model = VAE(VAEConfig.preset("tiny", latent="gumbel", tau_start=2.0, tau_min=0.5,
                                 anneal_steps=10))
    assert float(model.tau()) == pytest.approx(2.0)
    model.steps_done.fill_(5)
    assert float(model.tau()) == pytest.approx(1.0)  # geometric: halfway in log space
    model.steps_done.fill_(50)
    assert float(model.tau()) == pytest.approx(0.5)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    model.train()(x)
    assert int(model.steps_done) == 51  # a training forward counts a step
    model.eval()(x)
    assert int(model.steps_done) == 51


@pytest.mark.parametrize("latent, extra", [("gaussian", {}),
                                           ("gumbel", {"straight_through": True})])
def test_the_elbo_rises_through_the_loop_and_its_terms_are_logged(tmp_path, latent, extra):
    images = write_images(tmp_path, train=8, eval=4)
    cfg = VAEConfig.preset("tiny", latent=latent, **extra)
    result = train_model("vae", dataset_uri=images, out_uri=(tmp_path / "vae").as_uri(),
                         model_config=cfg, train_config=TrainConfig(
                             kind="vae", steps=30, batch_size=8, lr=3e-3, warmup_steps=2,
                             log_every=10, device="cpu", progress=False))
    assert result.final_loss < result.first_loss * 0.6  # ~14 -> ~6 (gaussian), ~7.7 (gumbel)
    m = result.train_metrics
    assert m["elbo"] == pytest.approx(-(m["rec_nll"] + m["kl"]), rel=1e-4)
    assert ("tau" in m) == (latent == "gumbel")
    ev = result.eval_metrics
    assert {"elbo", "elbo_per_dim", "rec_nll", "kl", "mse", "psnr", "fd", "fd_samples"} <= set(ev)
    assert ev["kl"] >= 0 and ev["psnr"] > 10
    model = VAE(cfg)
    samples = model.sample(3, latent_hw=(4, 4))
    assert samples.shape == (3, 3, 16, 16)
