"""PEFT (LoRA, Adapter, Prefix) on a trained LM: the modules, the trainer runs, the checkpoints.

One base LM and one PEFT run per kind on top of it are trained per module (records shards
in a temporary folder, as the trainer reads them in production); most tests read their
outputs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os

import pytest
import torch
from lm_testlib import counting, make_model, periodic_batch, toy_dataset

from models.checkpoint import checkpoint_sha256, load_checkpoint, load_model_weights
from models.config_fields import FieldValueError
from models.kinds import ConfigFieldError, build_configs, train_model
from models.lm import DecoderLM, LMConfig
from models.peft import (
    apply_peft,
    load_peft,
    load_peft_checkpoint,
    merge_lora,
    merge_peft,
    peft_tensor_names,
    trainable_state_dict,
)
from models.peft_config import AdapterConfig, LoRAConfig, PrefixConfig
from models.task_lm import LMTask
from models.train_common import evaluate
from models.train_config import TrainConfig
from records.reader import RecordDataset

V = 64
BASE = LMConfig.preset("tiny", vocab_size=V, block_size=32)
KINDS = {  # small, so that the tiny model's runs take a second
    "lora": {"kind": "lora", "rank": 4},
    "adapter": {"kind": "adapter", "bottleneck": 16},
    "prefix": {"kind": "prefix", "length": 4, "reparam_hidden": 32},
}
STEPS = 16


def config(**overrides) -> TrainConfig:
    base = dict(steps=STEPS, batch_size=4, lr=1e-2, min_lr=1e-3, warmup_steps=2, log_every=1,
                ckpt_every=8, device="cpu", progress=False, prefetch=0)
    return TrainConfig(**{**base, **overrides})


def by_twos(n_docs: int) -> list[list[int]]:
    """Documents that count upwards in steps of two (mod vocab, skipping eos 0)."""
    return [[1 + (doc[0] - 1 + 2 * i) % (V - 1) for i in range(len(doc))]
            for doc in counting(n_docs, V)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shards, a trained base LM's checkpoint, and one PEFT run per kind on top of it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the tests: the resume test compares bits with these runs
    tmp = tmp_path_factory.mktemp("peft")
    # the base learns to count by ones, the PEFT runs to count by twos: a new task
    base_data = toy_dataset(tmp / "ones", counting(80, V))
    dataset = toy_dataset(tmp / "twos", by_twos(80), eval_docs=by_twos(100)[80:])
    base = (tmp / "base").as_uri()
    train_model("lm", dataset_uri=base_data, out_uri=base, model_config=BASE,
                train_config=config(steps=30, ckpt_every=0))
    results = {kind: train_model("lm", dataset_uri=dataset, out_uri=(tmp / kind).as_uri(),
                                 model_config=BASE,
                                 train_config=config(init_from=base, peft=peft))
               for kind, peft in KINDS.items()}
    torch.set_num_threads(threads)
    return tmp, dataset, f"{base}/ckpt.pt", results


def base_model() -> DecoderLM:
    return make_model().eval()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_only_the_injected_tensors_train_and_lora_and_adapters_start_as_the_base(kind):
    model = base_model()
    x, _ = periodic_batch(2, 16)
    before = model(x)[0]
    names_before = set(model.state_dict())
    apply_peft(model, KINDS[kind])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(peft_tensor_names(model)) == set(trainable_state_dict(model))
    assert trainable and not trainable & names_before  # base keys unchanged, none trains
    assert names_before <= set(model.state_dict())
    share = sum(p.numel() for p in model.parameters() if p.requires_grad) / sum(
        p.numel() for p in model.parameters())
    assert 0 < share < 0.6, share
    after = model(x)[0]
    if kind == "prefix":  # P extra keys change every attention's output from the start
        assert not torch.allclose(after, before)
    else:  # B = 0 / up = 0: exactly the base model
        assert torch.equal(after, before)
    with pytest.raises(ValueError, match="already has"):
        apply_peft(model, KINDS[kind])


def test_merged_lora_gives_the_unmerged_logits():
    model = base_model()
    apply_peft(model, {"kind": "lora", "rank": 4, "targets": ["qkv", "proj", "gate", "up",
                                                                "down"]})
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if name.endswith("lora_B"):
            p.data.normal_(std=0.05)  # a trained-looking update
    x, _ = periodic_batch(2, 16)
    unmerged = model(x)[0]
    merge_lora(model)
    assert not any("lora" in n for n in model.state_dict())
    assert all(type(m) is torch.nn.Linear for b in model.blocks
               for m in (b.attn.qkv, b.attn.proj, b.mlp.gate, b.mlp.up, b.mlp.proj))
    merged = model(x)[0]
    assert not torch.allclose(merged, base_model()(x)[0], atol=1e-3)  # the update is in
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)


def test_prefix_decodes_with_the_kv_cache_like_a_full_forward():
    model = base_model()
    apply_peft(model, KINDS["prefix"])
    x, _ = periodic_batch(1, 12)
    full = model(x)[0]
    cache = model.new_kv_cache()
    steps = [model.head(model.hidden_states(x[:, :5], cache))]
    for t in range(5, 12):
        steps.append(model.head(model.hidden_states(x[:, t:t + 1], cache)))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    merge_peft(model)  # the reparameterisation evaluated once: the same logits
    torch.testing.assert_close(model(x)[0], full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_peft_run_trains_only_its_tensors_and_its_loss_drops(runs, kind):
    tmp, _, base, results = runs
    result = results[kind]
    lines = [json.loads(line) for line in (tmp / kind / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in lines]
    assert sum(losses[-4:]) < 0.9 * sum(losses[:4]), losses
    details = result.details()
    assert details["peft"] == dataclasses.asdict(TrainConfig(init_from="x",
                                                             peft=KINDS[kind]).peft)
    assert 0 < details["trainable_params"] < details["total_params"]
    run_config = json.loads((tmp / kind / "config.json").read_text())
    assert run_config["trainable_params"] == details["trainable_params"]
    assert run_config["total_params"] == details["total_params"]
    assert run_config["train_config"]["peft"]["kind"] == kind


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_checkpoint_holds_the_trained_tensors_and_a_reference_to_the_base(runs, kind):
    _, _, base, results = runs
    ckpt = load_checkpoint(results[kind].checkpoint_uri)
    base_ckpt = load_checkpoint(base)
    assert not set(ckpt["model"]) & set(base_ckpt["model"])  # no base tensor
    n = sum(t.numel() for t in ckpt["model"].values())
    assert n == results[kind].extras["trainable_params"]
    ref = ckpt["peft"]
    assert ref["base_sha256"] == checkpoint_sha256(base)
    assert os.path.samefile(ref["base_uri"].removeprefix("file://"),
                            base.removeprefix("file://"))
    state = ckpt["optimizer"]["state"].values()
    assert sum(s["exp_avg"].numel() for s in state) == n  # Adam moments of those only
    if kind != "prefix":  # the reparameterisation MLP outweighs the tiny model itself
        size = os.path.getsize(results[kind].checkpoint_uri.removeprefix("file://"))
        assert size < 0.5 * os.path.getsize(base.removeprefix("file://"))
    with pytest.raises(ValueError, match="is a PEFT checkpoint"):  # not a warm start
        load_model_weights(base_model(), results[kind].checkpoint_uri)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_loaded_peft_checkpoint_reproduces_the_trained_model(runs, kind):
    tmp, dataset, _, results = runs
    result = results[kind]
    model = load_peft_checkpoint(result.checkpoint_uri)
    # the trainer's final evaluation was of the trained model: the loaded one scores the same
    task = LMTask(BASE, config())
    reader = RecordDataset(dataset, "eval", batch_size=4)
    loaded = evaluate(task, model, reader, device=torch.device("cpu"))
    assert result.eval_metrics["step"] == STEPS
    assert loaded["loss"] == pytest.approx(result.eval_metrics["loss"], rel=1e-6)
    x, _ = periodic_batch(2, 16)
    logits = model(x)[0]
    merged = load_peft_checkpoint(result.checkpoint_uri, merge=True)
    torch.testing.assert_close(merged(x)[0], logits, atol=1e-5, rtol=1e-5)
    if kind == "prefix":
        assert set(trainable_state_dict(merged)) == {"peft_prefix.kv"}
        again = load_peft(base_from(result), trainable_state_dict(merged), KINDS[kind])
        torch.testing.assert_close(again.eval()(x)[0], logits, atol=1e-5, rtol=1e-5)


def base_from(result) -> DecoderLM:
    model = DecoderLM(BASE)
    load_model_weights(model, load_checkpoint(result.checkpoint_uri)["peft"]["base_uri"])
    return model


class Killed(Exception):
    """Stands in for a preempted job."""


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_killed_and_resumed_peft_run_matches_the_straight_run(runs, kind):
    tmp, dataset, base, results = runs
    straight = results[kind]
    out = (tmp / f"{kind}-resumed").as_uri()

    def kill_at_10(record):
        if record["step"] == 10:  # after the step-8 checkpoint
            raise Killed

    with pytest.raises(Killed):
        train_model("lm", dataset_uri=dataset, out_uri=out, model_config=BASE,
                    train_config=config(init_from=base, peft=KINDS[kind]), on_step=kill_at_10)
    # On resume the base comes from the checkpoint's reference: init_from is not even read.
    resumed = train_model("lm", dataset_uri=dataset, out_uri=out, model_config=BASE,
                          resume=True, train_config=config(init_from=str(tmp / "gone"),
                                                           peft=KINDS[kind]))
    assert resumed.start_step == 8 and resumed.final_loss == straight.final_loss
    a, b = load_checkpoint(straight.checkpoint_uri), load_checkpoint(resumed.checkpoint_uri)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(),
                    strict=True):
        assert torch.equal(x["exp_avg"], y["exp_avg"]) and torch.equal(x["exp_avg_sq"],
                                                                        y["exp_avg_sq"])
    assert b["peft"]["base_sha256"] == a["peft"]["base_sha256"]


def test_resume_refuses_another_peft_setting_and_a_changed_base(runs, tmp_path):
    tmp, dataset, base, results = runs
    lora = results["lora"].checkpoint_uri
    for peft in ({"kind": "lora", "rank": 2}, None):
        train = config(init_from=base, peft=peft)
        with pytest.raises(ValueError, match="cannot resume: the checkpoint was trained with "
                                             "peft="):
            train_model("lm", dataset_uri=dataset, out_uri=(tmp_path / "x").as_uri(),
                        model_config=BASE, train_config=train, resume=lora)
    ckpt = load_checkpoint(lora)
    ckpt["peft"]["base_sha256"] = "0" * 64  # as if the base run had been trained on since
    torch.save(ckpt, tmp_path / "moved.pt")
    with pytest.raises(ValueError, match="changed since the PEFT run started"):
        load_peft_checkpoint(str(tmp_path / "moved.pt"))
    assert load_peft_checkpoint(str(tmp_path / "moved.pt"), verify=False) is not None


def test_peft_model_must_be_the_base_model(runs, tmp_path):
    _, dataset, base, _ = runs
    other = dataclasses.replace(BASE, mixer="sliding_window", window=8)  # the same shapes
    with pytest.raises(ValueError, match="LMConfig.mixer is 'attention' in .* but "
                                         "'sliding_window' here"):
        train_model("lm", dataset_uri=dataset, out_uri=(tmp_path / "x").as_uri(),
                    model_config=other, train_config=config(init_from=base,
                                                            peft=KINDS["lora"]))


CONTEXT = {"vocab_size": V, "eos_id": 2}


def test_a_peft_block_of_a_config_file_becomes_a_typed_config():
    _, train = build_configs("lm", preset="tiny", model={}, context=CONTEXT,
                             train={"init_from": "lm", "peft": {"kind": "lora", "rank": 4}})
    assert train.peft == LoRAConfig(rank=4, alpha=16.0, dropout=0.0, targets=["qkv", "proj"])
    for peft, typed in (({"kind": "adapter"}, AdapterConfig(bottleneck=64)),
                        ({"kind": "prefix"}, PrefixConfig(length=16, reparam_hidden=512))):
        _, train = build_configs("lm", preset="tiny", model={}, context=CONTEXT,
                                 train={"init_from": "lm", "peft": peft})
        assert train.peft == typed
    _, plain = build_configs("lm", preset="tiny", model={}, train={}, context=CONTEXT)
    assert plain.peft is None


@pytest.mark.parametrize(
    "kind, model, train, path, message",
    [
        ("lm", {}, {"peft": {"kind": "lora", "rank": 0}}, "train.peft.rank", "must be positive"),
        ("lm", {}, {"peft": {"kind": "lora", "rank": 2.5}}, "train.peft.rank", "must be an int"),
        ("lm", {}, {"peft": {"kind": "adapter", "rank": 4}}, "train.peft.rank",
         "not a field of the adapter PEFT config"),
        ("lm", {}, {"peft": {"kind": "prefix", "lenght": 4}}, "train.peft.lenght",
         "did you mean 'length'"),
        ("lm", {}, {"peft": {"kind": "bitfit"}}, "train.peft.kind", "must be one of"),
        ("lm", {}, {"peft": "lora"}, "train.peft", "must be a mapping"),
        ("lm", {}, {"peft": {"kind": "lora", "targets": ["qkv", "wq"]}}, "train.peft.targets",
         "unknown target 'wq'"),
        ("lm", {}, {"peft": {"kind": "lora", "alpha": 0}}, "train.peft.alpha", "must be finite"),
        ("lm", {}, {"peft": {"kind": "adapter", "bottleneck": -1}}, "train.peft.bottleneck",
         "must be positive"),
        ("lm", {"mixer": "mamba2"}, {"peft": {"kind": "prefix"}}, "train.peft",
         "no attention layer"),
        ("lm", {}, {"peft": {"kind": "lora"}, "init_from": None}, "train.peft",
         "needs init_from"),
        ("lm", {}, {"peft": {"kind": "lora"}, "freeze_backbone": True}, "train.peft",
         "cannot be combined with freeze_backbone"),
        ("vqvae", {}, {"peft": {"kind": "lora"}}, "train.peft", "only lm use it"),
    ],
)
def test_a_bad_peft_block_names_its_field(kind, model, train, path, message):
    if kind == "lm":
        train = {"init_from": "lm", **train}
    with pytest.raises(ConfigFieldError) as err:
        build_configs(kind, preset="tiny", model=model, train=train, context=CONTEXT)
    assert err.value.path == path and message in err.value.message, str(err.value)


def test_train_config_takes_a_typed_peft_config_too():
    typed = TrainConfig(init_from="x", peft=AdapterConfig(bottleneck=8))
    assert dataclasses.replace(typed, init_from="y").peft == AdapterConfig(bottleneck=8)
    with pytest.raises(FieldValueError, match="LoRAConfig.kind: must be 'lora'"):
        LoRAConfig(kind="adapter")


LORA_CONFIG = """
lake: {{root: "{lake}"}}
feature_spec: "{spec}"
models:
  lora:
    train: {{init_from: lm, peft: {{kind: lora, rank: 4}}, steps: 2, batch_size: 4,
             warmup_steps: 1}}
  lm:
    train: {{steps: 3, batch_size: 4, warmup_steps: 1}}
