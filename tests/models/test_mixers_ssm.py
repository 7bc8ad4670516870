"""The SSM mixers (models.mixers.s4d, models.mixers.mamba2, models.mixers.ssd): parallel forms
against their recurrences, cached prefill + steps against full forwards, causality, and the
tiny LMs through the one training loop and greedy decoding."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from lm_testlib import counting, toy_dataset

from models.generate import generate_greedy
from models.kinds import build_configs, train_model
from models.kv_cache import KVCache
from models.lm import DecoderLM, LMConfig
from models.mixers.mamba2 import Mamba2, causal_depthwise_conv
from models.mixers.s4d import S4D
from models.mixers.ssd import ssd_chunked, ssd_step

MIXERS = {"s4d": S4D, "mamba2": Mamba2}


def tiny(mixer: str, **overrides) -> LMConfig:
    """``tiny`` with small SSM sizes: 16 states, 2 mamba2 heads of 32, chunks of 8."""
    sizes = dict(ssm_state=16, ssm_head_dim=32, chunk_size=8)
    return LMConfig.preset("tiny", mixer=mixer, **{**sizes, **overrides})


def build(mixer: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return MIXERS[mixer](tiny(mixer, **overrides), 0)


def run(module, x, cache=None):
    return module(x, None, None, cache, 0)  # cos/sin unused: no RoPE


# --- the chunked SSD scan -------------------------------------------------------------


def naive_ssd(x, dt, A, B, C, state):
    """The recurrence one token at a time (the definition the chunked scan must match)."""
    ys = []
    for t in range(x.size(1)):
        y, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y)
    return torch.stack(ys, dim=1), state


@pytest.mark.parametrize("T, chunk", [(1, 8), (7, 8), (8, 8), (37, 8), (37, 16), (64, 64)])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_ssd_equals_the_sequential_scan(T, chunk, with_state):
    gen = torch.Generator().manual_seed(T)
    b, h, p, n = 2, 3, 4, 5
    x = torch.randn(b, T, h, p, generator=gen)
    dt = F.softplus(torch.randn(b, T, h, generator=gen))
    A = -torch.rand(h, generator=gen) * 4  # up to exp(-4 * dt) per step: strong decays too
    B, C = torch.randn(b, T, n, generator=gen), torch.randn(b, T, n, generator=gen)
    state = torch.randn(b, h, p, n, generator=gen) if with_state else torch.zeros(b, h, p, n)
    y, final = ssd_chunked(x, dt, A, B, C, chunk, state if with_state else None)
    y_ref, final_ref = naive_ssd(x, dt, A, B, C, state)
    assert y.shape == (b, T, h, p) and final.shape == (b, h, p, n)
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(final, final_ref, atol=1e-4, rtol=1e-4)


def test_chunked_ssd_stays_accurate_where_a_chunks_log_decays_sum_to_thousands():
    """L comes from differences of a chunk's cumsums; with dt·A ~ -35 a step they reach
    ~-2,000 within a 64-chunk and the outputs still match the recurrence far inside bf16's
    rounding (4e-3)."""
    gen = torch.Generator().manual_seed(7)
    b, T, h, p, n = 2, 128, 3, 4, 5
    x = torch.randn(b, T, h, p, generator=gen)
    dt = F.softplus(torch.randn(b, T, h, generator=gen) + 2.0)  # ~2.1 a step
    A = torch.full((h,), -16.0)  # the strongest decay of Mamba-2's init range
    B, C = torch.randn(b, T, n, generator=gen), torch.randn(b, T, n, generator=gen)
    y, final = ssd_chunked(x, dt, A, B, C, 64)
    y_ref, final_ref = naive_ssd(x, dt, A, B, C, torch.zeros(b, h, p, n))
    assert float((dt * A).view(b, 2, 64, h).sum(2).max()) < -1000  # the regime this is about
    torch.testing.assert_close(y, y_ref, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(final, final_ref, atol=1e-3, rtol=1e-3)


# --- S4D: kernel, convolution, recurrence -----------------------------------------------


@pytest.mark.parametrize("T", [1, 2, 10, 64, 130])
def test_s4d_factored_kernel_equals_the_vandermonde_product(T):
    s4d = build("s4d")
    dtA, C = s4d.ssm_params()  # (H, N/2) each
    powers = torch.exp(dtA[..., None] * torch.arange(T))  # (H, N/2, T)
    expected = 2 * torch.einsum("hn,hnt->th", C, powers).real
    torch.testing.assert_close(s4d.kernel(T), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("T", [1, 9, 48])
def test_s4d_fft_convolution_equals_the_recurrence(T):
    s4d = build("s4d")
    u = torch.randn(3, T, s4d.H)  # the SSM's input, after in_linear
    with torch.no_grad():
        y_fft = s4d._conv(u)  # (B, T, H)
        state, ys = torch.zeros(3, s4d.H, s4d.N2, dtype=torch.cfloat), []
        for t in range(T):
            y, state = s4d._step(u[:, t], state)
            ys.append(y)
    torch.testing.assert_close(y_fft, torch.stack(ys, dim=1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k, with_past", [(4, False), (4, True), (2, True), (1, False)])
def test_mamba2_conv_taps_equal_a_left_padded_depthwise_conv1d(k, with_past):
    """The shifted multiply-adds are F.conv1d(groups=D) on the inputs with their k - 1
    predecessors in front, channels last; gradients included."""
    torch.manual_seed(k)
    conv = torch.nn.Conv1d(12, 12, k, groups=12)
    u = torch.randn(3, 17, 12, requires_grad=True)
    past = torch.randn(3, k - 1, 12) if with_past else torch.zeros(3, k - 1, 12)
    window = torch.cat([past, u], dim=1)
    got = causal_depthwise_conv(window, conv.weight[:, 0], conv.bias)
    want = conv(window.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    g = torch.randn_like(got)
    (grads_got,) = torch.autograd.grad((got * g).sum(), u)
    (grads_want,) = torch.autograd.grad((want * g).sum(), u)
    torch.testing.assert_close(grads_got, grads_want, atol=1e-6, rtol=1e-6)


# --- both mixers: cached prefill + steps, causality, gradients, errors --------------------


@pytest.mark.parametrize("mixer", sorted(MIXERS))
@pytest.mark.parametrize("splits", [(1,), (5,), (8,), (5, 11), (20, 3)])
def test_prefill_then_single_steps_equals_the_full_forward(mixer, splits):
    """Chunks of the given sizes (a prefill, maybe a second one), then one token at a time."""
    module, T = build(mixer).eval(), 29
    x = torch.randn(2, T, 64)
    cache = KVCache(n_layer=1, max_len=64)
    with torch.no_grad():
        full = run(module, x)
        outs, start = [], 0
        for size in splits + (1,) * (T - sum(splits)):
            outs.append(run(module, x[:, start : start + size], cache))
            start += size
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 0 and cache.states[0] is not None  # the mixer leaves length alone


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_mixers_are_causal_and_have_finite_gradients(mixer):
    module, T, t = build(mixer), 24, 13
    x = torch.randn(2, T, 64, requires_grad=True)
    y = run(module, x)
    assert y.shape == x.shape
    y[:, t].sum().backward()
    past, future = x.grad[:, : t + 1].abs(), x.grad[:, t + 1 :].abs()
    assert past.sum(-1).min() > 0
    assert future.max() <= 1e-6 * past.max()  # nothing from the future (but FFT round-off)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_mixers_run_under_bf16_autocast(mixer):
    module = build(mixer)
    x = torch.randn(2, 20, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = run(module, x)
    y.float().square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_mixers_trace_into_one_graph(mixer):
    """torch.compile sees the whole mixer: no Python loop over time, no graph break."""
    torch._dynamo.reset()
    explained = torch._dynamo.explain(build(mixer))(torch.randn(2, 29, 64))
    torch._dynamo.reset()
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


@pytest.mark.parametrize(
    "mixer, overrides, message",
    [
        ("s4d", dict(ssm_state=15), "ssm_state must be even"),
        ("mamba2", dict(ssm_head_dim=48), "multiple of ssm_head_dim"),
    ],
)
def test_bad_sizes_raise(mixer, overrides, message):
    with pytest.raises(ValueError, match=message):
        build(mixer, **overrides)


@pytest.mark.parametrize(
    "mixer, expected",
    [  # per layer at C = 64, N = 16, bias off: see the module docstrings
        ("s4d", 3 * 64**2 + 64 * (2 * 16 + 2)),
        ("mamba2", 64 * (2 * 128 + 2 * 16 + 4) + (128 + 32) * 5 + 3 * 4 + 128 + 128 * 64),
    ],
)
def test_parameter_count_formula(mixer, expected):
    assert sum(p.numel() for p in build(mixer).parameters()) == expected


def test_s4d_keeps_weight_decay_off_a():
    s4d = build("s4d")
    assert s4d.log_A_real.dim() == s4d.A_imag.dim() == s4d.log_dt.dim() == 1  # no decay


# --- the LM around them ----------------------------------------------------------------


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_greedy_decoding_with_state_equals_recomputed_full_forwards(mixer):
    torch.manual_seed(0)
    model = DecoderLM(tiny(mixer, vocab_size=53)).eval()
    prompt = torch.randint(0, 53, (2, 7))
    got = generate_greedy(model, prompt, max_new_tokens=12).tokens
    seq = prompt
    with torch.no_grad():
        for _ in range(12):
            logits, _ = model(seq)
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(got, seq)


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_tiny_ssm_lm_trains_through_the_one_loop(tmp_path, mixer):
    data = toy_dataset(tmp_path / "data", counting(40, 64))
    train = {"steps": 12, "batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 1,
             "log_every": 1, "device": "cpu", "progress": False}
    model_cfg, train_cfg = build_configs(
        "lm", preset="tiny", model={"mixer": mixer, "chunk_size": 16}, train=train,
        context={"vocab_size": 64, "eos_id": 2})
    result = train_model("lm", dataset_uri=data, out_uri=(tmp_path / "run").as_uri(),
                         model_config=model_cfg, train_config=train_cfg)
    with open(result.metrics_uri.removeprefix("file://")) as f:
        losses = [json.loads(line)["loss"] for line in f]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert result.final_loss < result.first_loss - 0.5
