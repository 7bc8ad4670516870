"""Mamba-2 (Dao & Gu 2024, "Transformers are SSMs"): a selective SSM mixer on the SSD scan.

One layer, for input (B, T, C) with inner width E = ssm_expand * C, nh = E / P heads of
size P = ssm_head_dim and state size N = ssm_state (one group of B/C, as ``mamba2_simple``)::

    z, xBC, dt = in_linear(x)              # (B, T, E), (B, T, E + 2N), (B, T, nh)
    x, B, C = silu(causal_conv1d(xBC))     # depthwise, kernel ssm_conv, over time
    dt = softplus(dt + dt_bias); A = -exp(A_log)
    y = SSD(x, dt, A, B, C) + D * x        # models.mixers.ssd (or ssd_triton), chunked
    out = out_proj(rmsnorm(y * silu(z)))   # gated RMSNorm, then back to C

Training and prefill run the chunked scan: :func:`~models.mixers.ssd.ssd_chunked` in PyTorch,
or on CUDA a fused Triton kernel — Mamba-2's own (mamba-ssm) or fla-core's
(:func:`~models.mixers.ssd_triton.ssd_triton`) — as ``LMConfig.ssm_kernel`` says ("auto": the
Triton kernel on CUDA where one is installed and passed a forward/backward probe on this
GPU). With a :class:`~models.kv_cache.KVCache` the layer keeps ``cache.states[layer] =
(conv_state, ssm_state)``: the last ssm_conv - 1 conv inputs (B, ssm_conv - 1, E + 2N) and
the SSM state (B, nh, P, N) in float32. A prefill continues from the stored state; a single
token runs the recurrence (:func:`~models.mixers.ssd.ssd_step`).

Parameters per layer (bias off): C·(2E + 2N + nh) in in_linear, (E + 2N)·(ssm_conv + 1)
in the conv, 3·nh for A_log, dt_bias and D, E for the norm, E·C in out_proj.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from models.mixers.ssd import ssd_chunked, ssd_step
from models.mixers.ssd_triton import ssd_triton, triton_available, triton_status

if TYPE_CHECKING:
    from models.kv_cache import KVCache
    from models.lm_config import LMConfig

__all__ = ["Mamba2", "causal_depthwise_conv"]


def causal_depthwise_conv(window: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None) -> torch.Tensor:
    """A causal depthwise convolution over time, channels last.

    ``y[:, t, d] = bias[d] + sum_i weight[d, i] * window[:, t + i, d]`` for the last
    ``T = window.size(1) - k + 1`` positions: ``window`` (B, k - 1 + T, D) is the input with
    its k - 1 predecessors in front (zeros at the start of a sequence), ``weight`` (D, k) is
    ``nn.Conv1d(D, D, k, groups=D).weight[:, 0]``; returns (B, T, D) in window's dtype.

    Written as k shifted multiply-adds rather than ``F.conv1d``: under ``torch.compile`` the
    taps, the bias and the SiLU after them become one pointwise kernel (and the weight
    gradient one reduction), in the (B, T, D) layout the projections use, where ``F.conv1d``
    wants (B, D, T) — two transposed copies — and cuDNN's depthwise kernels.
    """
    k = weight.size(1)
    T = window.size(1) - k + 1
    w = weight.to(window.dtype)
    out = window[:, :T] * w[:, 0]
    for i in range(1, k):
        out = out + window[:, i:i + T] * w[:, i]
    return out if bias is None else out + bias.to(window.dtype)


class Mamba2(nn.Module):
    """A Mamba-2 mixer: ``forward(x, cos, sin, cache=None, layer=0, mask=None) -> (B, T, C)``.

    Args:
        cfg: an LMConfig (n_embd, ssm_state, ssm_expand, ssm_head_dim, ssm_conv, chunk_size,
            bias, dropout, norm_eps are read).
        layer: the layer index (named in errors; the mixer contract passes it).

    Raises:
        ValueError: ssm_expand * n_embd is not a multiple of ssm_head_dim.
        RuntimeError: ssm_kernel is "triton" on a GPU host where no kernel can run (the
            reason from :func:`~models.mixers.ssd_triton.triton_status`).
    """

    def __init__(self, cfg: LMConfig, layer: int = 0) -> None:
        super().__init__()
        C, E, P, N = cfg.n_embd, cfg.ssm_expand * cfg.n_embd, cfg.ssm_head_dim, cfg.ssm_state
        if E % P:
            raise ValueError(
                f"Mamba2: the inner width ssm_expand * n_embd ({E}) must be a multiple of "
                f"ssm_head_dim ({P})"
            )
        self.d_inner, self.head_dim, self.d_state, self.n_heads = E, P, N, E // P
        self.d_conv, self.chunk_size = cfg.ssm_conv, cfg.chunk_size
        self.kernel = cfg.ssm_kernel  # "auto" | "torch" | "triton"
        if self.kernel != "torch" and torch.cuda.is_available():
            # The kernels are imported and probed here, outside any compiled graph.
            usable, reason = triton_status()
            if self.kernel == "triton" and not usable:
                raise RuntimeError(f"Mamba2 layer {layer}: ssm_kernel 'triton' cannot run: "
                                   f"{reason}; use ssm_kernel 'auto' or 'torch'")
        self.conv_dim = E + 2 * N  # x, B and C go through the conv together
        # Named so DecoderLM's 1/sqrt(2 * n_layer) rescale of "*proj.weight" hits out_proj only.
        self.in_linear = nn.Linear(C, 2 * E + 2 * N + self.n_heads, bias=cfg.bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, cfg.ssm_conv,
                                groups=self.conv_dim, bias=True)  # depthwise, causal by padding
        # dt = softplus(raw + dt_bias) starts log-uniform in [1e-3, 1e-1] (Mamba's init).
        dt = torch.exp(torch.empty(self.n_heads).uniform_(math.log(1e-3), math.log(1e-1)))
        dt = dt.clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        # A = -exp(A_log) in [-16, -1]: heads with slow and fast memories.
        self.A_log = nn.Parameter(torch.empty(self.n_heads).uniform_(1.0, 16.0).log())
        self.D = nn.Parameter(torch.ones(self.n_heads))  # skip connection per head
        self.norm = nn.RMSNorm(E, eps=cfg.norm_eps)
        self.out_proj = nn.Linear(E, C, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor | None = None,
        sin: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mixes x (B, T, C) along time; cos, sin and mask are ignored (no RoPE, causal).

        With ``cache`` (a KVCache), continues from ``cache.states[layer]`` (None = start)
        and stores the state after the T tokens there; ``cache.length`` is left alone.
        """
        state = None if cache is None else cache.states[layer]
        z, xBC, dt = self.in_linear(x).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        dt = F.softplus(dt + self.dt_bias)  # (B, T, nh)
        A = -torch.exp(self.A_log.float())  # (nh,)
        if state is not None and x.size(1) == 1:  # decoding: the recurrence
            y, new_state = self._step(xBC[:, 0], dt[:, 0], A, state)
            y = y[:, None]  # (B, 1, E)
        else:
            y, new_state = self._scan(xBC, dt, A, state, keep_state=cache is not None)
        # Gated RMSNorm (gate first, as Mamba-2), in the norm's dtype: float32 under autocast.
        y = self.norm((y * F.silu(z)).to(self.norm.weight.dtype))  # (B, T, E)
        if cache is not None:
            cache.states[layer] = new_state
        return self.dropout(self.out_proj(y))  # (B, T, C)

    def _scan(
        self, xBC: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, state: tuple | None,
        keep_state: bool,
    ) -> tuple[torch.Tensor, tuple | None]:
        """Conv + chunked SSD over T tokens: xBC (B, T, E + 2N), dt (B, T, nh).

        Returns y (B, T, E) and, with ``keep_state``, the state after the T tokens.
        """
        Bsz, T, _ = xBC.shape
        E, N, nh, P, k = self.d_inner, self.d_state, self.n_heads, self.head_dim, self.d_conv
        if state is None:
            past, ssm_state = xBC.new_zeros(Bsz, k - 1, self.conv_dim), None
        else:
            past, ssm_state = state[0].to(xBC.dtype), state[1]
        window = torch.cat([past, xBC], dim=1)  # (B, k - 1 + T, E + 2N): causal left context
        xBC = F.silu(causal_depthwise_conv(window, self.conv1d.weight[:, 0], self.conv1d.bias))
        xs, B, C = xBC.split([E, N, N], dim=-1)  # (B, T, E), (B, T, N) x2
        xs = xs.reshape(Bsz, T, nh, P)  # (B, T, nh, P)
        if self._use_triton(xs):
            y, ssm_state = ssd_triton(xs, dt, A, B, C, ssm_state, output_final_state=keep_state)
        else:
            y, ssm_state = ssd_chunked(xs, dt, A, B, C, self.chunk_size, ssm_state)
        y = y + xs * self.D[:, None].to(y.dtype)  # (B, T, nh, P)
        # Cloned: a slice would keep the whole prefill's window alive in the cache.
        new_state = (window[:, window.size(1) - (k - 1):].clone(), ssm_state) if keep_state else None
        return y.reshape(Bsz, T, E), new_state

    def _use_triton(self, x: torch.Tensor) -> bool:
        """Whether this scan runs on a Triton kernel: always for "triton" (which then raises
        where it cannot run), never for "torch"; for "auto", on CUDA where a kernel is installed
        and its probe agreed with the PyTorch scan (:func:`triton_status`)."""
        if self.kernel == "auto":
            return x.is_cuda and triton_available()
        return self.kernel == "triton"

    def _step(
        self, xBC: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, state: tuple
    ) -> tuple[torch.Tensor, tuple]:
        """One token: xBC (B, E + 2N), dt (B, nh); returns y (B, E) and the new state."""
        E, N, nh, P = self.d_inner, self.d_state, self.n_heads, self.head_dim
        conv_state, ssm_state = state  # (B, k - 1, E + 2N), (B, nh, P, N)
        window = torch.cat([conv_state.to(xBC.dtype), xBC[:, None]], dim=1)  # (B, k, E + 2N)
        conv = causal_depthwise_conv(window, self.conv1d.weight[:, 0], self.conv1d.bias)
        xBC = F.silu(conv[:, 0])  # (B, E + 2N)
        xs, B, C = xBC.split([E, N, N], dim=-1)
        xs = xs.reshape(-1, nh, P)  # (B, nh, P)
        y, ssm_state = ssd_step(ssm_state, xs, dt, A, B, C)  # (B, nh, P)
        y = y.to(xs.dtype) + xs * self.D[:, None].to(xs.dtype)
        return y.reshape(-1, E), (window[:, 1:], ssm_state)
