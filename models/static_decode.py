"""Batched greedy and speculative decoding on static buffers, replayed as CUDA graphs.

:mod:`models.generate` decodes with a growing :class:`~models.kv_cache.KVCache` and one
host round-trip per token: at the bench model's size the GPU then waits on Python and
kernel launches (3.6 ms a token for 6 layers). :class:`StaticDecoder` removes both:

- every tensor a step touches is allocated once: per layer a key and a value buffer
  (B, nh, L, hs), the tokens (B, L) by absolute position, each sequence's cached length
  ``pos`` (B,) on the device, and (MTP) the cached positions' hidden states (B, L, C);
- a step reads and writes only those, by position, so its shapes never change: it is
  compiled once (inductor) and captured once into a CUDA graph, and decoding replays the
  graph with one host sync every ``check_every`` steps to see whether all are done;
- speculation is per sequence inside the batch: each row accepts its own number of drafts
  and advances its own ``pos``; rejected drafts need no rollback: keys past ``pos`` are
  masked out and overwritten by the next step.

Position bookkeeping, per row: ``tokens[:, :pos]`` have their keys/values cached,
``tokens[:, pos]`` is the last emitted token (not yet cached). A greedy step feeds it and
writes the next token at ``pos + 1``; a speculative step feeds it and K drafts, keeps the
greedy tokens of the accepted prefix plus one (``emit`` = a + 1 of them) at
``pos + 1 .. pos + emit`` and advances ``pos`` by ``emit``. Every emitted token is the
model's greedy choice, so both equal :func:`models.generate.generate_greedy`.

Scope: softmax-attention LMs (``mixer: attention`` in every layer, no prefix-tuning);
the others decode with :mod:`models.generate`. On the CPU the same steps run eagerly.

Example::

    dec = StaticDecoder(model, batch_size=8, max_len=prompt.size(1) + 256 + 5)
    ref = dec.greedy(prompt, 256)
    fast = dec.speculative(prompt, 256, draft="medusa")
    assert torch.equal(ref.tokens, fast.tokens)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.generate import GenerationResult
from models.lm import DecoderLM, apply_rope

__all__ = ["StaticDecoder"]


def _check_model(model: DecoderLM) -> None:
    if not isinstance(model, DecoderLM):
        raise TypeError(f"model must be a DecoderLM, got {type(model).__name__}")
    cfg = model.config
    others = [i for i in range(cfg.n_layer) if cfg.mixer_of(i) != "attention"]
    if others:
        raise ValueError(f"static decoding needs softmax attention in every layer; layer "
                         f"{others[0]} uses {cfg.mixer_of(others[0])!r} (use models.generate)")
    if any(getattr(b.attn, "prefix", None) is not None for b in model.blocks):
        raise ValueError("static decoding does not run prefix-tuned models; merge or use "
                         "models.generate")


class StaticDecoder:
    """Decodes up to ``batch_size`` equal-length prompts at once on preallocated buffers.

    Args:
        model: an eval-mode attention LM (with Medusa heads or MTP modules to speculate).
        batch_size: B, the rows of every buffer (a call may pass fewer prompts).
        max_len: L, positions per row: at least prompt + new tokens + drafts + 1; at most
            ``block_size`` (default).
        graphs: capture each step into a CUDA graph (default: on CUDA).
        compile: compile each step with torch.compile before capture (default: on CUDA).
        compile_mode: torch.compile's ``mode`` (e.g. "max-autotune-no-cudagraphs": the
            graphs are ours); None = its default.
        check_every: steps replayed between two host checks of "all rows done".

    Raises:
        TypeError, ValueError: not an attention DecoderLM, bad sizes.
    """

    def __init__(self, model: DecoderLM, batch_size: int, *, max_len: int | None = None,
                 graphs: bool | None = None, compile: bool | None = None,
                 compile_mode: str | None = None, check_every: int = 8) -> None:
        _check_model(model)
        cfg = model.config
        L = cfg.block_size if max_len is None else max_len
        if not 1 <= L <= cfg.block_size:
            raise ValueError(f"max_len must lie in [1, block_size={cfg.block_size}], got {L}")
        if batch_size < 1 or check_every < 1:
            raise ValueError("batch_size and check_every must be >= 1")
        weight = model.lm_head.weight
        self.model, self.device, self.dtype = model, weight.device, weight.dtype
        cuda = self.device.type == "cuda"
        self.graphs = cuda if graphs is None else graphs
        self.compile = cuda if compile is None else compile
        self.compile_mode = compile_mode
        self.check_every = check_every
        B, nh, hs = batch_size, cfg.n_head, cfg.head_size
        new = lambda *shape, dtype=self.dtype: torch.zeros(  # noqa: E731
            *shape, dtype=dtype, device=self.device)
        self.keys = [new(B, nh, L, hs) for _ in range(cfg.n_layer)]  # (B, nh, L, hs) each
        self.values = [new(B, nh, L, hs) for _ in range(cfg.n_layer)]
        self.tokens = new(B, L, dtype=torch.long)  # (B, L) by absolute position
        self.pos = new(B, dtype=torch.long)  # (B,) cached positions per row
        self.hidden = new(B, L, cfg.n_embd) if model.mtp is not None else None  # (B, L, C)
        self.stop = new(B, dtype=torch.long)  # (B,) a row is done once pos >= stop
        self.emitted = new(B, dtype=torch.long)  # (B,) tokens emitted by decoding steps
        self.active_steps = new(B, dtype=torch.long)  # (B,) steps a row was still running
        self._steps: dict[tuple, Callable[[], None]] = {}
        self._arange = torch.arange(L, device=self.device)  # (L,)

    # --- the model on static buffers ----------------------------------------------------

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, C) of ``ids`` (B, T) at ``positions`` (B, T); writes their
        keys/values there first and attends to every cached position <= each query's."""
        model, cfg = self.model, self.model.config
        B, T = ids.shape
        nh, hs = cfg.n_head, cfg.head_size
        scale = 1.0 / hs**0.5
        cos = model.rope_cos[positions][:, :, None, None, :]  # (B, T, 1, 1, hs/2)
        sin = model.rope_sin[positions][:, :, None, None, :]
        mask = self._arange[None, None, None, :] <= positions[:, None, :, None]  # (B, 1, T, L)
        index = positions[:, None, :, None].expand(B, nh, T, hs)  # (B, nh, T, hs)
        x = model.tok_emb(ids)  # (B, T, C)
        for layer, block in enumerate(model.blocks):
            attn = block.attn
            qkv = attn.qkv(block.attn_norm(x))  # (B, T, 3C)
            C = qkv.shape[-1] // 3
            qk = apply_rope(qkv[..., : 2 * C].view(B, T, 2, nh, hs), cos, sin)
            q, k = qk.unbind(2)  # (B, T, nh, hs) each
            v = qkv[..., 2 * C :].view(B, T, nh, hs)
            kbuf, vbuf = self.keys[layer][:B], self.values[layer][:B]
            kbuf.scatter_(2, index, k.transpose(1, 2).to(kbuf.dtype))
            vbuf.scatter_(2, index, v.transpose(1, 2).to(vbuf.dtype))
            # Attention written out: SDPA with a mask runs a memory-efficient kernel that
            # took 38 us a call for one fp32 query over 310 keys on an H100 (53% of a
            # greedy step); these three small ops take a few us, fused by inductor.
            att = (q.transpose(1, 2) @ kbuf.transpose(-2, -1)) * scale  # (B, nh, T, L)
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = att.to(vbuf.dtype) @ vbuf  # (B, nh, T, hs)
            x = x + attn.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)
            x = x + block.mlp(block.mlp_norm(x))
        return x

    def _greedy_step(self, B: int) -> None:
        pos = self.pos[:B]
        last = self.tokens[:B].gather(1, pos[:, None])  # (B, 1)
        h = self._forward(last, pos[:, None])  # (B, 1, C)
        nxt = self.model.head(h[:, -1]).argmax(dim=-1)  # (B,)
        self.tokens[:B].scatter_(1, (pos + 1)[:, None], nxt[:, None])
        self.pos[:B] += 1
        self.emitted[:B] += 1
        self.active_steps[:B] += 1

    def _drafts_medusa(self, h_last: torch.Tensor) -> torch.Tensor:
        """(B, C) -> top-1 of each Medusa head (B, K)."""
        logits = self.model.medusa_logits(h_last[:, None])  # K x (B, 1, V)
        return torch.stack([lg[:, -1].argmax(dim=-1) for lg in logits], dim=1)

    def _drafts_mtp(self, B: int, window: int) -> torch.Tensor:
        """Chains the MTP modules over the last ``window`` cached positions -> (B, D).

        Depth j at cached position i reads token ``t_{i+j}``; past the last token those
        are the drafts of the earlier depths (as :func:`models.generate._draft_mtp`).
        """
        model, pos = self.model, self.pos[:B]
        idx = (pos[:, None] - window + torch.arange(window, device=self.device)).clamp_min(0)
        C = self.hidden.shape[-1]
        h = self.hidden[:B].gather(1, idx[:, :, None].expand(B, window, C))  # (B, W, C)
        ext = self.tokens[:B].gather(1, torch.cat((idx, pos[:, None]), dim=1))  # (B, W + 1)
        drafts = []
        for depth in range(1, model.config.mtp_depth + 1):
            ext_j = torch.cat([ext, *[d[:, None] for d in drafts]], dim=1)  # (B, W + depth)
            h = model.mtp_hidden(depth, h, ext_j[:, -window:])  # (B, W, C)
            drafts.append(model.mtp_head(depth, h[:, -1]).argmax(dim=-1))  # (B,)
        return torch.stack(drafts, dim=1)  # (B, D)

    def _speculative_step(self, B: int, draft: str, k: int, window: int) -> None:
        pos, stop = self.pos[:B], self.stop[:B]
        active = pos < stop
        # A finished row keeps stepping with the rest: it works at `stop` (its own tokens
        # past stop are beyond the result) and emits nothing, so no index leaves the buffers.
        base = torch.minimum(pos, stop)  # (B,)
        if draft == "medusa":  # from the last cached position's state (kept in self.hidden)
            drafts = self._drafts_medusa(self._last_hidden[:B])[:, :k]  # (B, k)
        else:
            drafts = self._drafts_mtp(B, window)[:, :k]
        last = self.tokens[:B].gather(1, base[:, None])  # (B, 1): t_n
        positions = base[:, None] + torch.arange(k + 1, device=self.device)  # (B, k + 1)
        h = self._forward(torch.cat((last, drafts), dim=1), positions)  # (B, k + 1, C)
        greedy = self.model.head(h).argmax(dim=-1)  # (B, k + 1): the model's own choices
        a = (greedy[:, :-1] == drafts).long().cumprod(dim=1).sum(dim=1)  # (B,) accepted
        emit = torch.where(active, a + 1, 0)  # (B,) tokens emitted this step
        # greedy[:, :a] equals the accepted drafts, greedy[:, a] is the verifier's next:
        # write all k + 1 (those past emit are overwritten later: pos moves by emit only).
        self.tokens[:B].scatter_(1, positions + 1, greedy)
        if self.hidden is not None:  # MTP reads the cached positions' states
            C = h.shape[-1]
            self.hidden[:B].scatter_(1, positions[:, :, None].expand(B, k + 1, C), h)
        if draft == "medusa":
            self._last_hidden[:B] = h.gather(1, a[:, None, None].expand(B, 1, h.shape[-1]))[:, 0]
        self.pos[:B] += emit
        self.emitted[:B] += emit
        self.active_steps[:B] += active.long()

    # --- capture and replay -------------------------------------------------------------

    def _step(self, key: tuple, fn: Callable[[], None]) -> Callable[[], None]:
        """``fn`` compiled and captured once per ``key``; replaying it runs one step.

        Capture runs ``fn`` a few times on whatever the buffers hold: callers reset the
        buffers afterwards (the prefill overwrites everything a step reads).
        """
        if key in self._steps:
            return self._steps[key]
        if self.compile:
            fn = torch.compile(fn, dynamic=False, fullgraph=True, mode=self.compile_mode)
        if not self.graphs:
            self._steps[key] = fn
            return fn
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # compile, autotune, allocate outside the graph
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        self._steps[key] = graph.replay
        return graph.replay

    def _prefill(self, prompt: torch.Tensor, stop: int) -> torch.Tensor:
        """Resets the rows, caches the prompt's first T - 1 positions (eager); -> their h."""
        B, T = prompt.shape
        self.tokens[:B].zero_()
        self.tokens[:B, :T] = prompt
        self.pos[:B] = T - 1
        self.stop[:B] = stop
        self.emitted[:B] = 0
        self.active_steps[:B] = 0
        positions = torch.arange(T, device=self.device).expand(B, T)
        h = self._forward(prompt, positions)  # (B, T, C): also caches position T - 1 ...
        if self.hidden is not None:
            self.hidden[:B, :T] = h
        return h  # ... which the first step overwrites with the same keys

    def _check(self, prompt: torch.Tensor, max_new_tokens: int, extra: int) -> None:
        B_max, L = self.tokens.shape
        if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.dtype != torch.long:
            raise TypeError("prompt must be a LongTensor (B, T)")
        if not 1 <= prompt.size(0) <= B_max or prompt.size(1) < 1:
            raise ValueError(f"prompt must be (B <= {B_max}, T >= 1), got {tuple(prompt.shape)}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        need = prompt.size(1) + max_new_tokens + extra
        if need > L:
            raise ValueError(f"prompt ({prompt.size(1)}) + max_new_tokens ({max_new_tokens}) "
                             f"+ {extra} draft positions need max_len >= {need}, have {L}")

    def _run(self, step: Callable[[], None], B: int, max_steps: int) -> int:
        steps = 0
        while steps < max_steps:
            for _ in range(min(self.check_every, max_steps - steps)):
                step()
            steps += min(self.check_every, max_steps - steps)
            if bool((self.pos[:B] >= self.stop[:B]).all()):  # the one host sync
                break
        return steps

    def _result(self, prompt: torch.Tensor, max_new_tokens: int, steps: int) -> GenerationResult:
        B, T = prompt.shape
        emitted, active = self.emitted[:B].tolist(), self.active_steps[:B].tolist()
        # accepted: per row, its mean tokens per step, spread as whole-step counts so that
        # GenerationResult.mean_accepted is the mean over every (row, step) of tokens emitted.
        accepted = tuple(e / s for e, s in zip(emitted, active, strict=True) for _ in range(s))
        tokens = self.tokens[:B, : T + max_new_tokens].clone()
        return GenerationResult(tokens, max_new_tokens, steps, accepted)

    @torch.no_grad()
    def greedy(self, prompt: torch.Tensor, max_new_tokens: int) -> GenerationResult:
        """Greedy decoding of ``prompt`` (B, T): one token per row and step.

        Returns:
            A :class:`~models.generate.GenerationResult`; ``tokens`` (B, T + new) equal
            :func:`models.generate.generate_greedy`'s.
        """
        self._check(prompt, max_new_tokens, 0)
        B, T = prompt.shape
        step = self._step(("greedy", B), lambda: self._greedy_step(B))
        self._prefill(prompt, T - 1 + max_new_tokens)
        steps = self._run(step, B, max_new_tokens)
        return self._result(prompt, max_new_tokens, steps)

    @torch.no_grad()
    def speculative(self, prompt: torch.Tensor, max_new_tokens: int, *, draft: str = "medusa",
                    max_draft: int | None = None, mtp_window: int = 64) -> GenerationResult:
        """Speculative greedy decoding, each row accepting its own number of drafts a step.

        Args:
            prompt: (B, T) equal-length prompts.
            max_new_tokens: tokens per row.
            draft: ``"medusa"`` (heads on the last state) or ``"mtp"`` (the MTP modules
                over the last ``mtp_window`` cached positions).
            max_draft: drafts verified per step (default: every head or depth).

        Returns:
            A :class:`~models.generate.GenerationResult`: ``tokens`` equal greedy's;
            ``mean_accepted`` is the mean tokens emitted per row and verification step.

        Raises:
            ValueError: no heads/modules of that kind, or buffers too short.
        """
        model = self.model
        if draft == "medusa" and model.medusa is None:
            raise ValueError("draft='medusa' needs a model with LMConfig.medusa_heads > 0")
        if draft == "mtp" and model.mtp is None:
            raise ValueError("draft='mtp' needs a model with LMConfig.mtp_depth > 0")
        if draft not in ("medusa", "mtp"):
            raise ValueError(f"draft must be 'medusa' or 'mtp', got {draft!r}")
        K = model.config.medusa_heads if draft == "medusa" else model.config.mtp_depth
        k = K if max_draft is None else min(K, max_draft)
        if k < 1:
            raise ValueError(f"max_draft must be >= 1, got {max_draft}")
        self._check(prompt, max_new_tokens, k + 1)
        B, T = prompt.shape
        window = min(mtp_window, T - 1)  # cached positions before the first step
        if draft == "mtp" and window < 1:
            raise ValueError("MTP drafting needs prompts of >= 2 tokens and mtp_window >= 1")
        if draft == "medusa" and not hasattr(self, "_last_hidden"):
            self._last_hidden = torch.zeros(self.tokens.shape[0], model.config.n_embd,
                                            dtype=self.dtype, device=self.device)
        step = self._step(("speculative", B, draft, k, window),
                          lambda: self._speculative_step(B, draft, k, window))
        h = self._prefill(prompt, T - 1 + max_new_tokens)
        if draft == "medusa":  # drafts read the last cached position, T - 2 (pos = T - 1)
            self._last_hidden[:B] = h[:, -2] if T > 1 else 0  # T = 1: no state, poor drafts
        steps = self._run(step, B, max_new_tokens)
        return self._result(prompt, max_new_tokens, steps)
