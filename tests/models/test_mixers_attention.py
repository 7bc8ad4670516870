"""The attention-like mixers (gau, linear, sliding_window) and the mixer plumbing of the LM.

Config and registry, causality, parallel == chunked == recurrent forms, cached decoding ==
full forward, greedy and speculative decoding, the prefix-tuning hook, and training through
models.kinds. S4D and Mamba-2 have their own tests.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from models.config_fields import FieldError
from models.generate import generate_greedy, generate_speculative
from models.kinds import build_configs, train_model
from models.kv_cache import KVCache
from models.lm import Block, CausalSelfAttention, DecoderLM, LMConfig, apply_rope
from models.mixers import MIXERS, RECURRENT, build_mixer, mixer_class
from models.mixers import linear_attention as la
from models.mixers import sliding_window as sw
from models.mixers.gau import GAU
from tests.models.lm_testlib import counting, toy_dataset

V = 61
# name -> LMConfig overrides; small chunks/windows so that T = 24..40 crosses them.
MODELS = {
    "attention": {},
    "gau": {"mixer": "gau", "chunk_size": 8, "gau_qk_dim": 32},
    "gau_softmax": {"mixer": "gau", "chunk_size": 8, "gau_qk_dim": 32,
                    "gau_attention": "softmax"},
    "gau_quadratic": {"mixer": "gau", "chunk_size": 64, "gau_qk_dim": 8},  # s < head size
    "linear": {"mixer": "linear", "chunk_size": 8},
    "sliding_window": {"mixer": "sliding_window", "window": 6},
    "hybrid": {"mixer": ["linear", "attention"], "chunk_size": 5},
    "hybrid_gau_window": {"mixer": ["sliding_window", "gau"], "window": 9, "chunk_size": 4,
                          "gau_qk_dim": 16},
}


def make_model(name: str, seed: int = 0, **extra) -> DecoderLM:
    torch.manual_seed(seed)
    model = DecoderLM(LMConfig.preset("tiny", vocab_size=V, block_size=96, **MODELS[name],
                                      **extra))
    for module in model.modules():  # GAU starts with near-zero scores: make them count
        if isinstance(module, GAU):
            torch.nn.init.normal_(module.gamma, std=1.0)
            torch.nn.init.normal_(module.beta, std=0.3)
    return model.eval()


# --- config and registry -------------------------------------------------------------

@pytest.mark.parametrize(
    "overrides, field, message",
    [
        ({"mixer": "rnn"}, "mixer", "unknown mixer 'rnn'"),
        ({"mixer": ["linear"]}, "mixer", "1 names for n_layer=2"),
        ({"mixer": ["linear", "lstm"]}, "mixer", "unknown mixer 'lstm'"),
        ({"mixer": 3}, "mixer", "must be a string or a list"),
        ({"window": 0}, "window", "must be positive"),
        ({"chunk_size": -4}, "chunk_size", "must be positive"),
        ({"chunk_size": 8.0}, "chunk_size", "must be an int"),
        ({"gau_attention": "relu"}, "gau_attention", "must be one of"),
        ({"gau_qk_dim": 7}, "gau_qk_dim", "even"),
        ({"ssm_state": 0}, "ssm_state", "must be positive"),
    ],
)
def test_config_rejects_bad_mixer_fields(overrides, field, message):
    with pytest.raises(FieldError) as err:
        LMConfig.preset("tiny", **overrides)
    assert err.value.field == field and message in err.value.message, str(err.value)


def test_mixer_of_and_a_config_round_trip():
    cfg = LMConfig.preset("tiny", mixer=("linear", "attention"))
    assert cfg.mixer == ["linear", "attention"]  # a tuple is kept as a list (JSON-like)
    assert [cfg.mixer_of(0), cfg.mixer_of(1)] == cfg.mixers == ["linear", "attention"]
    assert cfg.recurrent_layers == [0]
    assert LMConfig(**dataclasses.asdict(cfg)) == cfg  # what checkpoints store and load
    assert LMConfig.preset("tiny").mixers == ["attention", "attention"]
    with pytest.raises(ValueError, match="layer must be in"):
        cfg.mixer_of(2)


def test_registry_builds_each_mixer_by_name():
    assert set(MIXERS) == {"attention", "gau", "linear", "sliding_window", "mamba2", "s4d"}
    assert set(RECURRENT) == {"linear", "s4d", "mamba2"}
    expected = {"attention": CausalSelfAttention, "gau": GAU, "linear": la.LinearAttention,
                "sliding_window": sw.SlidingWindowAttention}
    for name, cls in expected.items():
        assert mixer_class(name) is cls
        assert type(build_mixer(LMConfig.preset("tiny", mixer=name), 1)) is cls
    with pytest.raises(ValueError, match="unknown mixer"):
        mixer_class("lstm")


def test_blocks_keep_attention_keys_and_gau_is_a_whole_block():
    model = make_model("hybrid_gau_window")
    keys = set(DecoderLM(LMConfig.preset("tiny")).state_dict())
    assert {"blocks.0.attn.qkv.weight", "blocks.0.mlp.gate.weight"} <= keys  # unchanged names
    window, gau = model.blocks
    assert isinstance(window.attn, sw.SlidingWindowAttention) and window.mlp is not None
    assert isinstance(gau.attn, GAU) and gau.mlp is None and gau.mlp_norm is None
    assert isinstance(Block(LMConfig.preset("tiny")).attn, CausalSelfAttention)


# --- causality and decoding -----------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODELS))
def test_outputs_do_not_depend_on_later_tokens(name):
    model = make_model(name)
    idx = torch.randint(0, V, (2, 40))
    changed = idx.clone()
    changed[:, 23:] = (changed[:, 23:] + 7) % V
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :23], b[:, :23], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 23:], b[:, 23:])


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("chunks", [[1] * 12, [13, 1, 1, 9, 1], [4, 30, 3]])
def test_cached_decoding_equals_the_full_forward(name, chunks):
    model = make_model(name)
    idx = torch.randint(0, V, (2, sum(chunks)))
    cache, parts, start = model.new_kv_cache(), [], 0
    with torch.no_grad():
        full, _ = model(idx)
        for n in chunks:
            parts.append(model.head(model.hidden_states(idx[:, start : start + n], cache)))
            start += n
    assert cache.length == idx.size(1)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_greedy_decoding_equals_recomputed_full_forwards(name):
    model = make_model(name)
    prompt = torch.randint(0, V, (2, 7))
    out = generate_greedy(model, prompt, max_new_tokens=20).tokens
    seq = prompt
    with torch.no_grad():
        for _ in range(20):
            logits, _ = model(seq)
            seq = torch.cat((seq, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, seq)


@pytest.mark.parametrize("name", ["gau", "gau_softmax", "sliding_window", "hybrid_gau_window"])
@pytest.mark.parametrize("draft", ["medusa", "mtp"])
def test_speculative_decoding_equals_greedy_for_key_value_mixers(name, draft):
    model = make_model(name, medusa_heads=3, mtp_depth=2)
    prompt = torch.randint(0, V, (1, 9))
    ref = generate_greedy(model, prompt, max_new_tokens=30)
    fast = generate_speculative(model, prompt, max_new_tokens=30, draft=draft)
    assert torch.equal(ref.tokens, fast.tokens)


@pytest.mark.parametrize("name", ["linear", "hybrid"])
def test_speculative_decoding_refuses_recurrent_mixers(name):
    model = make_model(name, medusa_heads=2)
    with pytest.raises(ValueError, match="layer 0 uses the recurrent mixer 'linear'"):
        generate_speculative(model, torch.zeros(1, 4, dtype=torch.long), max_new_tokens=4)


def test_truncate_refuses_to_roll_a_recurrent_state_back():
    cache = KVCache(n_layer=3, max_len=16)
    cache.advance(5)
    cache.truncate(4)  # no state: keys/values roll back
    cache.states[2] = (torch.zeros(1), torch.zeros(1))
    cache.truncate(4)  # staying put is fine
    with pytest.raises(ValueError, match="layer 2 holds a recurrent state"):
        cache.truncate(3)
    assert cache.length == 4


# --- linear attention: three forms ------------------------------------------------------

def _qkv(B=2, nh=3, T=37, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, nh, T, d, generator=gen) for _ in range(3))
    return la.feature_map(q), la.feature_map(k), v


@pytest.mark.parametrize("chunk", [1, 4, 7, 16, 37, 64])
def test_linear_attention_chunked_equals_parallel(chunk):
    q, k, v = _qkv()
    y, (s, z) = la.chunked(q, k, v, chunk)
    torch.testing.assert_close(y, la.parallel(q, k, v), atol=1e-5, rtol=0)
    torch.testing.assert_close(s, (k.transpose(-1, -2) @ v), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(z, k.sum(-2), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("prefill", [0, 1, 10, 20])
def test_linear_attention_recurrent_steps_equal_parallel(prefill):
    q, k, v = _qkv()
    state, ys = None, []
    if prefill:
        y, state = la.chunked(q[:, :, :prefill], k[:, :, :prefill], v[:, :, :prefill], 4)
        ys.append(y)
    for t in range(prefill, q.size(2)):
        y, state = la.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state)
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys, dim=2), la.parallel(q, k, v), atol=1e-5, rtol=0)


def test_linear_attention_chunked_continues_from_a_state():
    q, k, v = _qkv(T=40)
    _, state = la.chunked(q[:, :, :13], k[:, :, :13], v[:, :, :13], 4)
    y, _ = la.chunked(q[:, :, 13:], k[:, :, 13:], v[:, :, 13:], 6, state)
    torch.testing.assert_close(y, la.parallel(q, k, v)[:, :, 13:], atol=1e-5, rtol=0)


# --- GAU ----------------------------------------------------------------------------------

def _gau_inputs(cfg: LMConfig, T: int):
    torch.manual_seed(1)
    gau = GAU(cfg).eval()
    torch.nn.init.normal_(gau.gamma, std=1.0)
    torch.nn.init.normal_(gau.beta, std=0.3)
    model = DecoderLM(cfg)
    return gau, torch.randn(2, T, cfg.n_embd), model.rope_cos[:T], model.rope_sin[:T]


@pytest.mark.parametrize("attention", ["squared_relu", "softmax"])
@pytest.mark.parametrize("chunk, T", [(4, 30), (8, 32), (5, 5), (64, 30)])
def test_gau_chunked_form_equals_the_chunk_rule_over_all_keys(attention, chunk, T):
    cfg = LMConfig.preset("tiny", mixer="gau", chunk_size=chunk, gau_qk_dim=32,
                          gau_attention=attention)
    gau, x, cos, sin = _gau_inputs(cfg, T)
    with torch.no_grad():
        chunked = gau(x, cos, sin)
        dense = gau(x, cos, sin, KVCache(1, T), 0)  # an empty cache: the dense rule
    torch.testing.assert_close(chunked, dense, atol=1e-5, rtol=0)


def test_gau_with_one_chunk_is_plain_quadratic_gau():
    T, cfg = 20, LMConfig.preset("tiny", mixer="gau", chunk_size=32, gau_qk_dim=32)
    gau, x, cos, sin = _gau_inputs(cfg, T)
    with torch.no_grad():
        u, v = F.silu(gau.uv(x)).chunk(2, dim=-1)  # (B, T, e)
        z = F.silu(gau.z(x))  # (B, T, s)
        def rope(t):  # the first head_size (16) of s = 32 channels rotate
            return torch.cat((apply_rope(t[..., :16], cos, sin), t[..., 16:]), dim=-1)

        q, k = rope(z * gau.gamma[0] + gau.beta[0]), rope(z * gau.gamma[1] + gau.beta[1])
        a = F.relu(q @ k.transpose(1, 2) / 32).square().tril()  # (B, T, T), causal
        ref = gau.proj(u * (a @ v))
        torch.testing.assert_close(gau(x, cos, sin), ref, atol=1e-5, rtol=0)


# --- sliding window ----------------------------------------------------------------------

@pytest.mark.parametrize("T, window", [(300, 40), (256, 128), (200, 300), (1000, 256), (130, 1)])
def test_sliding_block_mask_equals_create_block_mask(T, window):
    from torch.nn.attention.flex_attention import create_block_mask

    ours = sw.block_mask(T, window, "cpu")
    ref = create_block_mask(sw.sliding_mask_mod(window), None, None, T, T, device="cpu")
    for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
        assert torch.equal(getattr(ours, name), getattr(ref, name)), name


@pytest.mark.parametrize("T, window", [(300, 40), (200, 128), (129, 1)])
def test_sliding_window_flex_equals_banded_sdpa(T, window):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, T, 16, generator=gen) for _ in range(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex warns that it is unfused
        flex = sw.sliding_window_flex(q, k, v, window, compiled=False)
    torch.testing.assert_close(flex, sw.sliding_window_sdpa(q, k, v, window), atol=1e-5, rtol=0)


def test_sliding_window_output_ignores_tokens_outside_the_window():
    cfg = LMConfig.preset("tiny", mixer="sliding_window", window=8)
    torch.manual_seed(0)
    mixer = sw.SlidingWindowAttention(cfg).eval()
    model = DecoderLM(cfg)
    T = 40
    x = torch.randn(1, T, cfg.n_embd)
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    far = x.clone()
    far[:, :20] = torch.randn(1, 20, cfg.n_embd)  # positions 0..19; 27 sees 20..27 only
    with torch.no_grad():
        a, b = mixer(x, cos, sin), mixer(far, cos, sin)
    torch.testing.assert_close(a[:, 27:], b[:, 27:], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 26], b[:, 26])


# --- prefix-tuning hook --------------------------------------------------------------------

def test_prefix_hook_attends_to_every_prefix_position_then_causally():
    torch.manual_seed(0)
    cfg = LMConfig.preset("tiny")
    model = DecoderLM(cfg).eval()
    attn, T, P, hs = model.blocks[0].attn, 10, 3, cfg.head_size
    kp, vp = torch.randn(1, cfg.n_head, P, hs), torch.randn(1, cfg.n_head, P, hs)
    x = torch.randn(2, T, cfg.n_embd)
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    with torch.no_grad():
        plain = attn(x, cos, sin)
        attn.prefix = lambda: (kp, vp)
        y = attn(x, cos, sin)
        qk = attn.qkv(x)[..., : 2 * cfg.n_embd].view(2, T, 2, cfg.n_head, hs)
        q, k = apply_rope(qk, cos[:, None, None], sin[:, None, None]).unbind(2)
        v = attn.qkv(x)[..., 2 * cfg.n_embd :].view(2, T, cfg.n_head, hs)
        keys = torch.cat((kp.expand(2, -1, -1, -1), k.transpose(1, 2)), dim=2)
        values = torch.cat((vp.expand(2, -1, -1, -1), v.transpose(1, 2)), dim=2)
        mask = torch.cat((torch.ones(T, P, dtype=torch.bool),
                          torch.ones(T, T, dtype=torch.bool).tril()), dim=1)  # (T, P + T)
        ref = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask)
        ref = attn.proj(ref.transpose(1, 2).reshape(2, T, cfg.n_embd))
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=0)
    assert not torch.allclose(y, plain)


def test_prefix_hook_decodes_with_the_cache_like_the_full_forward():
    model = make_model("attention")
    cfg = model.config
    torch.manual_seed(3)
    for block in model.blocks:
        kv = (torch.randn(1, cfg.n_head, 4, cfg.head_size), torch.randn(1, cfg.n_head, 4,
                                                                          cfg.head_size))
        block.attn.prefix = lambda kv=kv: kv
    idx = torch.randint(0, V, (2, 20))
    cache, parts = model.new_kv_cache(), []
    with torch.no_grad():
        full, _ = model(idx)
        parts.append(model.head(model.hidden_states(idx[:, :7], cache)))
        for t in range(7, 20):
            parts.append(model.head(model.hidden_states(idx[:, t : t + 1], cache)))
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)
    assert cache.length == 20  # the prefix is not cached


# --- training through models.kinds ---------------------------------------------------------

@pytest.mark.parametrize("mixer", ["attention", "gau", "linear", "sliding_window",
                                   ["linear", "attention"]])
def test_every_attention_like_mixer_trains_through_the_kinds_registry(tmp_path, mixer):
    uri = toy_dataset(tmp_path, counting(48, 64), eval_docs=counting(60, 64)[48:])
    train = {"steps": 12, "batch_size": 4, "lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 1,
             "log_every": 1, "eval_every": 12, "device": "cpu", "progress": False}
    model = {"mixer": mixer, "window": 16, "chunk_size": 16, "gau_qk_dim": 32}
    model_cfg, train_cfg = build_configs("lm", preset="tiny", model=model, train=train,
                                         context={"vocab_size": 64, "eos_id": 0})
    losses = []
    result = train_model("lm", dataset_uri=uri, out_uri=(tmp_path / "run").as_uri(),
                         model_config=model_cfg, train_config=train_cfg,
                         on_step=lambda m: losses.append(m["loss"]))
    assert result.steps == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert math.isfinite(result.eval_metrics["loss"])
