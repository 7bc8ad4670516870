"""The SSD scan of Mamba-2 (Dao & Gu 2024, "Transformers are SSMs"), in plain PyTorch.

A selective SSM with a scalar decay per head and one group of B/C shared by all heads::

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t ⊗ B_t        # (nh, P, N) per sequence
    y_t = h_t · C_t                                        # (nh, P)

:func:`ssd_chunked` computes every y_t at once with the chunked SSD algorithm: the
sequence is cut into chunks of Q; inside a chunk the output is a masked quadratic form
(attention-like, ``(C Bᵀ ∘ L) X`` with the decay matrix L from the chunk's cumulative
log-decays); across chunks only the (nh, P, N) states pass, through one decay-weighted
matmul over the chunk boundaries. No Python loop runs over time or chunks, so ``torch.compile`` sees a few
einsums and cumsums. Costs: O(T·Q·(N + nh·P)) for the chunks and O((T/Q)²·nh·P·N) for
the state passing, which takes over past T ≈ Q³/N (4k tokens at Q = N = 64): use
Q = 128..256 for T >= 16k. :func:`ssd_step` is the recurrence for one token (decoding).

Shapes: b batch, T time, h heads (nh), p head dim (P), n state size (N), c chunks, l and
s positions within a chunk (Q each).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["segsum", "ssd_chunked", "ssd_step"]


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Segment sums ``out[..., i, j] = a[..., j+1] + ... + a[..., i]`` for j <= i, -inf above.

    ``exp(segsum(a))`` is the lower-triangular decay matrix of a scalar recurrence with
    log-decays ``a``. Built with a masked cumsum (no differences of large cumsums), so it
    stays exact where the cumulative sum is large. a: (..., Q) -> (..., Q, Q).
    """
    Q = a.size(-1)
    x = a[..., None].expand(*a.shape, Q)  # (..., Q, Q): x[..., i, j] = a[..., i]
    strict = torch.ones(Q, Q, dtype=torch.bool, device=a.device).tril(-1)  # i > j
    x = torch.cumsum(x.masked_fill(~strict, 0.0), dim=-2)  # sum_{j < k <= i} a[..., k]
    causal = torch.ones(Q, Q, dtype=torch.bool, device=a.device).tril()
    return x.masked_fill(~causal, float("-inf"))


def ssd_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All outputs of the SSM above and its final state, by the chunked SSD algorithm.

    Args:
        x: inputs (b, T, h, p).
        dt: positive steps (b, T, h), already through softplus.
        A: negative decay rates (h,).
        B: input maps (b, T, n), shared by the heads (ngroups = 1).
        C: output maps (b, T, n).
        chunk_size: Q. T need not be a multiple: the tail is padded with dt = 0 (decay 1,
            no input), which leaves the outputs and the final state unchanged.
        initial_state: the state before x[:, 0], (b, h, p, n); None = zeros.

    Returns:
        ``(y, final_state)``: y (b, T, h, p) in x's dtype; the state after the last
        token (b, h, p, n), float32.
    """
    b, T, h, p = x.shape
    Q = chunk_size
    pad = (-T) % Q
    if pad:  # zero steps in the padded tail: exp(0 * A) = 1 keeps the state, dt * x adds 0
        x, dt = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    c = (T + pad) // Q
    xdt = (x * dt[..., None]).to(x.dtype).view(b, c, Q, h, p)  # (b, c, l, h, p): dt·x
    B, C = B.view(b, c, Q, -1), C.view(b, c, Q, -1)  # (b, c, l, n)
    # Log-decays in float32: their cumsums and exps decide every weight below.
    a = (dt.float() * A.float()).view(b, c, Q, h).permute(0, 3, 1, 2)  # (b, h, c, l)
    a_cum = torch.cumsum(a, dim=-1)  # (b, h, c, l)

    # 1. Within chunks: y_l = sum_{s <= l} (C_l · B_s) exp(a_{s+1} + ... + a_l) dt_s x_s.
    #    The exponent is a difference of the chunk's own cumsums, one broadcast subtraction
    #    (as Mamba-2's Triton kernels compute it) rather than segsum's masked cumsum over a
    #    (Q, Q) block. A chunk's cumsums span Q steps only: against float64, the largest
    #    relative error of L at Q = 64 is 8e-6 where they reach -100 (dt·A of the init) and
    #    4e-4 at -5,800 (dt·A = -90 a step), both under bf16's 4e-3 (segsum: 3e-6).
    causal = torch.ones(Q, Q, dtype=torch.bool, device=a.device).tril()  # s <= l
    L = torch.exp((a_cum[..., :, None] - a_cum[..., None, :]).masked_fill(~causal, -math.inf))
    L = L.to(x.dtype)  # (b, h, c, l, s)
    scores = torch.einsum("bcln,bcsn->bcls", C, B)  # (b, c, l, s), shared by the heads
    y = torch.einsum("bhcls,bcshp->bclhp", scores[:, None] * L, xdt)  # (b, c, l, h, p)

    # 2. Each chunk's own contribution to the state at its end (zero start).
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum).permute(0, 2, 3, 1)  # (b, c, l, h)
    xdt_end = xdt * decay_to_end[..., None].to(x.dtype)  # (b, c, l, h, p)
    states = torch.einsum("bcln,bclhp->bchpn", B, xdt_end)  # (b, c, h, p, n)

    # 3. Across chunks: the state entering chunk z = sum over chunks k < z (and the
    #    initial state) of their end states, decayed through the chunks in between.
    if initial_state is None:
        initial_state = states.new_zeros(b, h, p, states.size(-1))
    states = torch.cat([initial_state[:, None].to(states.dtype), states], dim=1)  # (b, c+1, ...)
    chunk_decay = torch.exp(segsum(F.pad(a_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    states = torch.einsum("bhzk,bkhpn->bzhpn", chunk_decay.to(states.dtype), states)
    entering, final_state = states[:, :-1], states[:, -1]  # (b, c, h, p, n), (b, h, p, n)

    # 4. The entering state's part of each output: C_l · state, decayed to position l.
    decay_in = torch.exp(a_cum).permute(0, 2, 3, 1)[..., None].to(x.dtype)  # (b, c, l, h, 1)
    y = y + torch.einsum("bcln,bchpn->bclhp", C, entering.to(x.dtype)) * decay_in
    y = y.reshape(b, c * Q, h, p)[:, :T]  # (b, T, h, p)
    return y, final_state.float()


def ssd_step(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the recurrence, in float32.

    Args:
        state: (b, h, p, n) before the token.
        x: (b, h, p); dt: (b, h); A: (h,); B, C: (b, n).

    Returns:
        ``(y, new_state)``: y (b, h, p) float32 and the state after the token (b, h, p, n).
    """
    x, dt, B, C = x.float(), dt.float(), B.float(), C.float()
    decay = torch.exp(dt * A.float())  # (b, h)
    state = state * decay[..., None, None] + (dt[..., None] * x)[..., None] * B[:, None, None, :]
    y = torch.einsum("bhpn,bn->bhp", state, C)  # (b, h, p)
    return y, state
