"""The SSD scan on flash-linear-attention's Triton kernel (fla-core, optional).

Mamba-2's SSD with one group of B/C is a *simple gated linear attention*: a scalar log-decay
per head and step, queries C, keys B, values dt·x::

    y_t = sum_{s <= t} (C_t · B_s) exp(g_{s+1} + ... + g_t) dt_s x_s,   g = dt · A

which is what ``fla.ops.simple_gla.chunk_simple_gla`` computes with fused Triton kernels
(chunked like :func:`models.mixers.ssd.ssd_chunked`, forward and backward), given q = C,
k = B (broadcast to the heads), v = dt·x, g = dt·A and scale 1. ``fla.ops.gla.chunk_gla``
(a log-decay per key dimension) computes the same with g broadcast over the n key dims, on
other backward kernels — the fallback where fla-core refuses simple GLA's backward (Hopper
with Triton 3.4-3.7.0, fla-core issue #640). fla-core is pure Triton: it installs without
a CUDA compile and runs on CUDA only, so this module is the GPU path and
:func:`~models.mixers.ssd.ssd_chunked` stays the reference and the CPU path
(``LMConfig.ssm_kernel`` picks; ``tests/models/test_ssd_fla.py`` checks both agree on a GPU).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

__all__ = ["FLA_OPS", "fla_available", "fla_status", "probe_scan", "ssd_fla"]

log = logging.getLogger(__name__)


_FLA_STATUS: tuple[str | None, str] | None = None  # (fla op in use or None, why), once asked
# The probe's shape: heads of the presets' width (ssm_head_dim = ssm_state = 64), which is
# also the block width (BK = 64) of the backward kernel that Triton 3.4-3.7.0 miscompiles on
# Hopper (fla-core issue #640); two chunks, so the state passes between chunks.
PROBE_SHAPE = {"b": 1, "T": 128, "h": 2, "p": 64, "n": 64}
PROBE_TOLERANCE = 5e-2  # relative norm; bf16 rounding is ~4e-3, a wrong gradient is O(1)


def fla_status() -> tuple[bool, str]:
    """Whether one of fla-core's kernels can carry mamba2's scan here, and why (not).

    The first call imports fla-core and, where a GPU is present, runs its kernels (simple
    GLA, then GLA: :data:`FLA_OPS`) forward and backward on a small problem against
    :func:`~models.mixers.ssd.ssd_chunked` (:func:`probe_scan`) and keeps the first that
    agrees: fla-core refuses some GPU/Triton pairs outright (simple GLA's backward on Hopper
    with Triton 3.4-3.7.0) and a miscompiled kernel would train silently wrong, so only a
    kernel seen to agree is used. Later calls read the stored answer, a global that
    ``torch.compile`` guards on as a constant (Mamba2 asks at construction, so no compiled
    graph ever traces the probe).

    Returns:
        ``(usable, reason)``: reason says what was found, for logs and error messages.
    """
    global _FLA_STATUS
    if _FLA_STATUS is None:
        try:
            import fla.ops  # noqa: F401
        except Exception as exc:  # ImportError, or Triton failing to load without CUDA
            _FLA_STATUS = (None, f"fla-core does not import ({type(exc).__name__}: {exc}); "
                                 "install it with pip install fla-core")
        else:
            if torch.cuda.is_available():
                _FLA_STATUS = _first_agreeing_op(torch.device("cuda"))
                if _FLA_STATUS[0] is None:
                    log.warning("mamba2: %s; ssm_kernel 'auto' uses the PyTorch chunked scan",
                                _FLA_STATUS[1])
                else:
                    log.info("mamba2: %s", _FLA_STATUS[1])
            else:
                _FLA_STATUS = ("simple_gla", "fla-core imports (no GPU here to run it on)")
    return _FLA_STATUS[0] is not None, _FLA_STATUS[1]


def _first_agreeing_op(device: torch.device) -> tuple[str | None, str]:
    """(the first op of FLA_OPS whose probe agrees, its verdict), or (None, every refusal)."""
    refusals = []
    for name, scan in FLA_OPS.items():
        agrees, reason = probe_scan(scan, device)
        if agrees:
            return name, f"{reason} ({name})"
        refusals.append(f"{name}: {reason}")
    return None, "; ".join(refusals)


def fla_available() -> bool:
    """:func:`fla_status`'s verdict alone."""
    return fla_status()[0]


