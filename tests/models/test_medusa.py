"""Medusa heads: init, shared/own head, loss weighting, learning, Medusa-1 freezing."""

from __future__ import annotations

import pytest
import torch
from lm_testlib import V, make_model, periodic_batch, train_on_periodic_batch

from models.lm import LMConfig
from models.medusa import freeze_backbone


@pytest.mark.parametrize(
    "overrides, error",
    [
        (dict(medusa_heads=-2), ValueError),
        (dict(medusa_own_head=1), TypeError),
        (dict(medusa_decay=-0.8), ValueError),
        (dict(medusa_weight=None), TypeError),
    ],
)
def test_bad_medusa_config_raises(overrides, error):
    with pytest.raises(error):
        LMConfig.preset("tiny", **overrides)


@pytest.mark.parametrize("own_head", [False, True])
def test_untrained_heads_start_as_the_lm_head(own_head):
    model = make_model(medusa_heads=3, medusa_own_head=own_head).eval()
    idx = torch.randint(0, V, (2, 10))
    logits, _ = model(idx)
    heads = model.medusa_logits(model.hidden_states(idx))
    assert len(heads) == 3
    for head_logits in heads:
        torch.testing.assert_close(head_logits, logits)
    n_own = 3 * V * 64 if own_head else 0
    n_blocks = 3 * (64 * 64 + 64)
    assert model.num_params() == make_model().num_params() + n_blocks + n_own
    if own_head:
        assert model.medusa.heads[0].weight is not model.lm_head.weight


@pytest.mark.parametrize("decay, weight", [(0.8, 1.0), (0.5, 0.2)])
def test_loss_is_main_plus_weighted_decayed_heads(decay, weight):
    model = make_model(medusa_heads=3, medusa_decay=decay, medusa_weight=weight)
    with torch.no_grad():  # heads that differ from the LM head and from each other
        for block in model.medusa.blocks:
            block.linear.weight.normal_(0.0, 0.1)
    x, y = periodic_batch(2, 16)
    y[1, 5:] = -100
    _, loss = model(x, y)
    p = model.loss_parts()
    heads = sum(decay**k * p[f"medusa_{k}"] for k in (1, 2, 3))
    assert p["medusa"] == pytest.approx(heads, rel=1e-6)
    assert loss.item() == pytest.approx(p["main"] + weight * heads, rel=1e-6)
    assert p["medusa_1"] != p["medusa_3"]


def test_medusa_head_k_targets_token_k_plus_one_ahead():
    model = make_model(medusa_heads=2)
    x, y = periodic_batch(2, 16)
    model(x, y)
    h = model.hidden_states(x)
    head2 = model.medusa_logits(h)[1]  # (B, T, V): guesses t_{i+3}
    expected = torch.nn.functional.cross_entropy(head2[:, :-2].reshape(-1, V), y[:, 2:].reshape(-1))
    assert model.loss_parts()["medusa_2"] == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("own_head", [False, True])
def test_medusa_learns_a_repetitive_corpus(own_head):
    model = make_model(medusa_heads=3, medusa_own_head=own_head)
    first, last = train_on_periodic_batch(model)
    for part in ("medusa_1", "medusa_2", "medusa_3"):
        assert last[part] < 0.3 * first[part], (part, first[part], last[part])
    assert last["main"] < first["main"]


def test_medusa1_freezing_trains_only_the_heads():
    model = make_model(medusa_heads=2)
    trainable = freeze_backbone(model)
    assert {id(p) for p in trainable} == {id(p) for p in model.medusa.parameters()}
    backbone = {n: p.detach().clone() for n, p in model.named_parameters()
                if not n.startswith("medusa.")}
    heads = {n: p.detach().clone() for n, p in model.medusa.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2,
                            weight_decay=0.1)
    x, y = periodic_batch(4, 16)
    first = None
    for _ in range(15):
        _, loss = model(x, y)
        first = first or model.loss_parts()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, p in model.named_parameters():
        if name in backbone:
            assert torch.equal(p, backbone[name]), name
            assert p.grad is None
    assert all(not torch.equal(p, heads[n]) for n, p in model.medusa.named_parameters())
    assert model.loss_parts()["medusa"] < first["medusa"]
    assert model.loss_parts()["main"] == pytest.approx(first["main"])  # backbone frozen


def test_freeze_backbone_needs_heads():
    with pytest.raises(ValueError, match="no Medusa heads"):
        freeze_backbone(make_model())
