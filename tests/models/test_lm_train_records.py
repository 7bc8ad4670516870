"""End to end: records.DatasetWriter shards in tmp_path -> train_model("lm") -> checkpoint."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from lm_testlib import counting as _counting
from lm_testlib import toy_dataset

from models.checkpoint import load_checkpoint
from models.kinds import train_model
from models.lm import LMConfig
from models.train_config import TrainConfig

V = 64


@pytest.fixture
def dataset_uri(tmp_path, toy_docs):
    return toy_dataset(tmp_path, toy_docs(60, V))


def test_train_lm_from_records(tmp_path, dataset_uri):
    out_uri = (tmp_path / "models" / "lm" / "run-1").as_uri()
    train_config = TrainConfig(
        steps=20, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2, log_every=5, device="cpu"
    )
    runs = [
        train_model(
            "lm",
            dataset_uri=dataset_uri,
            out_uri=f"{out_uri}-{i}",
            model_config=LMConfig.preset("tiny", vocab_size=V, block_size=32),
            train_config=train_config,
        )
        for i in range(2)
    ]
    result = runs[0]
    assert result.final_loss < 0.8 * result.first_loss, result
    assert runs[1].final_loss == result.final_loss  # seeded reader shuffle + init: repeatable
    assert result.examples == 20 * 4 * 32 and result.device == "cpu"
    assert result.eval_metrics == {}  # the dataset has no eval split: no evaluation

    manifest = (tmp_path / "records" / "toy" / "v=1" / "manifest.json").read_bytes()
    ckpt = load_checkpoint(result.checkpoint_uri)
    assert ckpt["dataset_manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert ckpt["reader"] is not None and ckpt["step"] == 20
    metrics = (tmp_path / "models" / "lm" / "run-1-0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [1, 5, 10, 15, 20]
    assert all("eval" not in json.loads(line) for line in metrics)
    config = json.loads((tmp_path / "models" / "lm" / "run-1-0" / "config.json").read_text())
    assert config["eval_split"] is None


def test_eval_split_is_evaluated_and_details_are_json(tmp_path, toy_docs):
    uri = toy_dataset(tmp_path, toy_docs(60, V), eval_docs=toy_docs(20, V, seed=1))
    result = train_model("lm", dataset_uri=uri, out_uri=(tmp_path / "run").as_uri(),
                         model_config=LMConfig.preset("tiny", vocab_size=V, block_size=32),
                         train_config=resume_config(steps=6, eval_every=3, log_every=2))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m.get("eval", {}).get("step")) for m in lines] == [
        (1, None), (2, None), (3, 3), (4, None), (6, 6)]
    assert result.eval_metrics == lines[-1]["eval"]
    assert result.eval_metrics["perplexity"] == pytest.approx(
        math.exp(result.eval_metrics["loss"]))
    details = json.loads(json.dumps(result.details(), allow_nan=False))
    assert details == {
        "first_loss": result.first_loss, "final_loss": result.final_loss, "steps": 6,
        "examples": 6 * 4 * 32, "unit": "tokens", "device": "cpu", "precision": "fp32",
        "skipped_steps": 0, "eval": result.eval_metrics,
        "train_metrics": {"loss_parts": {"main": result.final_loss, "total": result.final_loss}},
        "attention": result.extras["attention"], "init_from": None, "freeze_backbone": False}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["eval_split"] == "eval" and config["kind"] == "lm"


class Killed(Exception):
    """Stands in for a preempted job."""


def resume_config(**overrides) -> TrainConfig:
    base = dict(
        steps=16, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2, log_every=1,
        ckpt_every=5, device="cpu", progress=False,
    )
    return TrainConfig(**{**base, **overrides})


def losses(metrics_path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    return [(m["step"], m["loss"]) for m in lines]


def evals(metrics_path) -> list[dict]:
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    return [m["eval"] for m in lines if "eval" in m]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_killed_and_resumed_run_matches_the_straight_run(tmp_path, toy_docs, num_workers):
    # 60 documents hold ~10 steps of 4 x 33 tokens: 16 steps cross an epoch boundary.
    # Dropout makes the result depend on the restored RNG state too; evaluations (every 4
    # steps) must not disturb it.
    dataset_uri = toy_dataset(tmp_path, toy_docs(60, V), eval_docs=toy_docs(10, V, seed=1))
    model = LMConfig.preset("tiny", vocab_size=V, block_size=32, dropout=0.1)
    cfg = resume_config(num_workers=num_workers, eval_every=4)
    straight = train_model("lm", dataset_uri=dataset_uri, out_uri=(tmp_path / "a").as_uri(),
                           model_config=model, train_config=cfg)

    def kill_at_7(record):
        if record["step"] == 7:  # after the step-5 checkpoint, before the next one
            raise Killed

    out_b = (tmp_path / "b").as_uri()
    with pytest.raises(Killed):
        train_model("lm", dataset_uri=dataset_uri, out_uri=out_b, model_config=model,
                    train_config=cfg, on_step=kill_at_7)
    assert load_checkpoint(f"{out_b}/ckpt.pt")["step"] == 5
    assert [s for s, _ in losses(tmp_path / "b" / "metrics.jsonl")] == list(range(1, 8))
    resumed = train_model("lm", dataset_uri=dataset_uri, out_uri=out_b, model_config=model,
                          train_config=cfg, resume=True)

    assert resumed.start_step == 5 and resumed.steps == 16
    assert resumed.final_loss == straight.final_loss
    assert losses(tmp_path / "b" / "metrics.jsonl") == losses(tmp_path / "a" / "metrics.jsonl")
    assert evals(tmp_path / "b" / "metrics.jsonl") == evals(tmp_path / "a" / "metrics.jsonl")
    assert [e["step"] for e in evals(tmp_path / "a" / "metrics.jsonl")] == [4, 8, 12, 16]
    assert resumed.eval_metrics == straight.eval_metrics
    a, b = load_checkpoint(straight.checkpoint_uri), load_checkpoint(resumed.checkpoint_uri)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["reader"] == b["reader"] and a["reader"]["epoch"] >= 1  # crossed an epoch
    assert torch.equal(a["data"][0]["packer"]["carry"], b["data"][0]["packer"]["carry"])
    exp_avg = [s["exp_avg"] for s in a["optimizer"]["state"].values()]
    assert all(torch.equal(x, s["exp_avg"]) for x, s in
               zip(exp_avg, b["optimizer"]["state"].values(), strict=True))


def test_resume_without_a_checkpoint_starts_fresh(tmp_path, dataset_uri):
    model = LMConfig.preset("tiny", vocab_size=V, block_size=32)
    result = train_model("lm", dataset_uri=dataset_uri, out_uri=(tmp_path / "r").as_uri(),
                         model_config=model, train_config=resume_config(steps=3), resume=True)
    assert result.start_step == 0 and result.steps == 3
    with pytest.raises(FileNotFoundError):
        train_model("lm", dataset_uri=dataset_uri, out_uri=(tmp_path / "s").as_uri(),
                    model_config=model, train_config=resume_config(steps=3),
                    resume=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize(
    "model_overrides, train_overrides, match",
    [
        ({}, dict(batch_size=2), "batch_size"),
        ({}, dict(seed=1), "seed"),
        (dict(n_layer=1), {}, "model config"),
    ],
)
def test_resume_refuses_another_data_stream_or_model(
    tmp_path, dataset_uri, model_overrides, train_overrides, match
):
    out = (tmp_path / "run").as_uri()
    model = dict(vocab_size=V, block_size=32)
    train_model("lm", dataset_uri=dataset_uri, out_uri=out,
                model_config=LMConfig.preset("tiny", **model), train_config=resume_config(steps=2))
    with pytest.raises(ValueError, match=match):
        train_model("lm", dataset_uri=dataset_uri, out_uri=out,
                    model_config=LMConfig.preset("tiny", **{**model, **model_overrides}),
                    train_config=resume_config(steps=4, **train_overrides), resume=True)


def counting(n_docs: int) -> list[list[int]]:
    return _counting(n_docs, V)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_fused_attention_compile_workers_and_resume(tmp_path, precision):
    uri = toy_dataset(tmp_path, counting(200))
    model = LMConfig.preset("tiny", vocab_size=V, block_size=32)
    out = (tmp_path / "run").as_uri()
    cfg = dict(batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=2, log_every=5, ckpt_every=10,
               device="cuda", precision=precision, compile=True, num_workers=2, progress=False,
               peak_flops=1e14)
    first = train_model("lm", dataset_uri=uri, out_uri=out, model_config=model,
                        train_config=TrainConfig(steps=20, **cfg))
    assert (first.device, first.precision) == ("cuda", precision)
    assert first.extras["attention"] in ("flash", "cudnn")  # a fused kernel, never math
    assert first.final_loss < 0.8 * first.first_loss
    more = train_model("lm", dataset_uri=uri, out_uri=out, model_config=model,
                       train_config=TrainConfig(steps=30, **cfg), resume=True)
    assert more.start_step == 20 and load_checkpoint(more.checkpoint_uri)["step"] == 30
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 5, 10, 15, 20, 21, 25, 30]
    assert all(0 <= m["input_wait"] < 1 and 0 < m["mfu"] < 1 for m in lines)
    assert all((m["loss_scale"] is not None) == (precision == "fp16") for m in lines)


def test_compile_mode_reaches_torch_compile(tmp_path, dataset_uri, monkeypatch):
    """train.compile_mode is torch.compile's mode (on CPU no CUDA graphs are made: it trains
    as the default mode does)."""
    modes, real_compile = [], torch.compile

    def recording_compile(model, **kwargs):
        modes.append(kwargs.get("mode"))
        return real_compile(model, **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    result = train_model("lm", dataset_uri=dataset_uri, out_uri=(tmp_path / "run").as_uri(),
                         model_config=LMConfig.preset("tiny", vocab_size=V, block_size=32),
                         train_config=TrainConfig(steps=6, batch_size=4, lr=3e-3, device="cpu",
                                                  compile=True, compile_mode="reduce-overhead",
                                                  grad_accum=2, progress=False))
    assert modes == ["reduce-overhead"]
    assert math.isfinite(result.final_loss) and result.final_loss < result.first_loss


@pytest.mark.cuda
def test_cuda_graphs_step_trains_like_the_default_compile(tmp_path):
    """compile_mode reduce-overhead (CUDA graphs) with two micro-steps a step: the losses of
    the default mode, to bf16's rounding, and a resume that continues the run."""
    uri = toy_dataset(tmp_path, counting(200))
    model = LMConfig.preset("tiny", vocab_size=V, block_size=32)
    cfg = dict(batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=2, log_every=1, device="cuda",
               precision="bf16", compile=True, grad_accum=2, num_workers=0, progress=False)
    runs = {mode: train_model("lm", dataset_uri=uri, out_uri=(tmp_path / mode).as_uri(),
                              model_config=model,
                              train_config=TrainConfig(steps=12, compile_mode=mode, **cfg))
            for mode in ("default", "reduce-overhead")}
    losses = {mode: [json.loads(line)["loss"] for line in
                     (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
              for mode in runs}
    assert len(losses["reduce-overhead"]) == 12
    torch.testing.assert_close(losses["reduce-overhead"], losses["default"], rtol=0.03, atol=0.03)
    assert runs["reduce-overhead"].final_loss < 0.8 * runs["reduce-overhead"].first_loss
    more = train_model("lm", dataset_uri=uri, out_uri=(tmp_path / "reduce-overhead").as_uri(),
                       model_config=model,
                       train_config=TrainConfig(steps=16, compile_mode="reduce-overhead", **cfg),
                       resume=True)
    assert more.start_step == 12 and math.isfinite(more.final_loss)


@pytest.mark.cuda
def test_cuda_fp32_without_math_attention_fails_loudly(tmp_path):
    uri = toy_dataset(tmp_path, counting(40))
    with pytest.raises(RuntimeError, match="FlashAttention cannot run"):
        train_model("lm", dataset_uri=uri, out_uri=(tmp_path / "run").as_uri(),
                    model_config=LMConfig.preset("tiny", vocab_size=V, block_size=32),
                    train_config=TrainConfig(steps=2, batch_size=4, device="cuda",
                                             precision="fp32", compile=False, progress=False))
