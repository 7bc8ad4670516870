"""Medusa-1 through the trainer: heads trained on a frozen LM from another run's checkpoint.

One base LM and one Medusa-1 run on top of it are trained per module (records shards in a
temporary folder, as the trainer reads them in production); the tests read their outputs.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.distributed as dist
from lm_testlib import counting, make_model, periodic_batch, toy_dataset
from torch.nn.parallel import DistributedDataParallel as DDP

from models.checkpoint import load_checkpoint
from models.generate import generate_greedy, generate_speculative
from models.kinds import train_model
from models.lm import DecoderLM, LMConfig
from models.medusa import freeze_backbone
from models.train_config import TrainConfig
from models.warm_start import init_from_checkpoint

V = 64
BASE = LMConfig.preset("tiny", vocab_size=V, block_size=32)
# medusa_weight 0.5: the logged loss must carry it (it is what the gradient comes from)
MEDUSA = LMConfig.preset("tiny", vocab_size=V, block_size=32, medusa_heads=3, medusa_weight=0.5)
HEAD_KEYS = {f"medusa.blocks.{k}.linear.{w}" for k in range(3) for w in ("weight", "bias")}
STEPS = 16


def config(**overrides) -> TrainConfig:
    base = dict(steps=STEPS, batch_size=4, lr=3e-2, min_lr=3e-3, warmup_steps=2, log_every=1,
                ckpt_every=8, device="cpu", progress=False, prefetch=0)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shards, a trained base LM's run folder, and a Medusa-1 run on top of it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the tests: the resume test compares bits with this run
    tmp = tmp_path_factory.mktemp("medusa1")
    dataset = toy_dataset(tmp, counting(80, V), eval_docs=counting(100, V)[80:])
    base = (tmp / "base").as_uri()
    train_model("lm", dataset_uri=dataset, out_uri=base, model_config=BASE,
                train_config=config(steps=30, lr=1e-2, min_lr=1e-3, ckpt_every=0))
    medusa = train_model("lm", dataset_uri=dataset, out_uri=(tmp / "medusa").as_uri(),
                         model_config=MEDUSA,
                         train_config=config(init_from=base, freeze_backbone=True))
    torch.set_num_threads(threads)
    return tmp, dataset, base, medusa


def test_backbone_stays_bit_identical_and_only_the_heads_train(runs):
    tmp, _, base, medusa = runs
    source = load_checkpoint(f"{base}/ckpt.pt")["model"]
    ckpt = load_checkpoint(medusa.checkpoint_uri)
    assert set(ckpt["model"]) - set(source) == HEAD_KEYS
    for name, tensor in source.items():
        assert torch.equal(ckpt["model"][name], tensor), name
    for name in HEAD_KEYS:  # zero-initialised, so any change shows
        assert ckpt["model"][name].abs().sum() > 0, name
    # The optimizer holds the 6 head tensors only (weights with decay, biases without).
    groups = ckpt["optimizer"]["param_groups"]
    assert [len(g["params"]) for g in groups] == [3, 3]
    shapes = sorted(tuple(s["exp_avg"].shape) for s in ckpt["optimizer"]["state"].values())
    assert shapes == sorted([(64, 64)] * 3 + [(64,)] * 3)
    run_config = json.loads((tmp / "medusa" / "config.json").read_text())
    assert run_config["trainable_params"] == 3 * (64 * 64 + 64)
    assert run_config["train_config"]["init_from"] == base


def test_logged_loss_is_the_weighted_medusa_loss_and_it_drops(runs):
    tmp, _, _, medusa = runs
    lines = [json.loads(line) for line in (tmp / "medusa" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, STEPS + 1))
    for m in lines:
        assert m["loss"] == pytest.approx(0.5 * m["loss_parts"]["medusa"], rel=1e-6)
    heads = [m["loss_parts"]["medusa"] for m in lines]
    assert sum(heads[-4:]) < 0.8 * sum(heads[:4]), heads
    assert medusa.final_loss < medusa.first_loss


def test_evaluation_is_the_frozen_backbones_next_token_loss(runs):
    tmp, _, _, medusa = runs
    base_lines = [json.loads(line) for line in (tmp / "base" / "metrics.jsonl").read_text().splitlines()]
    base_eval = base_lines[-1]["eval"]
    assert medusa.eval_metrics["step"] == STEPS and base_eval["step"] == 30
    # The heads trained, the backbone and its LM head did not: the same next-token loss.
    assert medusa.eval_metrics["loss"] == pytest.approx(base_eval["loss"], rel=1e-6)
    assert medusa.eval_metrics["tokens"] == base_eval["tokens"] > 0


class Killed(Exception):
    """Stands in for a preempted job."""


def test_killed_and_resumed_medusa1_run_matches_the_straight_run(runs):
    tmp, dataset, base, straight = runs
    out = (tmp / "resumed").as_uri()

    def kill_at_10(record):
        if record["step"] == 10:  # after the step-8 checkpoint
            raise Killed

    with pytest.raises(Killed):
        train_model("lm", dataset_uri=dataset, out_uri=out, model_config=MEDUSA,
                    train_config=config(init_from=base, freeze_backbone=True),
                    on_step=kill_at_10)
    # On resume the run's own checkpoint wins: init_from is not even read.
    resumed = train_model("lm", dataset_uri=dataset, out_uri=out, model_config=MEDUSA,
                          resume=True,
                          train_config=config(init_from=str(tmp / "gone"), freeze_backbone=True))
    assert resumed.start_step == 8 and resumed.final_loss == straight.final_loss
    a, b = load_checkpoint(straight.checkpoint_uri), load_checkpoint(resumed.checkpoint_uri)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(),
                    strict=True):
        assert torch.equal(x["exp_avg"], y["exp_avg"]) and torch.equal(x["exp_avg_sq"],
                                                                        y["exp_avg_sq"])
    assert b["train_config"]["init_from"] == base  # where the weights really came from


def test_speculative_decoding_with_medusa1_heads_equals_greedy(runs):
    _, _, base, medusa = runs
    model = DecoderLM(MEDUSA)
    model.load_state_dict(load_checkpoint(medusa.checkpoint_uri)["model"])
    fresh = DecoderLM(MEDUSA)  # the same backbone with untrained heads
    init_from_checkpoint(fresh, base)
    prompts = [torch.tensor([[5, 6, 7, 8]]), torch.tensor([[40, 41]]),
               torch.tensor([[60, 61, 62, 63, 1, 2]]), torch.tensor([[9, 2, 40]])]
    means = {}
    for name, m in (("trained", model.eval()), ("fresh", fresh.eval())):
        accepted = []
        for prompt in prompts:
            ref = generate_greedy(m, prompt, 20)
            got = generate_speculative(m, prompt, 20, draft="medusa")
            assert torch.equal(got.tokens, ref.tokens), (name, prompt.tolist())
            accepted.append(got.mean_accepted)
        means[name] = sum(accepted) / len(accepted)
    # Fresh heads copy the LM head (they guess t+1 for t+k+1): nearly every draft fails.
    assert means["trained"] > 2.0 > 1.5 > means["fresh"], means


@pytest.mark.parametrize("own_head", [False, True])
def test_init_from_keeps_fresh_heads_and_copies_the_loaded_lm_head(runs, own_head):
    _, _, base, _ = runs
    model = DecoderLM(LMConfig.preset("tiny", vocab_size=V, block_size=32, medusa_heads=2,
                                      medusa_own_head=own_head))
    report = init_from_checkpoint(model, base)
    assert all(name.startswith("medusa.") for name in report["missing"])
    assert report["unused"] == [] and report["checkpoint"] == f"{base}/ckpt.pt"
    loaded_head = load_checkpoint(report["checkpoint"])["model"]["lm_head.weight"]
    assert torch.equal(model.lm_head.weight, loaded_head)
    assert all(b.linear.weight.abs().sum() == 0 for b in model.medusa.blocks)
    if own_head:  # heads of their own start as the *loaded* LM head, not the random one
        assert all(torch.equal(h.weight, loaded_head) for h in model.medusa.heads)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (dict(freeze_backbone=True), ValueError, "needs init_from"),
        (dict(freeze_backbone="yes", init_from="x"), TypeError, "freeze_backbone"),
        (dict(init_from=""), ValueError, "init_from"),
        (dict(init_from=3), TypeError, "init_from"),
    ],
)
def test_bad_medusa1_train_config_raises(overrides, error, match):
    with pytest.raises(error, match=match):
        config(**overrides)


@pytest.mark.parametrize(
    "model_overrides, train_overrides, error, match",
    [
        (dict(medusa_heads=0), {}, ValueError, "has none"),
        (dict(vocab_size=V + 8), {}, ValueError, r"tok_emb\.weight has shape \(64, 64\) there"),
        (dict(n_head=8), {}, ValueError, "n_head is 4 there"),
        (dict(mtp_depth=1), {}, ValueError, r"lacks mtp\.0\."),  # a backbone tensor
        ({}, dict(block_size=3), ValueError, "must exceed medusa_heads"),
        ({}, dict(init_from="no/such/run"), FileNotFoundError, "no checkpoint at no/such/run"),
    ],
)
def test_medusa1_run_that_cannot_work_raises(runs, model_overrides, train_overrides, error,
                                             match):
    tmp, dataset, base, _ = runs
    model = dataclasses.replace(MEDUSA, **model_overrides)
    train = config(**{"init_from": base, "freeze_backbone": True, **train_overrides})
    with pytest.raises(error, match=match):
        train_model("lm", dataset_uri=dataset, out_uri=(tmp / "bad").as_uri(),
                    model_config=model, train_config=train)


def test_resume_refuses_to_unfreeze(runs):
    tmp, dataset, base, medusa = runs
    with pytest.raises(ValueError, match="freeze_backbone"):
        train_model("lm", dataset_uri=dataset, out_uri=(tmp / "unfrozen").as_uri(),
                    model_config=MEDUSA, train_config=config(init_from=base),
                    resume=medusa.checkpoint_uri)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_medusa1_under_autocast_keeps_the_backbone(runs, precision):
    tmp, dataset, base, _ = runs
    result = train_model("lm", dataset_uri=dataset, out_uri=(tmp / precision).as_uri(),
                         model_config=MEDUSA, train_config=config(
                             steps=2, init_from=base, freeze_backbone=True, precision=precision))
    source = load_checkpoint(f"{base}/ckpt.pt")["model"]
    weights = load_checkpoint(result.checkpoint_uri)["model"]
    assert all(torch.equal(weights[k], v) for k, v in source.items())
    assert result.precision == precision and math.isfinite(result.final_loss)


def test_ddp_with_a_frozen_backbone_reduces_the_heads_only(tmp_path):
    """DDP with find_unused_parameters=False: frozen tensors are not in its buckets, and every
    head gets a gradient each step (a trainable tensor without one fails the next step)."""
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0,
                            world_size=1)
    try:
        model = make_model(medusa_heads=2)
        freeze_backbone(model)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        ddp = DDP(model)  # find_unused_parameters=False, as the trainer builds it
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        x, y = periodic_batch(2, 16)
        for _ in range(3):
            _, loss = ddp(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=False)
    finally:
        dist.destroy_process_group()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n, _ in model.named_parameters() if n.startswith("medusa.")}


@pytest.mark.cuda
def test_cuda_medusa1_with_compile_and_fp16(runs):
    """torch.compile + GradScaler + a fused attention kernel: the backbone stays put, the logged
    loss is the heads'."""
    tmp, dataset, base, _ = runs
    result = train_model("lm", dataset_uri=dataset, out_uri=(tmp / "cuda").as_uri(),
                         model_config=MEDUSA,
                         train_config=config(steps=8, init_from=base, freeze_backbone=True,
                                             device="cuda", precision="fp16", compile=True))
    assert result.device == "cuda" and result.extras["attention"] in ("flash", "cudnn")
    source = load_checkpoint(f"{base}/ckpt.pt")["model"]
    weights = load_checkpoint(result.checkpoint_uri)["model"]
    assert all(torch.equal(weights[k], v) for k, v in source.items())
    assert not all(torch.equal(weights[k], torch.zeros_like(weights[k])) for k in HEAD_KEYS)
    lines = [json.loads(line) for line in (tmp / "cuda" / "metrics.jsonl").read_text().splitlines()]
    for m in lines:  # compiled forwards still report their loss parts to the raw model
        assert m["loss"] == pytest.approx(0.5 * m["loss_parts"]["medusa"], rel=1e-5)
