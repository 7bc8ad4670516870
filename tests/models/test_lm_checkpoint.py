"""save_checkpoint / load_checkpoint: weights_only roundtrip, RNG states, atomic writes."""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import pytest
import torch

from models.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from models.lm import DecoderLM, LMConfig
from models.train_config import TrainConfig

SHA = "ab" * 32


@pytest.fixture
def trained():
    """A tiny model and optimizer after one step, so the optimizer has state."""
    torch.manual_seed(0)
    cfg = LMConfig.preset("tiny", vocab_size=61)
    model = DecoderLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, 61, (2, 9))
    model(idx[:, :-1], idx[:, 1:])[1].backward()
    opt.step()
    return cfg, model, opt


def save(uri, cfg, model, opt, **kw):
    return save_checkpoint(
        uri,
        model=model,
        optimizer=opt,
        step=kw.pop("step", 7),
        model_config=cfg,
        train_config=kw.pop("train_config", TrainConfig(steps=7)),
        dataset_manifest_sha256=kw.pop("sha", SHA),
        **kw,
    )


@pytest.mark.parametrize("as_uri", [False, True])
def test_roundtrip_with_weights_only(tmp_path, trained, as_uri):
    cfg, model, opt = trained
    path = tmp_path / "run" / "nested" / "ckpt.pt"  # parent folders are created
    uri = path.as_uri() if as_uri else str(path)
    save(uri, cfg, model, opt, reader_state={"epoch": 3, "offsets": [1, 2]}, extra={"note": "hi"})

    raw = torch.load(path, weights_only=True)  # plain containers only: no unpickling of classes
    ckpt = load_checkpoint(uri)
    assert raw.keys() == ckpt.keys()
    assert ckpt["step"] == 7 and ckpt["dataset_manifest_sha256"] == SHA
    assert ckpt["model_config"] == dataclasses.asdict(cfg) and isinstance(
        ckpt["model_config"], dict
    )
    assert ckpt["train_config"] == dataclasses.asdict(TrainConfig(steps=7))
    assert ckpt["reader"] == {"epoch": 3, "offsets": [1, 2]}
    assert ckpt["extra"] == {"note": "hi"}

    clone = DecoderLM(LMConfig(**ckpt["model_config"]))  # the checkpoint describes its model
    clone.load_state_dict(ckpt["model"])
    idx = torch.randint(0, 61, (1, 8))
    torch.testing.assert_close(clone.eval()(idx)[0], model.eval()(idx)[0])
    opt2 = torch.optim.AdamW(clone.parameters(), lr=1e-3)
    opt2.load_state_dict(ckpt["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert sorted(os.listdir(path.parent)) == ["ckpt.pt"]  # no temporary left behind


def test_compiled_wrapper_is_unwrapped(tmp_path, trained):
    cfg, model, opt = trained

    class Wrapper(torch.nn.Module):  # what torch.compile returns keeps the model in _orig_mod
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    save(str(tmp_path / "c.pt"), cfg, Wrapper(model), opt)
    assert load_checkpoint(str(tmp_path / "c.pt"))["model"].keys() == model.state_dict().keys()


def test_rng_states_roundtrip(tmp_path, trained):
    cfg, model, opt = trained
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save(str(tmp_path / "r.pt"), cfg, model, opt)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(load_checkpoint(str(tmp_path / "r.pt"))["rng"])
    torch.testing.assert_close(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_capture_rng_state_is_plain():
    state = capture_rng_state()
    assert (
        isinstance(state["numpy"]["keys"], torch.Tensor) and state["numpy"]["keys"].numel() == 624
    )
    assert isinstance(state["python"]["state"], list)


def test_failed_save_keeps_the_old_file(tmp_path, trained):
    cfg, model, opt = trained
    path = tmp_path / "ckpt.pt"
    save(str(path), cfg, model, opt, step=1)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        save(str(path), cfg, model, opt, step=2, extra={"bad": lambda: 0})
    assert load_checkpoint(str(path))["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(step=-1), ValueError),
        (dict(sha=""), ValueError),
        (dict(train_config="steps=3"), TypeError),
    ],
)
def test_bad_arguments_raise(tmp_path, trained, kwargs, error):
    cfg, model, opt = trained
    with pytest.raises(error):
        save(str(tmp_path / "x.pt"), cfg, model, opt, **kwargs)
    assert not os.listdir(tmp_path)


def test_other_format_version_is_refused(tmp_path):
    torch.save({"format_version": 99}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="format_version"):
        load_checkpoint(str(tmp_path / "old.pt"))


@pytest.mark.parametrize("cut", [0, 0.5])  # an empty file, a file cut in half
def test_an_empty_or_truncated_checkpoint_names_its_file(tmp_path, cut):
    from models.checkpoint import load_checkpoint

    path = tmp_path / "ckpt.pt"
    torch.save({"format_version": 1, "w": torch.zeros(4096)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ValueError, match=rf"{path}: not a readable checkpoint \(empty or truncated\?\)"):
        load_checkpoint(str(path))
