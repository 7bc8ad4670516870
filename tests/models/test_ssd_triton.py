"""Mamba-2's scan on fused Triton kernels (mamba-ssm's or fla-core's) against the PyTorch SSD.

The CPU tests check the switch (``LMConfig.ssm_kernel``), the probe that decides whether a
kernel may carry the scan on a GPU, and how mamba-ssm's kernel is imported and called; the
``cuda`` ones, run on the GPU host with the kernels installed, check that "auto" follows the
probe there and, where a kernel passed, the kernel itself: outputs, final states and every
gradient equal the reference scan's, and a compiled mamba2 LM trains on it. Where every
kernel is refused on the GPU, those kernel tests skip and say why.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
import torch.nn.functional as F

from models.config_fields import FieldValueError
from models.kv_cache import KVCache
from models.lm import DecoderLM, LMConfig
from models.mixers import ssd_triton as ssd_triton_module
from models.mixers.mamba2 import Mamba2
from models.mixers.ssd import ssd_chunked
from models.mixers.ssd_triton import probe_scan, ssd_triton, triton_status


def mamba2(kernel: str, **overrides) -> Mamba2:
    torch.manual_seed(0)
    cfg = LMConfig.preset("tiny", mixer="mamba2", ssm_kernel=kernel,
                          **{"ssm_state": 16, "ssm_head_dim": 32, "chunk_size": 8, **overrides})
    return Mamba2(cfg, 0)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


# --- the switch, on any machine ---------------------------------------------------------


def test_an_unknown_kernel_is_refused_by_name():
    with pytest.raises(FieldValueError, match="ssm_kernel"):
        LMConfig.preset("tiny", mixer="mamba2", ssm_kernel="fla")  # the old name


def test_auto_runs_the_pytorch_scan_off_cuda():
    x = torch.randn(2, 21, 64)
    auto, ref = mamba2("auto"), mamba2("torch")
    assert not auto._use_triton(x)
    torch.testing.assert_close(auto(x), ref(x), rtol=0, atol=0)


def test_triton_off_cuda_fails_with_what_it_needs():
    with pytest.raises(RuntimeError, match="triton"):
        mamba2("triton")(torch.randn(1, 5, 64))


def reference_scan(x, dt, A, B, C, initial_state=None, output_final_state=False):
    """ssd_chunked with ssd_triton's signature: what a correct kernel computes."""
    return ssd_chunked(x, dt, A, B, C, 64, initial_state)


def test_the_probe_passes_a_scan_that_agrees_with_the_reference():
    usable, reason = probe_scan(reference_scan, torch.device("cpu"))
    assert usable, reason
    assert "agrees" in reason


def test_the_probe_judges_the_kernel_whatever_context_the_model_is_built_in():
    """Models are built under torch.device("meta") (parameter counts), no_grad or
    inference_mode; the probe's verdict, kept for the process, must not depend on that."""
    for context in (torch.device("meta"), torch.no_grad(), torch.inference_mode()):
        with context:
            usable, reason = probe_scan(reference_scan, torch.device("cpu"))
        assert usable, (context, reason)


def test_the_probe_names_the_error_of_a_scan_that_refuses():
    def refusing(*args, **kwargs):
        raise RuntimeError("Triton 3.5 produces incorrect results for gated chunk_bwd_dqkwg")

    usable, reason = probe_scan(refusing, torch.device("cpu"))
    assert not usable
    assert "RuntimeError" in reason and "chunk_bwd_dqkwg" in reason


def test_the_probe_catches_a_wrong_gradient_behind_a_right_output():
    def wrong_dB(x, dt, A, B, C, initial_state=None, output_final_state=False):
        B = B + (0.5 * B - (0.5 * B).detach())  # the same values, 1.5x the gradient
        return reference_scan(x, dt, A, B, C, initial_state)

    usable, reason = probe_scan(wrong_dB, torch.device("cpu"))
    assert not usable
    assert "dB off by" in reason


def test_the_probe_catches_a_missing_gradient():
    def detached_C(x, dt, A, B, C, initial_state=None, output_final_state=False):
        return reference_scan(x, dt, A, B, C.detach(), initial_state)

    usable, reason = probe_scan(detached_C, torch.device("cpu"))
    assert not usable and "no dC" in reason


