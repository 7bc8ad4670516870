"""The vision kinds through the one loop on CPU: records/ shards -> train_model -> checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from vision_testlib import tiny_effnet, tiny_vqvae, write_images

from models.checkpoint import load_checkpoint
from models.efficientnet import EfficientNet
from models.kinds import train_model
from models.task_vision import IMAGENET_MEAN, IMAGENET_STD, VISION_MODELS, VisionTask
from models.train_common import scaler_step
from models.train_config import TrainConfig
from models.trainer import train
from models.vision_data import decode_images, image_spec, to_model_input
from records.reader import RecordDataset

MODELS = {"vqvae": tiny_vqvae, "efficientnet": tiny_effnet}


def config(kind: str, **overrides) -> TrainConfig:
    base = dict(steps=8, batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=2, weight_decay=0.0,
                log_every=1, device="cpu", progress=False)
    return TrainConfig(kind=kind, **{**base, **overrides})


def train_vision(*, kind: str, train_config: TrainConfig | None = None, **kwargs):
    return train_model(kind, train_config=train_config or config(kind), **kwargs)


def lines(result) -> list[dict]:
    with open(result.metrics_uri.removeprefix("file://")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path, train=8, eval=6)  # one batch of 8: the same batch every step


def test_vqvae_overfits_a_tiny_batch(tmp_path, images):
    result = train_vision(kind="vqvae", dataset_uri=images, out_uri=(tmp_path / "vq").as_uri(),
                          model_config=tiny_vqvae(),
                          train_config=config("vqvae", steps=100, log_every=25))
    assert result.final_loss < result.first_loss / 10, result
    assert result.train_metrics["psnr"] > 20 and result.train_metrics["perplexity"] > 4
    assert set(result.eval_metrics) == {"step", "mse", "psnr", "perplexity", "usage"}
    assert result.eval_metrics["step"] == 100 and result.examples == 800
    assert (result.unit, result.kind, result.extras) == ("images", "vqvae", {})
    records = lines(result)
    assert [r["step"] for r in records] == [1, 25, 50, 75, 100]
    assert {"images_per_s", "input_wait", "psnr", "usage", "restarts"} <= set(records[-1])
    assert records[-1]["eval"] == result.eval_metrics and "eval" not in records[0]


def test_efficientnet_overfits_a_tiny_batch(tmp_path, images):
    result = train_vision(kind="efficientnet", dataset_uri=images,
                          out_uri=(tmp_path / "en").as_uri(), model_config=tiny_effnet(),
                          train_config=config("efficientnet", steps=40, log_every=10,
                                              eval_every=20))
    assert result.train_metrics["accuracy"] == 1.0  # on the batch, BatchNorm in training mode
    assert result.final_loss < result.first_loss / 10, result
    evals = [r["eval"]["step"] for r in lines(result) if "eval" in r]
    assert evals == [20, 40]
    ckpt = load_checkpoint(result.checkpoint_uri)
    assert ckpt["extra"]["kind"] == "efficientnet" and ckpt["step"] == 40
    assert ckpt["model_config"] == dataclasses.asdict(tiny_effnet())

    # Top-1 on the eval split, recomputed by hand from the checkpoint (eval mode: BN running
    # statistics, which 40 steps on 8 images at 16x16 do not make reliable; hence no threshold).
    model = EfficientNet(tiny_effnet())
    model.load_state_dict(ckpt["model"])
    reader = RecordDataset(images, "eval", batch_size=6, feature_spec=image_spec(labels=True),
                           bytes_as="uint8")
    x, y = decode_images(next(iter(reader)), labels=True)
    with torch.no_grad():
        logits, _ = model.eval()(to_model_input(x, mean=IMAGENET_MEAN, std=IMAGENET_STD))
    accuracy = (logits.argmax(1) == y).float().mean().item()
    assert result.eval_metrics["accuracy"] == pytest.approx(accuracy)
    assert result.eval_metrics["images"] == 6


class Killed(Exception):
    """Stands in for a preempted job."""


@pytest.mark.parametrize("kind, num_workers", [
    ("vqvae", 0), ("efficientnet", 0),
    pytest.param("efficientnet", 2, marks=pytest.mark.slow),  # DataLoader workers: ~10 s
])
def test_killed_and_resumed_run_matches_the_straight_run(tmp_path, kind, num_workers):
    # 20 images in batches of 8 (drop_last: 2 a epoch): 8 steps cross epochs. Stochastic
    # depth, dropout and code restarts make the weights depend on the restored RNG too.
    uri = write_images(tmp_path, train=20, eval=4)
    model = {"vqvae": tiny_vqvae(restart_after=2),
             "efficientnet": tiny_effnet(drop_connect=0.3, dropout=0.2)}[kind]
    cfg = config(kind, steps=8, ckpt_every=4, num_workers=num_workers)
    straight = train_vision(kind=kind, dataset_uri=uri, out_uri=(tmp_path / "a").as_uri(),
                            model_config=model, train_config=cfg)

    def kill_at_6(record):
        if record["step"] == 6:  # after the step-4 checkpoint
            raise Killed

    out_b = (tmp_path / "b").as_uri()
    with pytest.raises(Killed):
        train_vision(kind=kind, dataset_uri=uri, out_uri=out_b, model_config=model,
                     train_config=cfg, on_step=kill_at_6)
    assert load_checkpoint(f"{out_b}/ckpt.pt")["step"] == 4
    resumed = train_vision(kind=kind, dataset_uri=uri, out_uri=out_b, model_config=model,
                           train_config=cfg, resume=True)

    assert resumed.start_step == 4 and resumed.steps == 8
    assert resumed.final_loss == straight.final_loss
    assert [r["loss"] for r in lines(resumed)] == [r["loss"] for r in lines(straight)]
    a, b = load_checkpoint(straight.checkpoint_uri), load_checkpoint(resumed.checkpoint_uri)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # buffers too
    assert a["reader"] == b["reader"] and a["reader"]["epoch"] >= 1
    if kind == "vqvae":
        assert int(a["model"]["quantizer.restarts"]) > 0  # restarts happened, identically


def test_resume_refuses_another_model(tmp_path, images):
    out = (tmp_path / "run").as_uri()
    train_vision(kind="vqvae", dataset_uri=images, out_uri=out, model_config=tiny_vqvae(),
                 train_config=config("vqvae", steps=2))
    with pytest.raises(ValueError, match="model config"):
        train_vision(kind="vqvae", dataset_uri=images, out_uri=out,
                     model_config=tiny_vqvae(codebook_size=8),
                     train_config=config("vqvae", steps=4), resume=True)
    with pytest.raises(ValueError, match="batch_size"):
        train_vision(kind="vqvae", dataset_uri=images, out_uri=out, model_config=tiny_vqvae(),
                     train_config=config("vqvae", steps=4, batch_size=4), resume=True)
    with pytest.raises(TypeError, match="EfficientNetConfig"):
        train_vision(kind="efficientnet", dataset_uri=images, out_uri=out,
                     model_config=tiny_vqvae(), train_config=config("efficientnet", steps=4))
    with pytest.raises(ValueError, match="'vqvae' TrainConfig"):
        train_vision(kind="efficientnet", dataset_uri=images, out_uri=out,
                     model_config=tiny_effnet(), train_config=config("vqvae", steps=4))


def test_scaler_step_counts_a_skipped_step():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = model.weight.detach().clone()
    scaler.scale(model(torch.ones(1, 3)).sum()).backward()
    model.weight.grad[0, 0] = float("inf")  # an fp16 overflow
    assert bool(scaler_step(scaler, opt)) is True
    assert torch.equal(model.weight, before) and scaler.get_scale() == 512.0
    opt.zero_grad()
    scaler.scale(model(torch.ones(1, 3)).sum()).backward()
    assert bool(scaler_step(scaler, opt)) is False and not torch.equal(model.weight, before)
    assert scaler_step(torch.amp.GradScaler("cpu", enabled=False), opt) is None


def test_fp16_trainer_counts_and_logs_overflowed_steps(tmp_path, images):
    # The GradScaler starts at 2**16 and backs off through a few overflowing steps; then an
    # overflow is injected into the last step. Every backoff must be counted exactly once.
    steps, calls = 12, []
    base = VISION_MODELS["efficientnet"]

    def overflow_on_last_call(model, x, y):
        loss, metrics = base.train_step(model, x, y)
        calls.append(1)
        return (loss * float("inf") if len(calls) == steps else loss), metrics

    task = VisionTask(dataclasses.replace(base, train_step=overflow_on_last_call), tiny_effnet(),
                      config("efficientnet", steps=steps, precision="fp16"))
    result = train(task, dataset_uri=images, out_uri=(tmp_path / "fp16").as_uri(),
                   eval_split=None)
    assert result.precision == "fp16"
    records = lines(result)
    scale, skipped = 2.0**16, 0
    for r in records:
        assert r["skipped_steps"] - skipped == int(r["loss_scale"] < scale), records
        scale, skipped = r["loss_scale"], r["skipped_steps"]
    assert records[-1]["loss_scale"] == records[-2]["loss_scale"] / 2  # the injected overflow
    assert records[-1]["skipped_steps"] == records[-2]["skipped_steps"] + 1
    assert result.skipped_steps == skipped < steps
    assert load_checkpoint(result.checkpoint_uri)["extra"]["skipped_steps"] == skipped


@pytest.mark.slow
def test_benchmark_smoke_run_on_cpu(tmp_path):
    """benchmarks/train_vision.py end to end with tiny models; imports stay GPU-host safe."""
    root = Path(__file__).resolve().parents[2]
    code = (
        "import json, sys\n"
        "sys.argv = ['train_vision.py', '--tiny', '--device', 'cpu', '--steps', '2',\n"
        f"            '--images', '24', '--out', {str(tmp_path)!r}]\n"
        "import runpy\n"
        "runpy.run_path('benchmarks/train_vision.py', run_name='__main__')\n"
        "print('MODULES ' + json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
        "print('SHARDFORGE ' + json.dumps(sorted(m for m in sys.modules\n"
        "                                        if m.startswith('shardforge'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    tagged = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.stdout.splitlines()
              if line.split(" ", 1)[0] in ("RESULT", "MODULES", "SHARDFORGE")}
    result = json.loads(tagged["RESULT"])
    for kind in ("vqvae", "efficientnet"):
        assert set(result["configs"][kind]) == {"fp32", "fp16", "bf16"}
        assert result["speedup_vs_fp32"][kind]["fp32"] == 1.0
    assert "psnr" in result["configs"]["vqvae"]["fp16"]["eval"]
    modules = set(json.loads(tagged["MODULES"]))
    # numba (the reader's kernels, where installed) imports PyYAML for its own config file;
    # the project's YAML users (the base package's config) come with pydantic.
    yaml = set() if "numba" in modules else {"yaml"}
    assert not modules & {"tensorflow", "pyspark", "apache_beam", "pydantic", "features",
                          "pipelines", *yaml}, modules
    # the sample images come from shardforge.sample_images (numpy + PIL), nothing else of it
    assert set(json.loads(tagged["SHARDFORGE"])) == {"shardforge", "shardforge.sample_images"}
    assert "images/s vs the fp32 eager baseline" in out.stderr


@pytest.mark.cuda
@pytest.mark.parametrize("kind, precision", [("vqvae", "fp16"), ("efficientnet", "fp16"),
                                             ("efficientnet", "bf16")])
def test_cuda_mixed_precision_compile_channels_last_workers_and_resume(tmp_path, kind,
                                                                       precision):
    uri = write_images(tmp_path, train=64, eval=8, size=32)
    model = tiny_vqvae() if kind == "vqvae" else tiny_effnet(resolution=32)
    out = (tmp_path / "run").as_uri()
    cfg = dict(batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=2, log_every=5, ckpt_every=10,
               device="cuda", precision=precision, num_workers=2, progress=False)
    first = train_vision(kind=kind, dataset_uri=uri, out_uri=out, model_config=model,
                         train_config=TrainConfig(kind=kind, steps=20, **cfg))
    assert (first.device, first.precision) == ("cuda", precision)
    assert first.final_loss < first.first_loss and first.eval_metrics
    more = train_vision(kind=kind, dataset_uri=uri, out_uri=out, model_config=model,
                        train_config=TrainConfig(kind=kind, steps=30, **cfg), resume=True)
    assert more.start_step == 20 and load_checkpoint(more.checkpoint_uri)["step"] == 30
    records = lines(more)
    assert [r["step"] for r in records] == [1, 5, 10, 15, 20, 21, 25, 30]
    assert all((r["loss_scale"] is not None) == (precision == "fp16") for r in records)
    assert all(r["images_per_s"] > 0 and 0 <= r["input_wait"] < 1 for r in records)
