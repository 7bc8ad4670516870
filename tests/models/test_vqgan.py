"""models.vqgan through the shared loop: the discriminator's warm-up, its own optimizer, resume."""

from __future__ import annotations

import pytest
import torch
from vision_testlib import tiny_effnet, write_images

from models.checkpoint import load_checkpoint
from models.kinds import train_model
from models.train_common import seed_everything
from models.train_config import TrainConfig
from models.vq_tokens import export_vq_tokens
from models.vqgan import VQGAN, VQGANConfig, adaptive_weight, hinge_d_loss

MODEL = VQGANConfig.preset("tiny", codebook_size=16, disc_start=3)


def config(**overrides) -> TrainConfig:
    base = dict(steps=3, batch_size=4, warmup_steps=1, log_every=1, device="cpu", progress=False)
    return TrainConfig(kind="vqgan", **{**base, **overrides})


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("vqgan"), train=8, eval=4)


def initial_weights(seed: int = 1337) -> dict[str, torch.Tensor]:
    seed_everything(seed)  # as the loop does before task.build()
    return {k: v.clone() for k, v in VQGAN(MODEL).state_dict().items() if k != "_extra_state"}


def changed(weights: dict, before: dict, prefix: str) -> bool:
    return any(not torch.equal(weights[k], before[k]) for k in before
               if k.startswith(prefix) and before[k].is_floating_point() and "running" not in k)


def test_only_the_generator_trains_before_the_warm_up_then_both(tmp_path, images):
    before = initial_weights()
    warm = train_model("vqgan", dataset_uri=images, out_uri=(tmp_path / "a").as_uri(),
                       model_config=MODEL, train_config=config(steps=3))
    ckpt = load_checkpoint(warm.checkpoint_uri)
    assert changed(ckpt["model"], before, "vq.encoder.") and changed(ckpt["model"], before,
                                                                      "vq.decoder.")
    assert not changed(ckpt["model"], before, "discriminator.")  # disc_start = 3 steps
    assert warm.train_metrics["d_loss"] == 0 and warm.train_metrics["adaptive_weight"] == 0
    assert ckpt["model"]["_extra_state"]["optimizer"] == {}

    both = train_model("vqgan", dataset_uri=images, out_uri=(tmp_path / "b").as_uri(),
                       model_config=MODEL, train_config=config(steps=5))
    ckpt = load_checkpoint(both.checkpoint_uri)
    assert changed(ckpt["model"], before, "discriminator.")
    assert changed(ckpt["model"], before, "vq.decoder.")
    assert int(ckpt["model"]["steps_done"]) == 5
    assert both.train_metrics["d_loss"] > 0 and both.train_metrics["adaptive_weight"] > 0
    assert len(ckpt["model"]["_extra_state"]["optimizer"]["state"]) == len(
        [k for k in before if k.startswith("discriminator.") and k.endswith(("weight", "bias"))])
    # the loop's AdamW holds the generator only: no discriminator tensor in its state
    n_loop = sum(len(g["params"]) for g in ckpt["optimizer"]["param_groups"])
    assert n_loop == sum(1 for p in VQGAN(MODEL).parameters() if p.requires_grad)
    assert set(both.eval_metrics) >= {"mse", "psnr", "usage", "perceptual", "fd", "fd_features"}


def test_the_compiled_step_takes_the_adaptive_weight_through_a_retained_graph(tmp_path, images):
    # The adaptive weight backpropagates the compiled generator twice (retain_graph=True);
    # AOTAutograd's donated buffers refuse that unless the whole step runs without them.
    result = train_model("vqgan", dataset_uri=images, out_uri=(tmp_path / "c").as_uri(),
                         model_config=MODEL, train_config=config(steps=5, compile=True))
    assert result.train_metrics["adaptive_weight"] > 0 and result.train_metrics["d_loss"] > 0
    torch._dynamo.reset()


def test_resume_continues_the_discriminator_exactly(tmp_path, images):
    full = train_model("vqgan", dataset_uri=images, out_uri=(tmp_path / "full").as_uri(),
                       model_config=MODEL, train_config=config(steps=6))

    def stop_at_4(record):
        if record["step"] == 4:
            raise KeyboardInterrupt

    out = (tmp_path / "cut").as_uri()
    with pytest.raises(KeyboardInterrupt):
        train_model("vqgan", dataset_uri=images, out_uri=out, model_config=MODEL,
                    train_config=config(steps=6, ckpt_every=4), on_step=stop_at_4)
    resumed = train_model("vqgan", dataset_uri=images, out_uri=out, model_config=MODEL,
                          train_config=config(steps=6, ckpt_every=4), resume=True)
    a, b = load_checkpoint(full.checkpoint_uri)["model"], load_checkpoint(resumed.checkpoint_uri)["model"]
    for k, v in a.items():
        if k != "_extra_state":
            assert torch.equal(v, b[k]), k
    assert resumed.final_loss == pytest.approx(full.final_loss, rel=1e-6)


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    w = torch.randn(3, 3, requires_grad=True)
    x = torch.randn(5, 3)
    nll, g = (x @ w).pow(2).mean(), -(x @ w).mean() * 0.01
    g_nll = torch.autograd.grad(nll, w, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g, w, retain_graph=True)[0]
    expected = g_nll.norm() / (g_adv.norm() + 1e-4)
    assert float(adaptive_weight(nll, g, w)) == pytest.approx(float(expected), rel=1e-5)
    assert float(adaptive_weight(nll, g, w, max_weight=0.5)) == 0.5


def test_hinge_loss():
    assert float(hinge_d_loss(torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 1.0]))) == 0.5 * (
        0.5 + 1.0)  # real: relu(1-2), relu(1-0) -> 0.5; fake: relu(1-2), relu(1+1) -> 1


def test_perceptual_features_from_a_trained_classifier_and_tokens(tmp_path, images):
    effnet = train_model("efficientnet", dataset_uri=images, out_uri=(tmp_path / "en").as_uri(),
                         model_config=tiny_effnet(), train_config=TrainConfig(
                             kind="efficientnet", steps=1, batch_size=4, device="cpu",
                             progress=False))
    cfg = VQGANConfig.preset("tiny", codebook_size=16, perceptual_from=effnet.checkpoint_uri,
                             fid_from=effnet.checkpoint_uri)
    model = VQGAN(cfg)
    assert model.perceptual.features.source.startswith("efficientnet:")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert float(model.perceptual(x, x).max()) < 1e-6 and float(model.perceptual(x, -x).min()) > 0
    run = train_model("vqgan", dataset_uri=images, out_uri=(tmp_path / "vg").as_uri(),
                      model_config=cfg, train_config=config(steps=2))
    assert run.eval_metrics["fd_features"] == "classifier"
    manifest = export_vq_tokens(checkpoint_uri=run.checkpoint_uri, dataset_uri=images,
                                out_uri=(tmp_path / "tok").as_uri())
    assert manifest.config["kind"] == "vqgan" and manifest.config["code_grid"] == [4, 4]
    with pytest.raises(ValueError, match="efficientnet classifier"):
        VQGAN(VQGANConfig.preset("tiny", perceptual_from=run.checkpoint_uri))
