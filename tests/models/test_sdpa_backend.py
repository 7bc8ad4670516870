"""models.attention: report the SDPA kernel on CPU, require a fused kernel on CUDA."""

from __future__ import annotations

import logging

import pytest
import torch
from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
from torch.nn.attention import SDPBackend, sdpa_kernel

from models.attention import CUDNN_FIRST, auto_cuda_order, probe_backend, sdpa_backend

cuda = pytest.mark.cuda


@pytest.mark.parametrize(
    "dtype, dropout_p, allowed",
    [
        (torch.float32, 0.0, {"flash", "math"}),
        (torch.float32, 0.1, {"math"}),  # the CPU flash kernel has no dropout
    ],
)
def test_cpu_reports_the_backend(caplog, dtype, dropout_p, allowed):
    with (
        caplog.at_level(logging.INFO, logger="models.attention"),
        sdpa_backend("cpu", dtype=dtype, n_head=4, head_size=16, dropout_p=dropout_p) as name,
    ):
        assert name in allowed
        q = torch.randn(1, 4, 8, 16)
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert name in caplog.text


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_math_backend_is_pinned_anywhere(device):
    with sdpa_backend(device, dtype=torch.float32, n_head=2, head_size=8, backend="math") as name:
        assert name == "math"
        assert torch.backends.cuda.math_sdp_enabled()  # these flags steer CPU dispatch too
        assert not torch.backends.cuda.flash_sdp_enabled()
        assert not torch.backends.cuda.mem_efficient_sdp_enabled()
        q = torch.randn(1, 2, 8, 8, device=device)
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert torch.backends.cuda.flash_sdp_enabled()  # restored on exit


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="backend"), sdpa_backend(
        "cpu", dtype=torch.float32, n_head=2, head_size=8, backend="flash3"
    ):
        pass


def _compiled_sdpa_ops(pin) -> set[str]:
    """The SDPA ops a freshly compiled attention forward + backward runs under ``pin``."""
    torch._dynamo.reset()
    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    attend = torch.compile(lambda q: torch.nn.functional.scaled_dot_product_attention(
        q, q, q, is_causal=True).sum())
    with pin:
        attend(q).backward()  # compiles, and fills the caches
        with torch.profiler.profile() as prof:
            attend(q).backward()
    torch._dynamo.reset()
    return {e.name for e in prof.events() if "scaled_dot_product" in e.name}


def test_a_pin_holds_for_compiled_graphs(tmp_path):
    """A graph compiled under FlashAttention is not served from the cache to a math pin."""
    math_pin = lambda: sdpa_backend(  # noqa: E731
        "cpu", dtype=torch.float32, n_head=2, head_size=8, backend="math")
    with temporary_cache_dir(str(tmp_path)):
        first = _compiled_sdpa_ops(sdpa_kernel(SDPBackend.FLASH_ATTENTION))
        assert any("flash" in op for op in first), first  # CPU flash ran, and was cached
        assert not any("flash" in op for op in _compiled_sdpa_ops(math_pin()))
        # Why sdpa_backend turns AOTAutograd's cache off: a bare pin gets the cached flash
        # graph (pytorch/pytorch#185449). If this starts failing, PyTorch keys that cache on
        # the backend, and the cache switch in models.attention.pinned can go.
        bare = _compiled_sdpa_ops(sdpa_kernel(SDPBackend.MATH))
        assert any("flash" in op for op in bare), bare


def test_probe_agrees_with_context_manager():
    with sdpa_backend("cpu", dtype=torch.float32, n_head=2, head_size=8) as name:
        assert name == probe_backend("cpu", dtype=torch.float32, n_head=2, head_size=8)


def test_auto_tries_cudnn_first_on_hopper_only():
    assert auto_cuda_order((9, 0)) == [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]
    for unmeasured in [(8, 0), (8, 6), (8, 9), (10, 0), (12, 0)]:  # Ampere, Ada, Blackwell
        assert auto_cuda_order(unmeasured) == [SDPBackend.FLASH_ATTENTION], unmeasured


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_auto_pins_the_architectures_fused_kernel(dtype):
    hopper = torch.cuda.get_device_capability() in CUDNN_FIRST
    with sdpa_backend("cuda", dtype=dtype, n_head=4, head_size=64, seq_len=1024) as name:
        assert name == ("cudnn" if hopper else "flash")
        # the other fused kernels and math are off inside the pin
        assert torch.backends.cuda.flash_sdp_enabled() == (name == "flash")
        assert torch.backends.cuda.cudnn_sdp_enabled() == (name == "cudnn")
        assert not torch.backends.cuda.math_sdp_enabled()
        q = torch.randn(1, 4, 1024, 64, device="cuda", dtype=dtype)
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)


@cuda
def test_cuda_fp32_cannot_use_a_fused_kernel_and_says_so():
    with (
        pytest.raises(RuntimeError, match="no fused attention kernel .*dtype=torch.float32"),
        sdpa_backend("cuda", dtype=torch.float32, n_head=4, head_size=64),
    ):
        pass


def test_flash_pins_flash_and_refuses_what_it_cannot_run():
    with sdpa_backend("cpu", dtype=torch.float32, n_head=2, head_size=8, backend="flash",
                      seq_len=16) as name:
        assert name == "flash"
        q = torch.randn(1, 2, 16, 8)
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
        with pytest.raises(RuntimeError):  # the math kernel is off inside the pin
            torch.nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    with (  # the CPU flash kernel has no dropout
        pytest.raises(RuntimeError, match="FlashAttention cannot run on cpu .*dropout_p=0.1"),
        sdpa_backend("cpu", dtype=torch.float32, n_head=2, head_size=8, backend="flash",
                     dropout_p=0.1),
    ):
        pass


def test_cudnn_is_refused_off_cuda_with_a_clear_error():
    with (
        pytest.raises(RuntimeError, match="cuDNN attention cannot run on cpu .*seq_len=256"),
        sdpa_backend("cpu", dtype=torch.bfloat16, n_head=2, head_size=8, backend="cudnn",
                     seq_len=256),
    ):
        pass


@cuda
def test_cuda_pins_cudnn_when_asked_and_matches_flash():
    q, k, v = torch.randn(3, 2, 4, 128, 64, device="cuda", dtype=torch.bfloat16)
    with sdpa_backend("cuda", dtype=torch.bfloat16, n_head=4, head_size=64,
                      backend="cudnn") as name:
        assert name == "cudnn" and not torch.backends.cuda.flash_sdp_enabled()
        ours = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    with sdpa_backend("cuda", dtype=torch.bfloat16, n_head=4, head_size=64,
                      backend="flash") as name:
        assert name == "flash" and not torch.backends.cuda.cudnn_sdp_enabled()
        flash = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(ours, flash, rtol=2e-2, atol=2e-2)
