"""Which kernel runs ``scaled_dot_product_attention``.

On CUDA the trainer requires a fused flash-style kernel: a silent fallback to the math
kernel costs several times the memory and time, so we fail loudly instead. ``auto`` pins
cuDNN's fused attention on Hopper, where it is the faster one (and PyTorch's own first
choice), and FlashAttention-2 elsewhere or where cuDNN cannot run the inputs. On CPU any
kernel is acceptable; we only report which one PyTorch picks. ``backend="math"``
pins the reference kernel anywhere (the fp32 baseline of benchmarks/train_lm.py);
``"cudnn"`` and ``"flash"`` pin that kernel, or fail where it cannot run.
A pin also holds for compiled models: under it, no compiled graph traced under another
backend is reused from PyTorch's caches (see :func:`pinned`, which benchmarks that pin a
kernel themselves use too).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from models.lm_config import ATTENTION_BACKENDS

__all__ = ["BACKENDS", "CUDNN_FIRST", "auto_cuda_order", "pinned", "probe_backend",
           "sdpa_backend"]

BACKENDS = ATTENTION_BACKENDS  # what sdpa_backend(backend=...) accepts (torch-free, in lm_config)

log = logging.getLogger(__name__)

_NAMES = {
    SDPBackend.FLASH_ATTENTION: "flash",
    SDPBackend.EFFICIENT_ATTENTION: "mem_efficient",
    SDPBackend.CUDNN_ATTENTION: "cudnn",
    SDPBackend.MATH: "math",
}


# CUDA compute capabilities where ``auto`` tries cuDNN's attention before FlashAttention-2.
# Hopper (sm_90): on an H100 the small LM trains 4.4% faster with it (benchmarks/lm_vs_nanogpt.py,
# BENCHMARKS.md), its attention backward a third faster by the kernel profile. Unmeasured
# architectures keep FlashAttention-2.
CUDNN_FIRST = frozenset({(9, 0)})


def auto_cuda_order(capability: tuple[int, int]) -> list[SDPBackend]:
    """The kernels ``backend="auto"`` tries, in order, on a CUDA device of this compute
    capability; the first that runs the inputs is pinned."""
    if tuple(capability) in CUDNN_FIRST:
        return [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]
    return [SDPBackend.FLASH_ATTENTION]


def _runs(backend: SDPBackend, q: torch.Tensor, dropout_p: float) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch warns why each refused kernel was refused
        try:
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(q, q, q, dropout_p=dropout_p, is_causal=True)
        except RuntimeError:
            return False
    return True


def probe_backend(
    device: torch.device | str,
    *,
    dtype: torch.dtype,
    n_head: int,
    head_size: int,
    dropout_p: float = 0.0,
) -> str:
    """Returns the backend PyTorch dispatches causal SDPA to for inputs like these.

    Tries the kernels in PyTorch's order of preference on a tiny (1, nh, 8, hs) input.

    Returns:
        "flash", "mem_efficient" or "math".
    """
    device = torch.device(device)
    q = torch.zeros(1, n_head, 8, head_size, device=device, dtype=dtype)  # (B, nh, T, hs)
    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
    if device.type == "cuda":
        order.insert(1, SDPBackend.EFFICIENT_ATTENTION)
    for backend in order:
        if _runs(backend, q, dropout_p):
            return _NAMES[backend]
    raise RuntimeError(f"no SDPA backend runs on {device} for dtype {dtype}")


@contextmanager
def pinned(backend: SDPBackend) -> Iterator[str]:
    """``sdpa_kernel(backend)`` that also holds for compiled models; yields the backend's name.

    A compiled SDPA call is lowered to one backend's op (``_scaled_dot_product_flash_attention``,
    ``..._cudnn_attention``, or the math decomposition) by the backends allowed when it is
    traced. AOTAutograd's on-disk cache leaves that choice out of its key (still in PyTorch 2.13;
    pytorch/pytorch#185449, #194007), so a graph compiled once under FlashAttention is served
    later, in any process sharing the cache directory, to a run pinned to cuDNN or math: the
    pin is silently ignored. Inside this pin that cache is therefore off; Inductor's FX-graph
    cache stays on (its key is the traced graph, which names the backend's op), so a recompile
    costs the AOT trace only. ``tests/models/test_sdpa_backend.py`` reproduces the bug on CPU.
    """
    with sdpa_kernel(backend), torch._functorch.config.patch(enable_autograd_cache=False):
        yield _NAMES[backend]


@contextmanager
def sdpa_backend(
    device: torch.device | str,
    *,
    dtype: torch.dtype,
    n_head: int,
    head_size: int,
    dropout_p: float = 0.0,
    backend: str = "auto",
    seq_len: int = 8,
) -> Iterator[str]:
    """Context manager under which the model's attention runs; yields the backend name.

    With ``backend="auto"``: on CUDA it pins the first kernel of :func:`auto_cuda_order`
    that runs these inputs (cuDNN's attention on Hopper, else FlashAttention-2) with
    ``torch.nn.attention.sdpa_kernel``; elsewhere it leaves PyTorch's choice alone and
    logs it. With ``backend="math"`` it pins the math kernel on any device. With
    ``backend="cudnn"`` (CUDA only) it pins cuDNN's fused flash-style attention on any GPU,
    and with ``backend="flash"`` PyTorch's FlashAttention-2 on any device, or fails.

    Args:
        device: where attention runs.
        dtype: the compute dtype of q, k, v (the autocast dtype, or float32).
        n_head: attention heads; head_size: channels per head.
        dropout_p: attention dropout used in training.
        backend: "auto", "math", "cudnn" or "flash".
        seq_len: the sequence length the model trains at: CUDA kernels are probed on a
            (1, n_head, seq_len, head_size) input, so one that cannot run it is never pinned.

    Raises:
        ValueError: an unknown ``backend``.
        RuntimeError: "cudnn" off CUDA, or where cuDNN attention cannot run these inputs;
            "flash" where FlashAttention cannot run them.
        RuntimeError: on CUDA with "auto", no kernel of :func:`auto_cuda_order` can run
            these inputs (fp32, a head size they do not support, or a GPU older than Ampere).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device = torch.device(device)
    if backend == "auto" and device.type != "cuda":
        name = probe_backend(
            device, dtype=dtype, n_head=n_head, head_size=head_size, dropout_p=dropout_p
        )
        log.info("attention: %s on %s, dtype %s (PyTorch's choice)", name, device, dtype)
        yield name
        return
    with pinned(_pick(device, dtype, n_head, head_size, dropout_p, backend, seq_len)) as name:
        log.info("attention: %s (pinned) on %s, dtype %s", name, device, dtype)
        yield name


def _pick(device: torch.device, dtype: torch.dtype, n_head: int, head_size: int,
          dropout_p: float, backend: str, seq_len: int) -> SDPBackend:
    """The kernel :func:`sdpa_backend` pins for ``backend`` ("auto": on CUDA only), after
    checking it runs a (1, n_head, seq_len, head_size) input; raises the errors it documents."""
    if backend == "math":
        return SDPBackend.MATH
    q = torch.zeros(1, n_head, seq_len, head_size, device=device, dtype=dtype)
    shape = f"dtype={dtype}, head_size={head_size}, seq_len={seq_len}"
    if backend == "cudnn":
        if device.type != "cuda" or not _runs(SDPBackend.CUDNN_ATTENTION, q, dropout_p):
            raise RuntimeError(f"cuDNN attention cannot run on {device} for {shape}: it needs "
                               "CUDA, fp16/bf16 and a recent cuDNN")
        return SDPBackend.CUDNN_ATTENTION
    if backend == "flash":
        if not _runs(SDPBackend.FLASH_ATTENTION, q, dropout_p):
            raise RuntimeError(
                f"FlashAttention cannot run on {device} for {shape}, dropout_p={dropout_p}: on "
                "CUDA it needs fp16/bf16, a head size that is a multiple of 8 up to 256 and "
                "sm_80 or newer; on the CPU, no dropout")
        return SDPBackend.FLASH_ATTENTION
    cap = torch.cuda.get_device_capability(device)
    order = auto_cuda_order(cap)
    chosen = next((b for b in order if _runs(b, q, dropout_p)), None)
    if chosen is None:
        raise RuntimeError(
            f"no fused attention kernel ({' or '.join(_NAMES[b] for b in order)}) can run on "
            f"{torch.cuda.get_device_name(device)} (sm_{cap[0]}{cap[1]}) for {shape}: "
            "FlashAttention needs fp16/bf16, a head size that is a multiple of 8 up to 256, "
            "and sm_80 or newer. Use precision 'fp16' or 'bf16'.")
    return chosen