"""


def test_lora_entry_trains_through_the_cli_on_the_lm_it_names(tmp_path, capsys):
    from pathlib import Path

    from records.example_codec import encode_example
    from records.spec import VarLenFeature
    from records.writer import DatasetWriter
    from shardforge.cli import main

    root = Path(__file__).resolve().parents[2]
    lake = tmp_path / "lake"
    conf = tmp_path / "lora.yaml"
    conf.write_text(LORA_CONFIG.format(lake=lake, spec=root / "conf/features/posts.yaml"))
    with DatasetWriter(uri=(lake / "records/posts/v=1").as_uri(), dataset="posts", version="1",
                       feature_spec={"input_ids": VarLenFeature("int64")}) as writer:
        for i in range(40):
            writer.write("train", encode_example({"input_ids": [3 + (i + j) % 200
                                                                for j in range(20 + i % 30)]}))
    common = ["--config", str(conf), "--device", "cpu"]
    assert main(["train", "lm", *common]) == 0
    assert main(["train", "lora", *common]) == 0
    [lm_ckpt] = (lake / "models/lm").glob("run-*/ckpt.pt")
    [lora_ckpt] = (lake / "models/lora").glob("run-*/ckpt.pt")
    ckpt = load_checkpoint(str(lora_ckpt))
    assert ckpt["train_config"]["peft"]["rank"] == 4
    assert ckpt["peft"]["base_sha256"] == checkpoint_sha256(str(lm_ckpt))
    assert all(name.endswith(("lora_A", "lora_B")) for name in ckpt["model"])
    model = load_peft_checkpoint(str(lora_ckpt))
    assert sum(p.numel() for p in model.parameters()) == ckpt["extra"]["total_params"]


@pytest.mark.cuda
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_cuda_peft_with_compile_and_bf16(runs, kind):
    """torch.compile traces the LoRA wrappers, the adapter hooks and the prefix callables:
    in one graph (no break, no recompile per layer) and with the eager run's losses.

    (Eight steps do not always lower the prefix's loss, even eager on the CPU: the
    comparison with eager is the test, not the trend.)
    """
    import torch._dynamo
    from torch._dynamo.utils import counters

    tmp, dataset, base, _ = runs
    losses = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        counters.clear()
        seen = losses.setdefault(compiled, [])
        result = train_model(
            "lm", dataset_uri=dataset, out_uri=(tmp / f"cuda-{kind}-{compiled}").as_uri(),
            model_config=BASE,
            train_config=config(steps=8, init_from=base, peft=KINDS[kind], device="cuda",
                                precision="bf16", compile=compiled),
            on_step=lambda m, seen=seen: seen.append(float(m["loss"])))
        assert result.device == "cuda"
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] == 1, dict(
        counters["stats"])
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]),
                               atol=0.05, rtol=0.02)
    ckpt = load_checkpoint(result.checkpoint_uri)
    assert set(ckpt["model"]) == set(peft_tensor_names(load_peft_checkpoint(
        result.checkpoint_uri)))


def test_a_prefix_tuned_model_compiles_to_one_graph():
    """No graph break (torch's CausalBias mask made one per layer) and no recompilation:
    the frozen first layer and the later ones differ in their inputs' requires_grad."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    model = base_model().train()
    apply_peft(model, KINDS["prefix"])
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="aot_eager")  # the tracing is the test: no C++
    x, y = periodic_batch(2, 16)
    for _ in range(2):
        compiled(x, y)[1].backward()
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["frames"]["total"] == 1 and counters["stats"]["unique_graphs"] == 1