def test_the_first_kernel_that_agrees_is_kept_and_every_refusal_is_named(monkeypatch):
    def refusing(*args, **kwargs):
        raise RuntimeError("no backward on this GPU")

    monkeypatch.setattr(ssd_triton_module, "TRITON_OPS",
                        {"first": refusing, "second": reference_scan, "third": reference_scan})
    name, reason = ssd_triton_module._first_agreeing_op(torch.device("cpu"))
    assert name == "second" and "agrees" in reason and "(second)" in reason
    monkeypatch.setattr(ssd_triton_module, "TRITON_OPS", {"first": refusing, "other": refusing})
    name, reason = ssd_triton_module._first_agreeing_op(torch.device("cpu"))
    assert name is None
    assert reason.startswith("first: ") and "; other: " in reason and "no backward" in reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU verdict; cuda tests cover GPUs")
def test_triton_status_without_a_gpu_says_whether_a_kernel_is_installed():
    usable, reason = triton_status()
    if not any(importlib.util.find_spec(name) for name in ("mamba_ssm", "fla")):
        assert not usable and "pip install fla-core" in reason
    else:
        assert usable and "no GPU" in reason


@pytest.fixture
def no_mamba_ssm_modules():
    """Leaves sys.modules without mamba_ssm before and after a test that imports a fake one."""
    def drop():
        for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
            del sys.modules[name]
    saved = {m: mod for m, mod in sys.modules.items() if m.split(".")[0] == "mamba_ssm"}
    drop()
    yield
    drop()
    sys.modules.update(saved)


