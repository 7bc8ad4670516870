"""models.kinds: the registry, config-file entries -> typed configs, every kind in one loop."""

from __future__ import annotations

import json
import math

import pytest
from lm_testlib import counting, toy_dataset
from vision_testlib import write_images

import models.trainer as trainer
from models.checkpoint import load_checkpoint
from models.kinds import KINDS, ConfigFieldError, build_configs, train_model
from models.train_config import TRAINING, TrainConfig, TrainResult

CONTEXT = {"vocab_size": 64, "eos_id": 2, "num_classes": 3}


def test_every_kind_is_declared_whole():
    assert set(KINDS) == set(TRAINING) >= {"lm", "vqvae", "efficientnet", "vqgan", "vae", "flow",
                                           "rectified_flow"}
    for name, kind in KINDS.items():
        assert kind.name == name and kind.training is TRAINING[name]
        assert "tiny" in kind.presets and kind.default_preset in kind.presets
        assert (kind.dataset, kind.unit) in {("posts", "tokens"), ("images", "images")}


@pytest.mark.parametrize(
    "kind, expected",
    [  # each kind keeps its own optimisation defaults
        ("lm", dict(batch_size=8, lr=6e-4, min_lr=6e-5, weight_decay=0.1, beta2=0.95, eos_id=2,
                    attention="auto", freeze_backbone=False, image_size=None)),
        ("vqvae", dict(batch_size=64, lr=1e-3, min_lr=1e-4, weight_decay=0.05, beta2=0.999,
                       eos_id=None, attention=None, channels_last=None)),
        ("efficientnet", dict(batch_size=64, lr=1e-3, weight_decay=0.05, block_size=None)),
    ],
)
def test_defaults_and_context_per_kind(kind, expected):
    model, train = build_configs(kind, preset=None, model={}, train={"steps": 5},
                                 context=CONTEXT)
    assert train.kind == kind and train.steps == 5
    assert {k: getattr(train, k) for k in expected} == expected
    assert model == KINDS[kind].model_config.preset(KINDS[kind].default_preset,
                                                    **{k: CONTEXT[k]
                                                       for k in KINDS[kind].model_context})
    if kind == "lm":
        assert model.vocab_size == 64
        ours, _ = build_configs(kind, preset="tiny", model={"vocab_size": 99}, train={},
                                context=CONTEXT)
        assert ours.vocab_size == 99  # what the entry sets wins over the data's value
    if kind == "efficientnet":
        assert model.num_classes == 3


@pytest.mark.parametrize(
    "kind, preset, model, train, path, message",
    [
        ("lm", None, {"n_hed": 4}, {}, "model.n_hed", "did you mean 'n_head'"),
        ("lm", None, {}, {"stpes": 3}, "train.stpes", "did you mean 'steps'"),
        ("lm", None, {}, {"kind": "vqvae"}, "train.kind", "unknown key"),
        ("lm", None, {}, {"lr": "3e-4"}, "train.lr", "must be a number or None, got '3e-4'"),
        ("lm", None, {}, {"lr": -1}, "train.lr", "must be finite and > 0, got -1"),
        ("lm", None, {}, {"min_lr": 1.0}, "train.min_lr", "must be <= lr"),
        ("lm", None, {}, {"steps": 2.0}, "train.steps", "must be an int, got 2.0"),
        ("lm", None, {}, {"compile": "yes"}, "train.compile", "must be a bool or None"),
        ("lm", None, {}, {"compile_mode": "fast"}, "train.compile_mode", "must be one of"),
        ("vqvae", None, {}, {"compile": False, "compile_mode": "reduce-overhead"},
         "train.compile_mode", "but compile is false"),
        ("lm", None, {}, {"attention": "xformers"}, "train.attention", "must be one of"),
        ("lm", None, {}, {"image_size": 32}, "train.image_size",
         "not a lm training field (only efficientnet, "),  # and the other image kinds
        ("lm", None, {}, {"block_size": 128}, "train.block_size", "> the model's block_size 64"),
        ("lm", None, {}, {"eos_id": 64}, "train.eos_id", "outside the vocabulary [0, 64)"),
        ("lm", None, {}, {"freeze_backbone": True, "init_from": "lm"}, "train.freeze_backbone",
         "the model has none"),
        ("lm", None, {}, {"freeze_backbone": True}, "train.freeze_backbone", "needs init_from"),
        ("lm", None, {"n_head": 3}, {}, "model.n_embd", "divisible by n_head (3)"),
        ("lm", None, {"dropout": 1.5}, {}, "model.dropout", "must be in [0, 1), got 1.5"),
        ("lm", None, {"bias": 1}, {}, "model.bias", "must be a bool"),
        ("lm", "huge", {}, {}, "preset", "unknown lm preset 'huge'"),
        ("lm", None, [1, 2], {}, "model", "must be a mapping"),
        ("vqvae", None, {}, {"block_size": 64}, "train.block_size", "only lm use it"),
        ("vqvae", None, {"codebook_size": 0}, {}, "model.codebook_size", "must be positive"),
        ("vqvae", "b0", {}, {}, "preset", "unknown vqvae preset 'b0'"),
        ("efficientnet", "b9", {}, {}, "preset", "expected one of ['b0'"),
        ("efficientnet", None, {"width": "wide"}, {}, "model.width", "must be a number"),
        ("efficientnet", None, {}, {"channels_last": "on"}, "train.channels_last", "bool"),
        ("gpt", None, {}, {}, "kind", "unknown model kind 'gpt'"),
    ],
)
def test_build_configs_names_the_path_of_a_mistake(kind, preset, model, train, path, message):
    with pytest.raises(ConfigFieldError) as err:
        build_configs(kind, preset=preset, model=model, train=train, context=CONTEXT)
    assert isinstance(err.value, ValueError)
    assert err.value.path == path and message in err.value.message, str(err.value)
    assert str(err.value) == f"{path}: {err.value.message}"


