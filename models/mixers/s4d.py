"""S4D (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space
Models"): a diagonal linear SSM per channel, as a sequence mixer.

Each of the H = n_embd channels runs its own SSM with N = ssm_state real state dims, kept as
N/2 complex modes whose conjugates are implied (so outputs are real)::

    x_t = Ā x_{t-1} + u_t,   y_t = 2·Re(C̄ · x_t) + D u_t        # x_t: (N/2,) complex
    Ā = exp(dt·A),  C̄ = C·(exp(dt·A) - 1)/A                      # ZOH with B = 1 folded in C

A_n = -1/2 + iπn (S4D-Lin), dt log-uniform in [1e-3, 1e-1] per channel, C complex normal.
Training and prefill use the convolution form y = K * u + D u with the kernel
K_l = 2·Re(Σ_n C̄_n Ā_n^l), built by a Vandermonde product and applied by an FFT of length
2T: O(T log T). Decoding runs the recurrence with the state (B, H, N/2) complex64 kept in
``cache.states[layer]``.

The mixer is the S4D paper's block around the SSM: ``u = in_linear(x)``; ``y = GELU(SSM(u))``;
``out = GLU(out_proj(y))`` (out_proj maps H -> 2H, the GLU gates one half with the other).
Parameters per layer (bias off): 3·C² + C·(2N + 2).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from models.kv_cache import KVCache
    from models.lm_config import LMConfig

__all__ = ["S4D", "vandermonde_powers"]


def vandermonde_powers(dtA: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors the powers Ā^l = exp(dtA·l), l < T, as Ā^(j·Q + i) = Ā^(j·Q) · Ā^i.

    ``(coarse, fine)`` of shapes (..., J) and (..., Q) with Q = ceil(sqrt(T)), J·Q >= T:
    contracting them against C̄ gives the whole kernel with no (H, N/2, T) tensor, so
    memory stays O(H·N·sqrt(T)) at 64k tokens. dtA: (..., ) complex.
    """
    Q = math.isqrt(T - 1) + 1  # ceil(sqrt(T))
    J = -(-T // Q)
    fine = torch.exp(dtA[..., None] * torch.arange(Q, device=dtA.device))  # (..., Q)
    coarse = torch.exp(dtA[..., None] * (Q * torch.arange(J, device=dtA.device)))  # (..., J)
    return coarse, fine


class S4D(nn.Module):
    """An S4D mixer block: ``forward(x, cos, sin, cache=None, layer=0, mask=None) -> (B,T,C)``.

    Args:
        cfg: an LMConfig (n_embd, ssm_state, bias, dropout are read).
        layer: the layer index (unused; the mixer contract passes it).

    Raises:
        ValueError: ssm_state is odd (the modes come in conjugate pairs).
    """

    def __init__(self, cfg: LMConfig, layer: int = 0) -> None:
        super().__init__()
        H, N = cfg.n_embd, cfg.ssm_state
        if N % 2:
            raise ValueError(f"S4D: ssm_state must be even (conjugate pairs), got {N}")
        N2 = N // 2
        self.H, self.N2 = H, N2
        # Named so DecoderLM's 1/sqrt(2 * n_layer) rescale of "*proj.weight" hits out_proj only.
        self.in_linear = nn.Linear(H, H, bias=cfg.bias)
        log_dt = torch.empty(H).uniform_(math.log(1e-3), math.log(1e-1))
        self.log_dt = nn.Parameter(log_dt)  # (H,)
        # The A parameters are stored flat (1-D) so that models.train_common puts no weight
        # decay on them, as S4 does: decay would pull the HiPPO-like init to A = -1.
        self.log_A_real = nn.Parameter(torch.full((H * N2,), math.log(0.5)))  # Re A = -1/2
        self.A_imag = nn.Parameter(math.pi * torch.arange(N2, dtype=torch.float32).repeat(H))
        self.C = nn.Parameter(torch.view_as_real(torch.randn(H, N2, dtype=torch.cfloat)))
        self.D = nn.Parameter(torch.randn(H))  # (H,)
        self.out_proj = nn.Linear(H, 2 * H, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def ssm_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The discretised ``(dtA, C̄)``, each (H, N/2) complex64: Ā = exp(dtA)."""
        A = torch.complex(-torch.exp(self.log_A_real.float()), self.A_imag.float())
        A = A.view(self.H, self.N2)  # (H, N/2)
        dtA = A * torch.exp(self.log_dt.float())[:, None]  # (H, N/2)
        C = torch.view_as_complex(self.C.float()) * torch.expm1(dtA) / A  # (H, N/2)
        return dtA, C

    def kernel(self, T: int) -> torch.Tensor:
        """The convolution kernel K (T, H), float32: K_l = 2·Re(Σ_n C̄_n Ā_n^l)."""
        dtA, C = self.ssm_params()
        coarse, fine = vandermonde_powers(dtA, T)  # (H, N/2, J), (H, N/2, Q)
        K = torch.einsum("hnj,hni->jih", C[..., None] * coarse, fine)  # (J, Q, H)
        return 2 * K.reshape(-1, self.H)[:T].real  # (T, H)

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
        u = self.in_linear(x)  # (B, T, H)
        state = None if cache is None else cache.states[layer]
        # The SSM runs in float32 (complex64): fp16/bf16 FFTs of length 2T lose the tail.
        with torch.autocast(u.device.type, enabled=False):
            if state is not None and u.size(1) == 1:
                y, state = self._step(u[:, 0].float(), state)
                y = y[:, None]  # (B, 1, H)
            else:
                y = self._conv(u.float())
                if cache is not None:
                    y, state = self._continue(u.float(), y, state)
        if cache is not None:
            cache.states[layer] = state
        y = F.gelu(y.to(u.dtype))  # (B, T, H)
        return self.dropout(F.glu(self.out_proj(y), dim=-1))  # (B, T, C)

    def _conv(self, u: torch.Tensor) -> torch.Tensor:
        """y = K * u + D u by FFT (zero state before u[:, 0]): u (B, T, H) -> (B, T, H)."""
        T = u.size(1)
        K = self.kernel(T)  # (T, H)
        y = torch.fft.irfft(
            torch.fft.rfft(u, n=2 * T, dim=1) * torch.fft.rfft(K, n=2 * T, dim=0), n=2 * T, dim=1
        )[:, :T]  # (B, T, H): the linear (not circular) convolution's first T outputs
        return y + u * self.D.float()

    def _continue(
        self, u: torch.Tensor, y: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adds a stored state's contribution to y and returns the state after u.

        With x_0 the state before u: y_t += 2·Re(C̄ Ā^(t+1) x_0) and
        x_T = Ā^T x_0 + Σ_l Ā^l u_(T-1-l). u, y: (B, T, H); state: (B, H, N/2) complex.
        """
        B, T, H = u.shape
        dtA, C = self.ssm_params()
        coarse, fine = vandermonde_powers(dtA, T + 1)  # powers 0..T (and a few beyond)
        Q = fine.size(-1)
        u_rev = F.pad(u.flip(1), (0, 0, 0, coarse.size(-1) * Q - T))  # (B, J·Q, H), zero tail
        u_rev = u_rev.view(B, -1, Q, H).to(torch.cfloat)  # (B, J, Q, H)
        new = torch.einsum("bjih,hnj,hni->bhn", u_rev, coarse, fine)  # (B, H, N/2)
        if state is not None:
            # Powers 1..T of Ā, each scaling x_0: (H, N/2, T) from the factored powers.
            powers = (coarse[..., :, None] * fine[..., None, :]).flatten(-2)[..., 1 : T + 1]
            y = y + 2 * torch.einsum("bhn,hn,hnt->bth", state, C, powers).real
            new = new + torch.exp(dtA * T) * state
        return y, new

    def _step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token u (B, H): x = Ā x + u; y = 2·Re(C̄·x) + D u. Returns (y (B, H), x)."""
        dtA, C = self.ssm_params()
        state = torch.exp(dtA) * state + u[..., None]  # (B, H, N/2)
        y = 2 * torch.einsum("bhn,hn->bh", state, C).real + u * self.D.float()
        return y, state
