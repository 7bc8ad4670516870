"""Greedy decoding with a KV cache, plain and speculative (Medusa or MTP drafts).

Speculative decoding (one sequence at a time) keeps the invariant: the cache holds
every token but the last one, ``t_n``, which the verifier produced. A step

1. drafts ``d_1..d_k`` for the tokens after ``t_n``: Medusa head j, or MTP depth j,
   read at the last cached position guesses ``t_{n+j}``;
2. runs ``[t_n, d_1..d_k]`` through the model in one cached forward (positions
   ``n..n+k``; causal among themselves) and takes the greedy token at each position;
3. accepts the longest prefix of drafts that equals those greedy tokens (``a`` of them)
   plus the verifier's own token after it, so ``a + 1`` tokens per forward;
4. truncates the cache to drop the rejected drafts.

Every emitted token is the model's own greedy choice given the tokens before it, so
the output equals :func:`generate_greedy` token for token (up to floating-point ties).

Mixers (``LMConfig.mixer``): greedy decoding works for every mixer; recurrent ones
(linear, s4d, mamba2) carry their state in ``KVCache.states``. Speculative decoding
needs step 4's rollback, so it runs for the mixers that keep keys/values (attention,
sliding_window, gau) and raises ValueError for a model with any recurrent layer.

Example::

    ref = generate_greedy(model, prompt, max_new_tokens=64)
    fast = generate_speculative(model, prompt, max_new_tokens=64, draft="medusa")
    assert torch.equal(ref.tokens, fast.tokens); print(fast.mean_accepted)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.lm import DecoderLM

__all__ = ["GenerationResult", "generate_greedy", "generate_speculative"]

_DRAFTS = ("medusa", "mtp")


@dataclass(frozen=True)
class GenerationResult:
    """What a decoding run produced."""

    tokens: torch.Tensor  # (B, T_prompt + max_new_tokens) LongTensor: prompt then new tokens
    new_tokens: int  # tokens generated per sequence
    steps: int  # decoding forwards after the prefill (each emits >= 1 token)
    accepted: tuple[int, ...]  # tokens emitted by each step (all 1 for plain greedy)

    @property
    def mean_accepted(self) -> float:
        """Mean tokens emitted per decoding forward (1.0 for plain greedy)."""
        return sum(self.accepted) / len(self.accepted) if self.accepted else 0.0


def _check(model: DecoderLM, prompt: torch.Tensor, max_new_tokens: int) -> None:
    if not isinstance(model, DecoderLM):
        raise TypeError(f"model must be a DecoderLM, got {type(model).__name__}")
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.dtype != torch.long:
        raise TypeError("prompt must be a LongTensor (B, T)")
    if prompt.size(1) < 1:
        raise ValueError("prompt must hold at least one token")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise TypeError(f"max_new_tokens must be an int, got {max_new_tokens!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt.size(1) + max_new_tokens > model.config.block_size:
        raise ValueError(
            f"prompt ({prompt.size(1)}) + max_new_tokens ({max_new_tokens}) exceeds "
            f"block_size {model.config.block_size}"
        )


@torch.no_grad()
def generate_greedy(
    model: DecoderLM, prompt: torch.Tensor, max_new_tokens: int
) -> GenerationResult:
    """Greedy decoding, one token per cached forward: the reference for speculation.

    Args:
        model: the LM; put it in eval mode (dropout would make decoding random).
        prompt: LongTensor (B, T) of equal-length prompts.
        max_new_tokens: tokens to generate; ``T + max_new_tokens <= block_size``.

    Returns:
        A :class:`GenerationResult` with ``tokens`` (B, T + max_new_tokens).

    Raises:
        TypeError, ValueError: bad arguments, or a sequence longer than block_size.
    """
    _check(model, prompt, max_new_tokens)
    cache = model.new_kv_cache()
    h = model.hidden_states(prompt, cache)  # (B, T, C)
    tok = model.head(h[:, -1]).argmax(dim=-1, keepdim=True)  # (B, 1)
    out = [prompt, tok]
    for _ in range(max_new_tokens - 1):
        h = model.hidden_states(tok, cache)  # (B, 1, C)
        tok = model.head(h[:, -1]).argmax(dim=-1, keepdim=True)  # (B, 1)
        out.append(tok)
    steps = max_new_tokens - 1
    return GenerationResult(torch.cat(out, dim=1), max_new_tokens, steps, (1,) * steps)


def _draft_medusa(model: DecoderLM, h_last: torch.Tensor) -> torch.Tensor:
    """Top-1 token of each Medusa head at the last cached position; h_last (1, 1, C) -> (K,)."""
    return torch.stack([logits[0, -1].argmax() for logits in model.medusa_logits(h_last)])


def _draft_mtp(
    model: DecoderLM, hidden: torch.Tensor, tokens: torch.Tensor, window: int | None
) -> torch.Tensor:
    """Chains the MTP modules over the cached positions' hidden states (1, m, C) -> (D,).

    ``tokens`` (1, m + 1) holds every token so far. Depth j at position i reads
    ``t_{i+j}``; at the last positions those are drafts of the earlier depths.
    """
    m = hidden.size(1)
    start = 0 if window is None else max(0, m - window)
    h, ids, drafts = hidden[:, start:], tokens[:, start:], []
    L = h.size(1)
    for depth in range(1, model.config.mtp_depth + 1):
        nxt = ids[:, depth : depth + L]  # (1, <= L): the true tokens t_{i+depth}
        if drafts:
            nxt = torch.cat((nxt, torch.stack(drafts)[None]), dim=1)[:, -L:]  # (1, L)
        h = model.mtp_hidden(depth, h, nxt)  # (1, L, C)
        drafts.append(model.mtp_head(depth, h[:, -1:])[0, -1].argmax())
    return torch.stack(drafts)


@torch.no_grad()
def generate_speculative(
    model: DecoderLM,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    draft: str = "medusa",
    max_draft: int | None = None,
    mtp_window: int | None = None,
) -> GenerationResult:
    """Greedy decoding that verifies drafted tokens in one forward per step.

    Args:
        model: an eval-mode LM with Medusa heads (``draft="medusa"``) or MTP modules
            (``draft="mtp"``).
        prompt: LongTensor (1, T): one sequence (acceptance differs per sequence).
        max_new_tokens: tokens to generate; ``T + max_new_tokens <= block_size``.
        draft: "medusa" or "mtp".
        max_draft: use at most this many drafted tokens per step (default: all heads
            or depths).
        mtp_window: MTP drafting re-runs the MTP blocks over the last ``mtp_window``
            cached positions each step (default: all of them, as in training).

    Returns:
        A :class:`GenerationResult`; ``tokens`` equals :func:`generate_greedy`'s and
        ``mean_accepted`` is the mean number of tokens emitted per verification forward.

    Raises:
        TypeError, ValueError: bad arguments, a batch of more than one sequence, a
            model without the requested draft source, or one with a recurrent mixer
            (linear, s4d, mamba2: its state cannot roll rejected drafts back).
    """
    _check(model, prompt, max_new_tokens)
    recurrent = model.config.recurrent_layers
    if recurrent:
        name = model.config.mixer_of(recurrent[0])
        raise ValueError(
            f"speculative decoding needs a KV cache it can roll back, but layer {recurrent[0]} "
            f"uses the recurrent mixer {name!r}; use generate_greedy (speculation works for "
            "attention, sliding_window and gau)"
        )
    if prompt.size(0) != 1:
        raise ValueError(f"speculative decoding takes one sequence, got batch {prompt.size(0)}")
    if draft not in _DRAFTS:
        raise ValueError(f"draft must be one of {_DRAFTS}, got {draft!r}")
    if draft == "medusa" and model.medusa is None:
        raise ValueError("draft='medusa' needs a model with LMConfig.medusa_heads > 0")
    if draft == "mtp" and model.mtp is None:
        raise ValueError("draft='mtp' needs a model with LMConfig.mtp_depth > 0")
    if max_draft is not None and (not isinstance(max_draft, int) or max_draft < 0):
        raise ValueError(f"max_draft must be an int >= 0 or None, got {max_draft!r}")

    cache = model.new_kv_cache()
    hidden = model.hidden_states(prompt, cache)  # (1, T, C): the cached positions' states
    nxt = model.head(hidden[:, -1]).argmax(dim=-1)  # (1,): t_n
    tokens = torch.cat((prompt, nxt[None]), dim=1)  # (1, n + 1); the cache holds n of them
    new, accepted = 1, []
    while new < max_new_tokens:
        if draft == "medusa":
            drafts = _draft_medusa(model, hidden[:, -1:])  # (K,)
        else:
            drafts = _draft_mtp(model, hidden, tokens, mtp_window)  # (D,)
        room = min(max_new_tokens - new - 1, model.config.block_size - tokens.size(1))
        k = min(room, drafts.numel() if max_draft is None else max_draft)
        drafts = drafts[: max(0, k)]
        n = cache.length
        step_ids = torch.cat((tokens[0, -1:], drafts))[None]  # (1, k + 1): t_n, d_1..d_k
        h = model.hidden_states(step_ids, cache)  # (1, k + 1, C) at positions n..n+k
        greedy = model.head(h)[0].argmax(dim=-1)  # (k + 1,): the model's own choices
        a = int((greedy[:-1] == drafts).cumprod(dim=0).sum())  # accepted drafts; one sync
        cache.truncate(n + 1 + a)  # keep t_n and the accepted drafts
        # MTP re-reads every cached position's state (1, n + 1 + a, C); Medusa only the last.
        hidden = torch.cat((hidden, h[:, : a + 1]), dim=1) if draft == "mtp" else h[:, a : a + 1]
        tokens = torch.cat((tokens, drafts[:a][None], greedy[a : a + 1][None]), dim=1)
        new += a + 1
        accepted.append(a + 1)
    return GenerationResult(tokens, max_new_tokens, len(accepted), tuple(accepted))
