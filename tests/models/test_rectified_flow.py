"""models.rectified_flow and models.dit: samplers on known fields, timesteps, adaLN-Zero, CFG,
reflow and latent training."""

from __future__ import annotations

import math

import pytest
import torch
from vision_testlib import write_images

from models.dit import DiT, sincos_2d
from models.kinds import train_model
from models.rectified_flow import (
    RectifiedFlow,
    RectifiedFlowConfig,
    adaptive_sample,
    euler_sample,
    sample_timesteps,
    student_config,
)
from models.train_config import TrainConfig
from models.vae import VAEConfig

TINY = RectifiedFlowConfig.preset("tiny", num_classes=3)


def train_config(kind: str = "rectified_flow", **overrides) -> TrainConfig:
    base = dict(steps=4, batch_size=4, warmup_steps=1, lr=1e-3, log_every=2, device="cpu",
                progress=False)
    return TrainConfig(kind=kind, **{**base, **overrides})


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_euler_integrates_a_straight_flow_exactly(steps):
    x0, x1 = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.allclose(euler_sample(lambda x, t: x1 - x0, x1, steps), x0, atol=1e-6)


def test_euler_converges_at_first_order_and_dopri5_is_exact():
    x1 = torch.randn(3, 2, dtype=torch.float64)
    exact = x1 * math.exp(-1.0)  # dx/dt = x from t = 1 to 0

    def error(n: int) -> float:
        return float((euler_sample(lambda x, t: x, x1, n) - exact).abs().max())

    assert error(64) < error(32) / 1.8 < error(16) / 3.2  # halving the step halves the error
    x0, nfe = adaptive_sample(lambda x, t: x, x1, rtol=1e-8, atol=1e-8)
    assert torch.allclose(x0, exact, atol=1e-7) and nfe > 6
    x0, _ = adaptive_sample(lambda x, t: t[:, None] * x, x1)  # x(0) = x(1) exp(-1/2)
    assert torch.allclose(x0, x1 * math.exp(-0.5), atol=1e-4)


def test_logit_normal_timesteps_crowd_the_middle():
    gen = torch.Generator().manual_seed(0)
    ln = sample_timesteps(20000, "logit_normal", generator=gen)
    un = sample_timesteps(20000, "uniform", generator=gen)
    assert ln.min() > 0 and ln.max() < 1 and abs(float(ln.median()) - 0.5) < 0.01
    middle = lambda t: float(((t > 0.3) & (t < 0.7)).float().mean())  # noqa: E731
    assert middle(ln) > 0.5 > middle(un) - 0.05  # ~0.58 vs 0.4
    shifted = sample_timesteps(20000, "logit_normal", mean=1.0, generator=gen)
    assert float(shifted.median()) == pytest.approx(1 / (1 + math.exp(-1)), abs=0.01)
    with pytest.raises(ValueError, match="uniform"):
        sample_timesteps(2, "cosine")


def test_dit_starts_at_zero_and_its_positions_are_2d():
    dit = DiT(channels=3, size=8, patch=2, dim=32, depth=2, n_head=2, mlp_ratio=2.0,
              qk_norm=True, num_classes=3)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(dit(x, torch.rand(2), torch.tensor([0, 3])), torch.zeros_like(x))
    block = dit.blocks[0]
    h = torch.randn(2, 16, 32)
    assert torch.equal(block(h, torch.randn(2, 32)), h)  # adaLN-Zero: identity at init
    pos = sincos_2d(32, 4, 4).view(4, 4, 32)
    assert torch.equal(pos[:, 0, :16], pos[:, 3, :16])  # the first half encodes the row
    assert not torch.equal(pos[0, :, :16], pos[1, :, :16])
    assert torch.equal(pos[0, :, 16:], pos[3, :, 16:])  # the second half the column
    assert not torch.equal(pos[:, 0, 16:], pos[:, 1, 16:])


def test_guidance_one_is_the_conditional_velocity_and_null_is_unconditional():
    torch.manual_seed(0)
    model = RectifiedFlow(TINY).eval()
    with torch.no_grad():
        for p in model.dit.parameters():
            p.add_(0.05 * torch.randn_like(p))  # leave adaLN-Zero's all-zero output
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([0, 2])
    cond, null = model.dit(x, t, y), model.dit(x, t, model.null_labels(2, x.device))
    assert torch.allclose(model.velocity(x, t, y, 1.0), cond)
    assert torch.allclose(model.velocity(x, t, y, 0.0), null, atol=1e-6)
    assert torch.allclose(model.velocity(x, t, y, 3.0), null + 3 * (cond - null), atol=1e-5)
    assert model.sample(2, y=y, steps=2).shape == (2, 3, 16, 16)


def test_training_reflow_and_latents(tmp_path):
    images = write_images(tmp_path, train=8, eval=4)
    teacher = train_model("rectified_flow", dataset_uri=images,
                          out_uri=(tmp_path / "rf").as_uri(), model_config=TINY,
                          train_config=train_config(steps=20, log_every=10))
    assert teacher.final_loss < teacher.first_loss
    assert {"loss", "fd", "fd_features"} <= set(teacher.eval_metrics)

    student_cfg = student_config(TINY, teacher.checkpoint_uri, reflow_steps=3)
    student = RectifiedFlow(student_cfg)
    t_state = student.teacher.state_dict()
    assert all(torch.equal(v, t_state[f"dit.{k}"])  # the student starts as the teacher
               for k, v in student.dit.state_dict().items())
    run = train_model("rectified_flow", dataset_uri=images, out_uri=(tmp_path / "2rf").as_uri(),
                      model_config=student_cfg, train_config=train_config(steps=3))
    assert math.isfinite(run.final_loss)
    with pytest.raises(ValueError, match="differs from this model"):
        RectifiedFlow(student_config(RectifiedFlowConfig.preset("tiny", num_classes=3, dim=32),
                                     teacher.checkpoint_uri))

    vae = train_model("vae", dataset_uri=images, out_uri=(tmp_path / "vae").as_uri(),
                      model_config=VAEConfig.preset("tiny"), train_config=train_config("vae"))
    latent_cfg = RectifiedFlowConfig.preset("tiny", num_classes=3, latent_from=vae.checkpoint_uri,
                                            patch_size=1)
    run = train_model("rectified_flow", dataset_uri=images, out_uri=(tmp_path / "lat").as_uri(),
                      model_config=latent_cfg, train_config=train_config(steps=2))
    model = RectifiedFlow(latent_cfg)
    assert model.shape == (4, 4, 4)  # the tiny VAE's 4 channels at 16 / 4
    assert math.isfinite(run.final_loss) and run.eval_metrics["fd"] is not None
    from models.checkpoint import load_checkpoint

    state = load_checkpoint(run.checkpoint_uri)["model"]
    assert bool(state["scale_set"]) and 0 < float(state["latent_scale"]) != 1.0