def test_details_are_flat_and_json():
    result = TrainResult(
        kind="lm", first_loss=float("nan"), final_loss=2.5, steps=4, examples=512,
        unit="tokens", checkpoint_uri="c", metrics_uri="m", device="cpu", precision="fp32",
        skipped_steps=0, train_metrics={"loss_parts": {"main": 2.5}},
        eval_metrics={"step": 4, "loss": 3.0, "perplexity": math.exp(3.0), "tokens": 64},
        extras={"attention": "math", "init_from": None, "freeze_backbone": False})
    details = json.loads(json.dumps(result.details(), allow_nan=False))
    assert details == {
        "first_loss": None, "final_loss": 2.5, "steps": 4, "examples": 512, "unit": "tokens",
        "device": "cpu", "precision": "fp32", "skipped_steps": 0,
        "eval": {"step": 4, "loss": 3.0, "perplexity": math.exp(3.0), "tokens": 64},
        "train_metrics": {"loss_parts": {"main": 2.5}},
        "attention": "math", "init_from": None, "freeze_backbone": False}


def metrics_lines(result) -> list[dict]:
    with open(result.metrics_uri.removeprefix("file://")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def datasets(tmp_path):
    """kind -> (dataset with an eval split, dataset without one)."""
    posts = toy_dataset(tmp_path / "a", counting(40, 64), eval_docs=counting(60, 64)[40:])
    images = write_images(tmp_path / "b", train=8, eval=4)
    return {"posts": (posts, toy_dataset(tmp_path / "c", counting(40, 64))),
            "images": (images, write_images(tmp_path / "d", train=8, eval=0))}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_trains_through_the_one_loop(tmp_path, monkeypatch, datasets, kind):
    runs = []
    real_run = trainer._run
    monkeypatch.setattr(trainer, "_run", lambda task, *a: runs.append(task.name) or
                        real_run(task, *a))
    train = {"steps": 3, "batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 1,
             "log_every": 2, "eval_every": 2, "device": "cpu", "progress": False}
    model_cfg, train_cfg = build_configs(kind, preset="tiny", model={}, train=train,
                                         context=CONTEXT)
    with_eval, without_eval = datasets[KINDS[kind].dataset]
    result = train_model(kind, dataset_uri=with_eval, out_uri=(tmp_path / "run").as_uri(),
                         model_config=model_cfg, train_config=train_cfg)
    assert runs == [kind]
    assert (result.kind, result.unit, result.steps) == (kind, KINDS[kind].unit, 3)
    assert result.examples == 3 * 4 * (64 if kind == "lm" else 1)  # tiny lm: 64-token windows
    lines = metrics_lines(result)
    assert [m["step"] for m in lines] == [1, 2, 3]
    assert [m["eval"]["step"] for m in lines if "eval" in m] == [2, 3]
    common = {"step", "loss", "lr", f"{KINDS[kind].unit}_per_s", "input_wait", "loss_scale",
              "skipped_steps", "elapsed_s"}
    assert all(common <= set(m) for m in lines)
    assert result.eval_metrics == lines[-1]["eval"] and len(result.eval_metrics) > 1
    ckpt = load_checkpoint(result.checkpoint_uri)
    assert ckpt["extra"]["kind"] == kind and ckpt["train_config"]["kind"] == kind
    assert ckpt["extra"]["eval_metrics"] == result.eval_metrics
    json.dumps(result.details(), allow_nan=False)

    # Without an eval split the run trains the same and evaluates nothing.
    bare = train_model(kind, dataset_uri=without_eval, out_uri=(tmp_path / "bare").as_uri(),
                       model_config=model_cfg, train_config=train_cfg)
    assert bare.eval_metrics == {} and bare.details()["eval"] == {}
    lines = metrics_lines(bare)
    assert all("eval" not in m for m in lines) and runs == [kind, kind]


def test_train_model_refuses_a_train_config_of_another_kind(tmp_path):
    model_cfg, _ = build_configs("lm", preset="tiny", model={}, train={}, context=CONTEXT)
    with pytest.raises(ValueError, match="a 'vqvae' TrainConfig, not 'lm'"):
        train_model("lm", dataset_uri="unused", out_uri=str(tmp_path), model_config=model_cfg,
                    train_config=TrainConfig(kind="vqvae"))
    with pytest.raises(ConfigFieldError, match="unknown model kind"):
        train_model("gpt", dataset_uri="unused", out_uri=str(tmp_path), model_config=model_cfg,
                    train_config=TrainConfig())