def test_mamba_ssm_loads_its_ssd_kernels_without_its_package_init(
        tmp_path, monkeypatch, no_mamba_ssm_modules):
    """A Triton-only mamba-ssm install lacks Mamba-1's CUDA extension, which the package's
    __init__ imports: the SSD entry point must still import (a stand-in package here)."""
    triton_dir = tmp_path / "mamba_ssm" / "ops" / "triton"
    triton_dir.mkdir(parents=True)
    (tmp_path / "mamba_ssm" / "__init__.py").write_text("import selective_scan_cuda\n")
    (tmp_path / "mamba_ssm" / "ops" / "__init__.py").write_text("")
    (triton_dir / "__init__.py").write_text("")
    (triton_dir / "ssd_combined.py").write_text(
        "def mamba_chunk_scan_combined(*args, **kwargs):\n    return 'the SSD kernel'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError):
        import mamba_ssm  # noqa: F401  (what a plain import does)
    scan = ssd_triton_module._mamba_chunk_scan_combined()
    assert scan() == "the SSD kernel"


def test_the_mamba_ssm_op_passes_one_group_of_b_c_and_our_state_layout(monkeypatch):
    """_mamba_ssm_scan's plumbing, through the probe, on a stand-in with the kernel's
    signature and shapes: B and C as one group (b, T, 1, n), A in float32, the state
    (b, h, p, n) in and out, the final state only when asked."""
    calls = []

    def stand_in(x, dt, A, B, C, chunk_size, initial_states=None, return_final_states=False):
        b, T, h, _ = x.shape
        assert B.shape == C.shape == (b, T, 1, B.size(-1)) and A.dtype == torch.float32
        assert chunk_size == ssd_triton_module.MAMBA_CHUNK
        calls.append(return_final_states)
        y, final = ssd_chunked(x, dt, A, B[:, :, 0], C[:, :, 0], chunk_size, initial_states)
        return (y, final) if return_final_states else y

    monkeypatch.setattr(ssd_triton_module, "_mamba_chunk_scan_combined", lambda: stand_in)
    usable, reason = probe_scan(ssd_triton_module._mamba_ssm_scan, torch.device("cpu"))
    assert usable, reason
    x = torch.randn(1, 9, 2, 8)
    y, final = ssd_triton_module._mamba_ssm_scan(
        x, torch.rand(1, 9, 2), -torch.rand(2), torch.randn(1, 9, 4), torch.randn(1, 9, 4))
    assert y.shape == x.shape and final is None and calls == [True, False]


# --- the kernel, on the GPU host ----------------------------------------------------------


def require_triton_kernel() -> None:
    usable, reason = triton_status()
    if not usable:
        pytest.skip(f"no Triton kernel can carry the scan on this GPU: {reason}")


@pytest.mark.cuda
def test_auto_follows_the_probe_and_triton_names_why_it_cannot_run():
    usable, reason = triton_status()
    x = torch.randn(2, 77, 64, device="cuda")
    auto = mamba2("auto").cuda()
    assert auto._use_triton(x) == usable
    if usable:
        assert "agrees" in reason
    else:
        with pytest.raises(RuntimeError, match="cannot run"):
            mamba2("triton")
        ref = mamba2("torch").cuda()
        torch.testing.assert_close(auto(x), ref(x), rtol=0, atol=0)


def ssd_inputs(b, T, h, p, n, seed, dtype=torch.float32, state=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, h, p, generator=gen)
    dt = F.softplus(torch.randn(b, T, h, generator=gen) - 1.0)
    A = -torch.rand(h, generator=gen) * 4 - 0.1
    B, C = torch.randn(b, T, n, generator=gen), torch.randn(b, T, n, generator=gen)
    s0 = torch.randn(b, h, p, n, generator=gen) if state else None
    out = [t.cuda() for t in (x, dt, A, B, C)]
    out[0], out[3], out[4] = (t.to(dtype) for t in (out[0], out[3], out[4]))
    return (*out, None if s0 is None else s0.cuda())


@pytest.mark.cuda
@pytest.mark.parametrize("T", [64, 100, 1000])
@pytest.mark.parametrize("with_state", [False, True])
def test_triton_scan_equals_the_chunked_ssd_with_gradients(T, with_state):
    assert any(importlib.util.find_spec(name) for name in ("mamba_ssm", "fla")), \
        "the GPU host needs mamba-ssm's Triton part or fla-core (models/mixers/ssd_triton.py)"
    require_triton_kernel()
    torch.backends.cuda.matmul.allow_tf32 = False
    args = ssd_inputs(2, T, 4, 64, 64, seed=T, state=with_state)
    leaves = [a.clone().requires_grad_(True) if a is not None else None for a in args]
    ref_leaves = [a.clone().requires_grad_(True) if a is not None else None for a in args]
    y, final = ssd_triton(*leaves[:5], leaves[5], output_final_state=True)
    y_ref, final_ref = ssd_chunked(*ref_leaves[:5], 64, ref_leaves[5])
    assert y.shape == y_ref.shape and final.shape == final_ref.shape
    # The kernels' dots take fp32 inputs as TF32 (~1e-3 relative); a wrong decay or layout is O(1).
    assert rel_err(y, y_ref) < 1e-2 and rel_err(final, final_ref) < 1e-2
    g = torch.randn_like(y_ref)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    names = ["x", "dt", "A", "B", "C", "initial_state"]
    for name, a, b in zip(names, leaves, ref_leaves, strict=True):
        if a is not None:
            assert rel_err(a.grad, b.grad) < 2e-2, name


@pytest.mark.cuda
def test_triton_scan_in_bf16_stays_near_the_fp32_reference():
    require_triton_kernel()
    args = ssd_inputs(2, 512, 4, 64, 64, seed=3)
    y_ref, _ = ssd_chunked(*args[:5], 64)
    half = [a.to(torch.bfloat16) if i in (0, 3, 4) else a for i, a in enumerate(args[:5])]
    y, final = ssd_triton(*half)
    assert y.dtype == torch.bfloat16 and final is None
    assert rel_err(y, y_ref) < 3e-2


@pytest.mark.cuda
def test_mamba2_layer_on_triton_matches_torch_in_training_and_prefill():
    require_triton_kernel()
    x = torch.randn(2, 77, 64, device="cuda")
    triton_layer = mamba2("triton", ssm_head_dim=32, ssm_state=32).cuda()
    ref_layer = mamba2("torch", ssm_head_dim=32, ssm_state=32).cuda()
    assert triton_layer._use_triton(x) and mamba2("auto")._use_triton(x)
    out, ref = triton_layer(x), ref_layer(x)
    assert rel_err(out, ref) < 1e-2
    out.square().sum().backward()
    ref.square().sum().backward()
    for (name, p), q in zip(triton_layer.named_parameters(), ref_layer.parameters(), strict=True):
        assert rel_err(p.grad, q.grad) < 2e-2, name
    # A prefill in two parts carries the state through the kernel's final state.
    with torch.no_grad():
        cache = KVCache(n_layer=1, max_len=77)
        first = triton_layer(x[:, :40], None, None, cache, 0)
        second = triton_layer(x[:, 40:], None, None, cache, 0)
        whole = ref_layer(x)
    assert rel_err(torch.cat([first, second], 1), whole) < 1e-2


@pytest.mark.cuda
def test_a_compiled_mamba2_lm_trains_on_the_triton_kernel():
    require_triton_kernel()
    torch.manual_seed(0)
    cfg = LMConfig.preset("tiny", mixer="mamba2", ssm_kernel="triton", block_size=256)
    model = DecoderLM(cfg).cuda()
    ref = DecoderLM(LMConfig.preset("tiny", mixer="mamba2", ssm_kernel="torch",
                                    block_size=256)).cuda()
    ref.load_state_dict(model.state_dict())
    x = torch.randint(0, cfg.vocab_size, (4, 256), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, loss = torch.compile(model)(x[:, :-1], x[:, 1:])
        _, loss_ref = ref(x[:, :-1], x[:, 1:])
    loss.backward()
    assert torch.isfinite(loss) and abs(float(loss) - float(loss_ref)) < 2e-2
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