def test_copies_of_a_peft_model_stay_apart():
    """deepcopy (benchmarks copy the base per method) keeps each copy's hooks on its own."""
    model = base_model()
    apply_peft(model, KINDS["prefix"])
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.peft_prefix.tokens.add_(1.0)
    x, _ = periodic_batch(1, 8)
    assert not torch.allclose(model(x)[0], twin(x)[0])
    assert twin.blocks[0].attn.prefix.source is twin.peft_prefix


@pytest.mark.parametrize("training", [True, False])
def test_prefix_attention_is_the_lower_right_causal_mask(training):
    """The training path (dummy queries + SDPA's own causal mask, flash-compatible) and the
    decoding path (an explicit mask) give what the lower-right causal mask over [prefix;
    sequence] gives, outputs and gradients alike."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = base_model().train(training)
    apply_peft(model, KINDS["prefix"])
    attn = model.blocks[1].attn
    B, nh, T, hs = 2, model.config.n_head, 7, model.config.n_embd // model.config.n_head
    q, k, v = (torch.randn(B, nh, T, hs, requires_grad=True) for _ in range(3))
    attn.dropout = 0.0
    ours = attn._attend_with_prefix(q, k, v, None, 1)
    kp, vp = attn.prefix()
    K = torch.cat((kp.expand(B, -1, -1, -1), k), dim=2)
    V = torch.cat((vp.expand(B, -1, -1, -1), v), dim=2)
    S = K.size(2)
    mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
    reference = F.scaled_dot_product_attention(q, K, V, attn_mask=mask)
    torch.testing.assert_close(ours, reference)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    expected = torch.autograd.grad(reference.square().sum(), (q, k, v))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)