def probe_scan(scan: Callable[..., tuple[torch.Tensor, torch.Tensor | None]],
               device: torch.device) -> tuple[bool, str]:
    """Run ``scan`` (``ssd_fla``'s signature) forward and backward on :data:`PROBE_SHAPE`
    and compare its output, final state and every gradient with ``ssd_chunked``'s.

    Returns:
        ``(True, what agreed)``, or ``(False, why)``: the exception the scan raised, or the
        first tensor off by more than :data:`PROBE_TOLERANCE` (relative).
    """
    from models.mixers.ssd import ssd_chunked

    b, T, h, p, n = (PROBE_SHAPE[k] for k in ("b", "T", "h", "p", "n"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    # Whatever the caller has on — a model built under torch.device("meta") (parameter
    # counts), no_grad, inference_mode or autocast — the probe runs real tensors on `device`
    # with autograd and in the inputs' own precision, so its verdict, kept for the process,
    # is about the kernel alone.
    with torch.inference_mode(False), torch.enable_grad(), device, \
            torch.autocast(device.type, enabled=False):
        gen = torch.Generator(device="cpu").manual_seed(0)

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, device="cpu")

        inputs = [normal(b, T, h, p), torch.nn.functional.softplus(normal(b, T, h) - 1.0),
                  -torch.rand(h, generator=gen, device="cpu") * 4 - 0.1,
                  normal(b, T, n), normal(b, T, n), normal(b, h, p, n)]
        names = ("x", "dt", "A", "B", "C", "initial_state")
        # x, B and C in bf16 for the kernel, as they reach it under the trainer's autocast
        # (Triton's bf16 and fp32/TF32 dots are different code; the Hopper miscompile was in
        # 16-bit dots); the reference scan takes the same values in fp32. Cloned: .to() is a
        # no-op on the same device, and each side needs its own gradients.
        half = {0, 3, 4}
        inputs = [t.to(torch.bfloat16) if i in half else t for i, t in enumerate(inputs)]
        got = [t.to(device).clone().requires_grad_(True) for t in inputs]
        ref = [t.to(device).float().requires_grad_(True) for t in inputs]
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False  # the reference in true fp32
        try:
            y, final = scan(*got[:5], got[5], output_final_state=True)
            y_ref, final_ref = ssd_chunked(*ref[:5], 64, ref[5])
            weights = normal(*y_ref.shape).to(device)
            ((y * weights).sum() + final.sum()).backward()
            ((y_ref * weights).sum() + final_ref.sum()).backward()
        except Exception as exc:
            return False, f"fla-core's kernel fails on {where} ({type(exc).__name__}: {exc})"
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
    pairs = [("y", y, y_ref), ("final state", final, final_ref)]
    pairs += [(f"d{name}", a.grad, r.grad) for name, a, r in zip(names, got, ref, strict=True)]
    for name, a, r in pairs:
        if a is None:
            return False, f"fla-core's kernel gives no {name} on {where}"
        a, r = a.detach().float(), r.detach().float()
        err = float((a - r).norm() / r.norm().clamp_min(1e-12))
        if not err <= PROBE_TOLERANCE:
            return False, (f"fla-core's kernel disagrees with the PyTorch scan on {where}: "
                           f"{name} off by {err:.2g} (relative)")
    return True, f"fla-core's kernel agrees with the PyTorch scan on {where}"


# Kept out of torch.compile's graphs: fla's autograd function launches autotuned Triton
# kernels of its own, which Dynamo should call, not trace (a graph break per layer, beside a
# scan that is most of the layer's time).
@torch.compiler.disable
def ssd_fla(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`~models.mixers.ssd.ssd_chunked`'s contract on fla's kernel (CUDA tensors):
    the op of :data:`FLA_OPS` that :func:`fla_status` found to agree on this GPU.

    Args:
        x: inputs (b, T, h, p); dt: positive steps (b, T, h); A: negative rates (h,).
        B, C: input and output maps (b, T, n), shared by the heads.
        initial_state: the state before x[:, 0], (b, h, p, n); None = zeros.
        output_final_state: also return the state after the last token (a prefill).

    Returns:
        ``(y, final_state)``: y (b, T, h, p) in x's dtype; the final state (b, h, p, n)
        float32, or None without ``output_final_state``.

    Raises:
        RuntimeError: fla-core cannot run here (not installed, or refused or wrong on this
            GPU: :func:`fla_status` says which) or the tensors are not on a CUDA device.
    """
    usable, reason = fla_status()
    if not usable:
        raise RuntimeError(f"ssm_kernel 'fla' cannot run: {reason}")
    if not x.is_cuda:
        raise RuntimeError(f"ssm_kernel 'fla' runs on CUDA tensors only, got {x.device}")
    return FLA_OPS[_FLA_STATUS[0]](x, dt, A, B, C, initial_state, output_final_state)


def _gla_inputs(x, dt, A, B, C, initial_state):
    """fla's (q, k, v, g, state) for the SSD: q = C, k = B, v = dt·x, g = dt·A (b, T, h)."""
    b, T, h, p = x.shape
    dtype = x.dtype
    g = dt.float() * A.float()  # (b, T, h) log-decays, float32 as in ssd_chunked
    v = (x * dt[..., None]).to(dtype)  # (b, T, h, p)
    # One group: every head reads the same B and C. The kernels index by head, so the
    # broadcast is materialised (b, T, h, n), the size of v when n == p.
    q = C.to(dtype)[:, :, None].expand(b, T, h, C.size(-1)).contiguous()
    k = B.to(dtype)[:, :, None].expand(b, T, h, B.size(-1)).contiguous()
    state = None if initial_state is None else initial_state.float().contiguous()
    return q, k, v, g, state


def _simple_gla_scan(x, dt, A, B, C, initial_state=None, output_final_state=False):
    """:func:`ssd_fla` on ``chunk_simple_gla``, unchecked (a probe's subject)."""
    from fla.ops.simple_gla import chunk_simple_gla

    q, k, v, g, state = _gla_inputs(x, dt, A, B, C, initial_state)
    # state_v_first: fla keeps the state as (h, V, K) = (h, p, n), our layout.
    y, final = chunk_simple_gla(q, k, v, g=g, scale=1.0, initial_state=state,
                                output_final_state=output_final_state, state_v_first=True)
    return y.to(x.dtype), (final.float() if final is not None else None)


def _gla_scan(x, dt, A, B, C, initial_state=None, output_final_state=False):
    """:func:`ssd_fla` on ``chunk_gla`` with the head's log-decay on every key dim,
    unchecked (a probe's subject)."""
    from fla.ops.gla import chunk_gla

    q, k, v, g, state = _gla_inputs(x, dt, A, B, C, initial_state)
    g = g[..., None].expand(q.shape).contiguous()  # (b, T, h, n): one decay per head
    y, final = chunk_gla(q, k, v, g, scale=1.0, initial_state=state,
                         output_final_state=output_final_state, state_v_first=True)
    return y.to(x.dtype), (final.float() if final is not None else None)


# fla-core's kernels for the scan, in the order fla_status tries them: simple GLA is the
# exact fit (one decay per head); GLA spends more (decays per key dim) on other kernels.
FLA_OPS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor | None]]] = {
    "simple_gla": _simple_gla_scan, "gla": _gla_scan}
