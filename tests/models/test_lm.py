"""DecoderLM: config, shapes, weight tying, causality, RoPE, loss masking, overfitting."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from models.lm import DecoderLM, LMConfig, apply_rope, rope_cache

V = 97


@pytest.fixture
def model() -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(LMConfig.preset("tiny", vocab_size=V)).eval()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("tiny", dict(n_layer=2, n_head=4, n_embd=64, block_size=64)),
        ("small", dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304)),
    ],
)
def test_presets(name, expected):
    cfg = LMConfig.preset(name)
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert LMConfig.preset(name, vocab_size=123).vocab_size == 123


def test_small_preset_is_124m_class():
    with torch.device("meta"):  # no memory, no init cost
        n = DecoderLM(LMConfig.preset("small")).num_params()
    assert 110e6 < n < 135e6


@pytest.mark.parametrize(
    "overrides, error",
    [
        (dict(n_embd=65), ValueError),  # not divisible by n_head
        (dict(n_embd=36, n_head=12), ValueError),  # head size 3: odd, RoPE needs pairs
        (dict(dropout=1.0), ValueError),
        (dict(vocab_size=0), ValueError),
        (dict(n_layer=True), TypeError),  # a bool is no int
        (dict(dropout="0.1"), TypeError),  # YAML 1.1 reads some numbers as strings
        (dict(norm_eps=0.0), ValueError),
        (dict(no_such_field=1), TypeError),
    ],
)
def test_bad_config_raises(overrides, error):
    with pytest.raises(error):
        LMConfig.preset("tiny", **overrides)


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="unknown LMConfig preset"):
        LMConfig.preset("huge")


def test_forward_shapes_and_loss(model):
    idx, targets = torch.randint(0, V, (2, 3, 17))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 17, V)
    assert loss.shape == () and torch.isfinite(loss)
    assert abs(loss.item() - torch.log(torch.tensor(float(V))).item()) < 1.0  # ~uniform at init
    logits_only, no_loss = model(idx)
    assert no_loss is None and torch.equal(logits_only, logits)
    no_logits, same_loss = model(idx, targets, return_logits=False)  # what training asks for
    assert no_logits is None and torch.equal(same_loss, loss)


@pytest.mark.parametrize(
    "idx, targets",
    [
        (torch.zeros(65, dtype=torch.long), None),  # 1-D
        (torch.zeros(1, 65, dtype=torch.long), None),  # longer than block_size 64
        (torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 7, dtype=torch.long)),
    ],
)
def test_bad_inputs_raise(model, idx, targets):
    with pytest.raises(ValueError):
        model(idx, targets)


def test_head_is_tied_to_embedding(model):
    assert model.lm_head.weight is model.tok_emb.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_params() == sum(unique.values())
    assert model.num_params(exclude_embedding=True) == model.num_params() - V * 64
    # Non-persistent RoPE buffers: the checkpoint holds weights only.
    assert not any(k.startswith("rope_") for k in model.state_dict())


def test_flops_per_token_formula(model):
    cfg = model.config
    attn = 12 * cfg.n_layer * cfg.n_head * cfg.head_size
    assert model.estimate_flops_per_token() == 6 * model.num_params() + attn * cfg.block_size
    assert model.estimate_flops_per_token(seq_len=1) == 6 * model.num_params() + attn


@pytest.mark.parametrize("changed", [0, 5, 15])
def test_causal_future_tokens_do_not_change_the_past(model, changed):
    idx = torch.randint(0, V, (2, 16))
    edited = idx.clone()
    edited[:, changed] = (edited[:, changed] + 1) % V
    before, _ = model(idx)
    after, _ = model(edited)
    torch.testing.assert_close(after[:, :changed], before[:, :changed])
    assert not torch.allclose(after[:, changed], before[:, changed])


@pytest.mark.parametrize("m, n, shift", [(0, 0, 7), (3, 1, 10), (1, 9, 20), (40, 2, 5)])
def test_rope_scores_depend_only_on_relative_position(m, n, shift):
    torch.manual_seed(0)
    hs, T = 16, 64
    cos, sin = rope_cache(T, hs)
    q, k = torch.randn(hs), torch.randn(hs)
    q_rot = apply_rope(q.expand(T, hs), cos, sin)  # q placed at every position
    k_rot = apply_rope(k.expand(T, hs), cos, sin)
    score = q_rot[m] @ k_rot[n]
    torch.testing.assert_close(q_rot[m + shift] @ k_rot[n + shift], score, rtol=1e-4, atol=1e-4)
    # ... and the rotation really does depend on that offset.
    assert not torch.allclose(q_rot[m] @ k_rot[n + 1], score, atol=1e-3)
    # Rotations preserve norms.
    torch.testing.assert_close(q_rot.norm(dim=-1), q.norm().expand(T))


def test_loss_ignores_padding_targets(model):
    idx = torch.randint(0, V, (2, 12))
    targets = idx.clone()
    targets[:, 6:] = -100
    logits, loss = model(idx, targets)
    expected = F.cross_entropy(logits[:, :6].reshape(-1, V), idx[:, :6].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_dropout_config_is_used_only_in_training():
    torch.manual_seed(0)
    m = DecoderLM(dataclasses.replace(LMConfig.preset("tiny", vocab_size=V), dropout=0.5))
    idx = torch.randint(0, V, (2, 8))
    m.train()
    assert not torch.equal(m(idx)[0], m(idx)[0])
    m.eval()
    assert torch.equal(m(idx)[0], m(idx)[0])


def test_tiny_batch_overfits():
    torch.manual_seed(0)
    model = DecoderLM(LMConfig.preset("tiny", vocab_size=V))
    idx = torch.randint(0, V, (4, 33))
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(50):
        _, loss = model(x, y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first, (first, loss.item())
