"""The SSD scan on flash-linear-attention's Triton kernel (fla-core, optional).

Mamba-2's SSD with one group of B/C is a *simple gated linear attention*: a scalar log-decay
per head and step, queries C, keys B, values dt·x::

    y_t = sum_{s <= t} (C_t · B_s) exp(g_{s+1} + ... + g_t) dt_s x_s,   g = dt · A

which is what ``fla.ops.simple_gla.chunk_simple_gla`` computes with fused Triton kernels
(chunked like :func:`models.mixers.ssd.ssd_chunked`, forward and backward), given q = C,
k = B (broadcast to the heads), v = dt·x, g = dt·A and scale 1. fla-core is pure Triton:
it installs without a CUDA compile and runs on CUDA only, so this module is the GPU path
and :func:`~models.mixers.ssd.ssd_chunked` stays the reference and the CPU path
(``LMConfig.ssm_kernel`` picks; ``tests/models/test_ssd_fla.py`` checks both agree on a GPU).
"""

from __future__ import annotations

import torch

__all__ = ["fla_available", "ssd_fla"]


_FLA_OK: bool | None = None  # fla_available's answer, once asked


def fla_available() -> bool:
    """Whether fla-core's simple-GLA kernel imports (it needs Triton, hence a GPU build).

    The first call tries the import; later calls read the stored answer, a global that
    ``torch.compile`` guards on as a constant (Mamba2 asks at construction, so no compiled
    graph ever traces the import).
    """
    global _FLA_OK
    if _FLA_OK is None:
        try:
            from fla.ops.simple_gla import chunk_simple_gla  # noqa: F401
            _FLA_OK = True
        except Exception:  # ImportError, or Triton failing to load without CUDA
            _FLA_OK = False
    return _FLA_OK


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
    """:func:`~models.mixers.ssd.ssd_chunked`'s contract on fla's kernel (CUDA tensors).

    Args:
        x: inputs (b, T, h, p); dt: positive steps (b, T, h); A: negative rates (h,).
        B, C: input and output maps (b, T, n), shared by the heads.
        initial_state: the state before x[:, 0], (b, h, p, n); None = zeros.
        output_final_state: also return the state after the last token (a prefill).

    Returns:
        ``(y, final_state)``: y (b, T, h, p) in x's dtype; the final state (b, h, p, n)
        float32, or None without ``output_final_state``.

    Raises:
        RuntimeError: fla-core is not installed (``pip install fla-core``) or the tensors
            are not on a CUDA device.
    """
    if not fla_available():
        raise RuntimeError("ssm_kernel 'fla' needs fla-core (pip install fla-core) and Triton")
    if not x.is_cuda:
        raise RuntimeError(f"ssm_kernel 'fla' runs on CUDA tensors only, got {x.device}")
    from fla.ops.simple_gla import chunk_simple_gla

    b, T, h, p = x.shape
    dtype = x.dtype
    g = dt.float() * A.float()  # (b, T, h) log-decays, float32 as in ssd_chunked
    v = (x * dt[..., None]).to(dtype)  # (b, T, h, p)
    # One group: every head reads the same B and C. The kernels index by head, so the
    # broadcast is materialised (b, T, h, n), the size of v when n == p.
    q = C.to(dtype)[:, :, None].expand(b, T, h, C.size(-1)).contiguous()
    k = B.to(dtype)[:, :, None].expand(b, T, h, B.size(-1)).contiguous()
    state = None if initial_state is None else initial_state.float().contiguous()
    # state_v_first: fla keeps the state as (h, V, K) = (h, p, n), our layout.
    y, final = chunk_simple_gla(q, k, v, g=g, scale=1.0, initial_state=state,
                                output_final_state=output_final_state, state_v_first=True)
    return y.to(dtype), (final.float() if final is not None else None)
