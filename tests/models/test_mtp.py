"""Multi-token prediction: config, loss composition, causality, learning, trainer contract."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from lm_testlib import V, make_model, periodic_batch, train_on_periodic_batch

from models.checkpoint import load_checkpoint
from models.lm import DecoderLM, LMConfig
from models.task_lm import LMTask
from models.train_config import TrainConfig
from models.trainer import train_on_source


@pytest.mark.parametrize(
    "overrides, error",
    [
        (dict(mtp_depth=-1), ValueError),
        (dict(mtp_depth=1.0), TypeError),
        (dict(mtp_depth=True), TypeError),
        (dict(mtp_lambda=-0.1), ValueError),
        (dict(mtp_lambda="0.3"), TypeError),
        (dict(mtp_lambda=float("inf")), ValueError),
    ],
)
def test_bad_mtp_config_raises(overrides, error):
    with pytest.raises(error):
        LMConfig.preset("tiny", **overrides)


def test_default_is_off_and_reports_only_the_main_loss():
    model = make_model()
    assert model.config.mtp_depth == 0 and model.config.mtp_lambda == 0.3
    assert model.mtp is None and not any(k.startswith("mtp") for k in model.state_dict())
    x, y = periodic_batch(2, 16)
    _, loss = model(x, y)
    assert set(model.last_loss_parts) == {"main", "total"}
    assert model.loss_parts()["main"] == loss.item() == model.loss_parts()["total"]


@pytest.mark.parametrize("depth, lam", [(1, 0.3), (3, 0.5)])
def test_loss_is_main_plus_lambda_mean_of_depths(depth, lam):
    model = make_model(mtp_depth=depth, mtp_lambda=lam)
    x, y = periodic_batch(2, 16)
    y[0, 10:] = -100  # padding is ignored at every depth
    logits, loss = model(x, y)
    parts = model.loss_parts()
    depths = [parts[f"mtp_{k}"] for k in range(1, depth + 1)]
    assert parts["mtp"] == pytest.approx(sum(depths) / depth)
    assert loss.item() == pytest.approx(parts["main"] + lam * parts["mtp"], rel=1e-6)
    # The main loss is the plain next-token CE, and the logits are the main head's.
    plain = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    assert parts["main"] == pytest.approx(plain.item(), rel=1e-6)
    loss.backward()
    assert model.mtp[depth - 1].merge.weight.grad.abs().sum() > 0


def test_mtp_depth_k_sees_tokens_up_to_i_plus_k_only():
    model = make_model(mtp_depth=2).eval()
    idx = torch.randint(1, V, (1, 20))
    edited = idx.clone()
    edited[0, 12] = (idx[0, 12] + 1) % V

    def mtp_logits(ids):  # depth 2 at positions 0..T-3
        h = model.hidden_states(ids)
        h = model.mtp_hidden(1, h[:, :-1], ids[:, 1:])
        h = model.mtp_hidden(2, h[:, :-1], ids[:, 2:])
        return model.mtp_head(2, h)

    before, after = mtp_logits(idx), mtp_logits(edited)
    # Position i at depth 2 reads t_{i+2}: only i >= 10 may change.
    torch.testing.assert_close(after[:, :10], before[:, :10])
    assert not torch.allclose(after[:, 10], before[:, 10])


def test_mtp_learns_a_repetitive_corpus():
    model = make_model(mtp_depth=2)
    first, last = train_on_periodic_batch(model)
    for part in ("mtp_1", "mtp_2", "main"):
        assert last[part] < 0.3 * first[part], (part, first[part], last[part])


def test_trainer_contract_with_mtp_and_medusa(tmp_path, list_source, toy_docs):
    cfg = LMConfig.preset("tiny", vocab_size=V, block_size=32, mtp_depth=1, medusa_heads=2)
    train = TrainConfig(steps=25, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2,
                        device="cpu", log_every=5)
    result = train_on_source(
        LMTask(cfg, train),
        list_source(toy_docs(40, V), batch_size=4),
        out_uri=f"file://{tmp_path}",
        dataset_manifest_sha256="ab" * 32,
    )
    assert result.final_loss < 0.6 * result.first_loss
    ckpt = load_checkpoint(result.checkpoint_uri)
    assert ckpt["model_config"] == dataclasses.asdict(cfg)  # plain types round-trip
    restored = DecoderLM(LMConfig(**ckpt["model_config"]))
    restored.load_state_dict(ckpt["model"])
    assert restored.mtp is not None and restored.medusa is not None
