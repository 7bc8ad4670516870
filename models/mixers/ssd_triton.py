"""The SSD scan on fused Triton kernels: Mamba-2's own (mamba-ssm) or flash-linear-attention's.

Mamba-2's SSD with one group of B/C is a *simple gated linear attention*: a scalar log-decay
per head and step, queries C, keys B, values dt·x::

    y_t = sum_{s <= t} (C_t · B_s) exp(g_{s+1} + ... + g_t) dt_s x_s,   g = dt · A

Three kernels of two libraries compute it chunked like :func:`models.mixers.ssd.ssd_chunked`,
forward and backward, fused (:data:`TRITON_OPS`, in the order they are tried):

- ``mamba_ssm``: ``mamba_chunk_scan_combined``, the SSD kernels of the Mamba-2 authors
  (mamba-ssm), native to this exact scan: one group of B/C read by every head, no broadcast;
- ``simple_gla``: fla-core's ``chunk_simple_gla`` with q = C, k = B (broadcast to the heads),
  v = dt·x, g = dt·A and scale 1;
- ``gla``: fla-core's ``chunk_gla`` with g broadcast over the n key dims, on other backward
  kernels — fla-core refuses simple GLA's backward on Hopper with Triton 3.4-3.7.0
  (fla-core issue #640).

Both libraries are pure Triton here (mamba-ssm's CUDA extensions, for Mamba-1, are neither
needed nor imported): they install without a CUDA compile and run on CUDA only, so this
module is the GPU path and :func:`~models.mixers.ssd.ssd_chunked` stays the reference and
the CPU path (``LMConfig.ssm_kernel`` picks: "triton" is this module;
``tests/models/test_ssd_triton.py`` checks that the chosen kernel agrees on a GPU).

Installing them on a GPU host: ``pip install -e ".[gpu]"`` brings fla-core and einops;
mamba-ssm's sdist compiles Mamba-1's CUDA extensions unless told not to, so its Triton part
installs with ``MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE pip install
--no-build-isolation --no-deps mamba-ssm==2.3.2.post1`` (seconds, nothing compiled).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from collections.abc import Callable

import torch

__all__ = ["TRITON_OPS", "probe_scan", "ssd_triton", "triton_available", "triton_status"]

log = logging.getLogger(__name__)


# (the op of TRITON_OPS in use, or None; why), set by the first triton_status() call.
_TRITON_STATUS: tuple[str | None, str] | None = None
# The probe's shape: heads of the presets' width (ssm_head_dim = ssm_state = 64), which is
# also the block width (BK = 64) of the backward kernel that Triton 3.4-3.7.0 miscompiles on
# Hopper (fla-core issue #640); two of mamba-ssm's chunks (eight of fla's), so the state
# passes between chunks.
PROBE_SHAPE = {"b": 1, "T": 2 * 256, "h": 2, "p": 64, "n": 64}
PROBE_TOLERANCE = 5e-2  # relative norm; bf16 rounding is ~4e-3, a wrong gradient is O(1)


def triton_status() -> tuple[bool, str]:
    """Whether one of the Triton kernels can carry mamba2's scan here, and why (not).

    The first call, where a GPU is present, runs the installed kernels (mamba-ssm's, then
    fla-core's simple GLA and GLA: :data:`TRITON_OPS`) forward and backward on a small problem
    against :func:`~models.mixers.ssd.ssd_chunked` (:func:`probe_scan`) and keeps the first
    that agrees: fla-core refuses some GPU/Triton pairs outright (simple GLA's backward on
    Hopper with Triton 3.4-3.7.0) and a miscompiled kernel would train silently wrong, so
    only a kernel seen to agree is used. Later calls read the stored answer, a global that
    ``torch.compile`` guards on as a constant (Mamba2 asks at construction, so no compiled
    graph ever traces the probe).

    Returns:
        ``(usable, reason)``: reason says what was found, for logs and error messages.
    """
    global _TRITON_STATUS
    if _TRITON_STATUS is None:
        installed = [name for name in TRITON_OPS if importlib.util.find_spec(OP_LIBRARY[name])]
        if not installed:
            _TRITON_STATUS = (None, "neither mamba-ssm nor fla-core is installed; install "
                                    "fla-core with pip install fla-core (or mamba-ssm's Triton "
                                    "part: models/mixers/ssd_triton.py says how)")
        elif torch.cuda.is_available():
            _TRITON_STATUS = _first_agreeing_op(torch.device("cuda"), installed)
            if _TRITON_STATUS[0] is None:
                log.warning("mamba2: %s; ssm_kernel 'auto' uses the PyTorch chunked scan",
                            _TRITON_STATUS[1])
            else:
                log.info("mamba2: %s", _TRITON_STATUS[1])
        else:
            _TRITON_STATUS = (installed[0], f"{OP_LIBRARY[installed[0]]} is installed (no "
                                            "GPU here to run it on)")
    return _TRITON_STATUS[0] is not None, _TRITON_STATUS[1]


def _first_agreeing_op(device: torch.device,
                       names: list[str] | None = None) -> tuple[str | None, str]:
    """(the first op of ``names`` (default: all of TRITON_OPS, in order) whose probe agrees,
    its verdict), or (None, every refusal)."""
    refusals = []
    for name in names if names is not None else list(TRITON_OPS):
        agrees, reason = probe_scan(TRITON_OPS[name], device)
        if agrees:
            return name, f"{reason} ({name})"
        refusals.append(f"{name}: {reason}")
    return None, "; ".join(refusals)


def triton_available() -> bool:
    """:func:`triton_status`'s verdict alone."""
    return triton_status()[0]


def probe_scan(scan: Callable[..., tuple[torch.Tensor, torch.Tensor | None]],
               device: torch.device) -> tuple[bool, str]:
    """Run ``scan`` (``ssd_triton``'s signature) forward and backward on :data:`PROBE_SHAPE`
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
            return False, f"the kernel fails on {where} ({type(exc).__name__}: {exc})"
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
    pairs = [("y", y, y_ref), ("final state", final, final_ref)]
    pairs += [(f"d{name}", a.grad, r.grad) for name, a, r in zip(names, got, ref, strict=True)]
    for name, a, r in pairs:
        if a is None:
            return False, f"the kernel gives no {name} on {where}"
        a, r = a.detach().float(), r.detach().float()
        err = float((a - r).norm() / r.norm().clamp_min(1e-12))
        if not err <= PROBE_TOLERANCE:
            return False, (f"the kernel disagrees with the PyTorch scan on {where}: "
                           f"{name} off by {err:.2g} (relative)")
    return True, f"the kernel agrees with the PyTorch scan on {where}"


# Kept out of torch.compile's graphs: each library's autograd function launches autotuned Triton
# kernels of its own, which Dynamo should call, not trace (a graph break per layer, beside a
# scan that is most of the layer's time).
@torch.compiler.disable
def ssd_triton(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`~models.mixers.ssd.ssd_chunked`'s contract on a Triton kernel (CUDA tensors):
    the op of :data:`TRITON_OPS` that :func:`triton_status` found to agree on this GPU.

    Args:
        x: inputs (b, T, h, p); dt: positive steps (b, T, h); A: negative rates (h,).
        B, C: input and output maps (b, T, n), shared by the heads.
        initial_state: the state before x[:, 0], (b, h, p, n); None = zeros.
        output_final_state: also return the state after the last token (a prefill).

    Returns:
        ``(y, final_state)``: y (b, T, h, p) in x's dtype; the final state (b, h, p, n)
        float32, or None without ``output_final_state``.

    Raises:
        RuntimeError: no kernel can run here (none installed, or refused or wrong on this
            GPU: :func:`triton_status` says which) or the tensors are not on a CUDA device.
    """
    usable, reason = triton_status()
    if not usable:
        raise RuntimeError(f"ssm_kernel 'triton' cannot run: {reason}")
    if not x.is_cuda:
        raise RuntimeError(f"ssm_kernel 'triton' runs on CUDA tensors only, got {x.device}")
    return TRITON_OPS[_TRITON_STATUS[0]](x, dt, A, B, C, initial_state, output_final_state)


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
    """:func:`ssd_triton` on ``chunk_simple_gla``, unchecked (a probe's subject)."""
    from fla.ops.simple_gla import chunk_simple_gla

    q, k, v, g, state = _gla_inputs(x, dt, A, B, C, initial_state)
    # state_v_first: fla keeps the state as (h, V, K) = (h, p, n), our layout.
    y, final = chunk_simple_gla(q, k, v, g=g, scale=1.0, initial_state=state,
                                output_final_state=output_final_state, state_v_first=True)
    return y.to(x.dtype), (final.float() if final is not None else None)


def _gla_scan(x, dt, A, B, C, initial_state=None, output_final_state=False):
    """:func:`ssd_triton` on ``chunk_gla`` with the head's log-decay on every key dim,
    unchecked (a probe's subject)."""
    from fla.ops.gla import chunk_gla

    q, k, v, g, state = _gla_inputs(x, dt, A, B, C, initial_state)
    g = g[..., None].expand(q.shape).contiguous()  # (b, T, h, n): one decay per head
    y, final = chunk_gla(q, k, v, g, scale=1.0, initial_state=state,
                         output_final_state=output_final_state, state_v_first=True)
    return y.to(x.dtype), (final.float() if final is not None else None)


MAMBA_CHUNK = 256  # mamba-ssm's chunk length (its Mamba2 layer's default)


def _mamba_chunk_scan_combined():
    """mamba-ssm's SSD entry point, imported without the package's ``__init__``.

    ``mamba_ssm/__init__.py`` imports Mamba-1's compiled CUDA extension (selective_scan_cuda),
    which a Triton-only install (no CUDA compile) lacks; the SSD kernels need only Triton and
    einops. Where the package imports whole it is used as is; otherwise its directory is
    registered as a bare package so that its submodules import.
    """
    try:
        import mamba_ssm  # noqa: F401
    except ImportError:
        spec = importlib.util.find_spec("mamba_ssm")
        if spec is None or spec.submodule_search_locations is None:
            raise
        package = types.ModuleType("mamba_ssm")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["mamba_ssm"] = package
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return mamba_chunk_scan_combined


def _mamba_ssm_scan(x, dt, A, B, C, initial_state=None, output_final_state=False):
    """:func:`ssd_triton` on mamba-ssm's ``mamba_chunk_scan_combined``, unchecked (a probe's
    subject). B and C go in as one group (b, T, 1, n): the kernels share them across heads."""
    scan = _mamba_chunk_scan_combined()
    state = None if initial_state is None else initial_state.float().contiguous()
    out = scan(x, dt, A.float(), B.to(x.dtype)[:, :, None], C.to(x.dtype)[:, :, None],
               MAMBA_CHUNK, initial_states=state, return_final_states=output_final_state)
    y, final = out if output_final_state else (out, None)
    return y.to(x.dtype), (final.float() if final is not None else None)


# The kernels for the scan, in the order triton_status tries them: Mamba-2's own first (the
# exact fit, B/C shared by the heads); fla's simple GLA (one decay per head, B/C broadcast);
# fla's GLA spends more (decays per key dim) on other kernels.
TRITON_OPS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor | None]]] = {
    "mamba_ssm": _mamba_ssm_scan, "simple_gla": _simple_gla_scan, "gla": _gla_scan}
OP_LIBRARY = {"mamba_ssm": "mamba_ssm", "simple_gla": "fla", "gla": "fla"}  # import names
