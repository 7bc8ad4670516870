"""A decoder-only language model in one readable file.

LLaMA-flavoured GPT: token embedding, rotary position embeddings (RoPE) on q and k,
pre-norm RMSNorm, SwiGLU MLP, causal attention through
``torch.nn.functional.scaled_dot_product_attention``, a final RMSNorm and an output
head tied to the token embedding. Shapes: B batch, T time, C channels (n_embd),
nh heads, hs head size (C // nh), V vocab.

``LMConfig.mixer`` swaps the attention of every block (or of each block, given a list)
for another sequence mixer of :mod:`models.mixers`: GAU (a whole block: it replaces the
MLP too), linear attention, sliding-window attention, S4D or Mamba-2.

Example::

    cfg = LMConfig.preset("tiny", vocab_size=256)
    model = DecoderLM(cfg)
    logits, loss = model(idx, targets)  # idx, targets: LongTensor (B, T)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.kv_cache import KVCache
from models.lm_config import LMConfig
from models.medusa import MedusaHeads
from models.mixers import build_mixer
from models.mtp import MTPModule

__all__ = ["IGNORE_INDEX", "Block", "CausalSelfAttention", "DecoderLM", "LMConfig", "apply_rope", "roped_qkv",
           "rope_cache"]

IGNORE_INDEX = -100  # targets with this value (padding) do not count in the loss


def rope_cache(
    seq_len: int, head_size: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Precomputes RoPE rotations: cos and sin, each (seq_len, head_size // 2), float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (T, hs/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates channel pairs (i, i + hs/2) of ``x`` (..., T, hs) by the angles in cos/sin (T, hs/2).

    cos/sin may carry extra broadcast dims, e.g. (T, 1, hs/2) for ``x`` laid out (B, T, nh, hs).
    The rotation runs in ``x``'s dtype (cos/sin are cast, as in LLaMA): under bf16/fp16
    autocast an fp32 upcast would double the memory traffic of this memory-bound step.
    After rotation, q_m · k_n depends on positions only through m - n.
    """
    half = x.shape[-1] // 2
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]  # (..., T, hs/2) each
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def roped_qkv(qkv: torch.Tensor, n_head: int, cos: torch.Tensor, sin: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heads of a fused QKV projection (B, T, 3C), RoPE on q and k: q, k, v (B, nh, T, hs).

    RoPE runs on q and k at once, in the (B, T, 2, nh, hs) layout the projection wrote: one
    elementwise kernel for both, forward and backward, contiguous along hs (an H100 ran a
    compiled layer's forward + backward 0.26 ms faster at 16x1024 tokens than with q and k
    roped apart); then one transpose for attention.
    """
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    qk = qkv[..., : 2 * C].view(B, T, 2, n_head, hs)
    q, k = apply_rope(qk, cos[:, None, None, :], sin[:, None, None, :]).unbind(2)
    q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, nh, T, hs) each
    v = qkv[..., 2 * C :].view(B, T, n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
    return q, k, v


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with RoPE (the "attention" mixer).

    Prefix-tuning hook: ``self.prefix`` is None, or a callable (e.g. a module) that
    takes no arguments and returns ``(k_prefix, v_prefix)``, each (B or 1, nh, P, hs),
    without RoPE. Every query then attends to all P prefix positions and causally to the
    sequence; with a KVCache the prefix is prepended at attention time, never cached.
    """

    def __init__(self, cfg: LMConfig, layer: int = 0) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.prefix = None  # prefix-tuning: () -> (k_prefix, v_prefix); see the class doc

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = roped_qkv(self.qkv(x), self.n_head, cos, sin)  # (B, nh, T, hs) each
        if self.prefix is not None:
            y = self._attend_with_prefix(q, k, v, cache, layer)  # (B, nh, T, hs)
        elif cache is None:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )  # (B, nh, T, hs); the backend is chosen by models.attention.sdpa_backend
        else:  # incremental decoding: attend to the cached past too
            causal = cache.length == 0 and T > 1
            k, v = cache.update(layer, k, v)  # (B, nh, P + T, hs), P = cached positions
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y))

    def _attend_with_prefix(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        """Attention over ``[prefix; cached; new]`` keys: all P prefix keys, then causal.

        With S = P + cached + T keys, query i may see keys ``<= i + S - T``: the
        lower-right aligned causal mask.
        """
        B, _, T, _ = q.shape
        k_prefix, v_prefix = self.prefix()  # (B or 1, nh, P, hs) each
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, L + T, hs): the prefix is not cached
        k = torch.cat((k_prefix.to(k.dtype).expand(B, -1, -1, -1), k), dim=2)  # (B, nh, S, hs)
        v = torch.cat((v_prefix.to(v.dtype).expand(B, -1, -1, -1), v), dim=2)
        S = k.size(2)
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            # Training: S - T dummy queries in front make SDPA's top-left causal mask the
            # lower-right one for the real queries (query i, now at S - T + i, sees every
            # prefix key and the causal past), with no explicit mask, so FlashAttention
            # runs it; a boolean mask rules flash out (the trainer pins flash on CUDA) and
            # torch's CausalBias graph-breaks torch.compile once per layer. The dummies
            # cost (S - T) / T more queries, and their rows are dropped.
            pad = q.new_zeros(B, q.size(1), S - T, q.size(3))
            y = F.scaled_dot_product_attention(torch.cat((pad, q), dim=2), k, v, is_causal=True,
                                               dropout_p=dropout)
            return y[:, :, S - T:]
        # Decoding (a few queries against a long cache): an explicit (T, S) boolean mask.
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


class SwiGLU(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=cfg.bias)
        self.up = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=cfg.bias)
        self.proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.silu(self.gate(x)) * self.up(x)))  # (B, T, C)


class Block(nn.Module):
    """``x + mixer(norm(x))`` then ``x + mlp(norm(x))``; a GAU layer is a whole block.

    The mixer is ``cfg.mixer_of(layer)`` built by :func:`models.mixers.build_mixer`
    (attribute ``attn`` whatever its kind, so attention checkpoints keep their keys).
    A GAU block has no MLP (``self.mlp`` is None): ``x + GAU(norm(x))``.
    """

    def __init__(self, cfg: LMConfig, layer: int = 0) -> None:
        super().__init__()
        self.mixer = cfg.mixer_of(layer)
        self.attn_norm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
        if self.mixer == "attention":
            self.attn = CausalSelfAttention(cfg, layer)
        else:
            self.attn = build_mixer(cfg, layer)
        self.mlp_norm = self.mlp = None
        if self.mixer != "gau":
            self.mlp_norm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
            self.mlp = SwiGLU(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, layer, mask)
        if self.mlp is None:  # GAU: the mixer was the whole block
            return x
        return x + self.mlp(self.mlp_norm(x))


class DecoderLM(nn.Module):
    """Causal decoder LM. ``forward(idx, targets=None) -> (logits, loss)``.

    With ``mtp_depth`` > 0 or ``medusa_heads`` > 0 the model also owns MTP modules
    (``self.mtp``) or Medusa heads (``self.medusa``); ``loss`` is then the total training
    loss and ``last_loss_parts`` holds its parts from the last forward with targets.
    """

    # What an fp8 run (models/fp8.py) keeps in bf16: the output head, as FP8 recipes keep the
    # last layer; its logits' gradient (B x T x vocab) is also the step's largest tensor to
    # quantise, which costs about what FP8 saves on its matmul.
    fp8_keep = ("lm_head",)

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        if not isinstance(config, LMConfig):
            raise TypeError(f"config must be an LMConfig, got {type(config).__name__}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying (Press & Wolf, 2017)
        self.mtp = None
        if config.mtp_depth:
            last = config.n_layer - 1  # MTP blocks use the last block's mixer
            self.mtp = nn.ModuleList(
                MTPModule(config.n_embd, config.norm_eps, Block(config, last))
                for _ in range(config.mtp_depth)
            )
        self.medusa = None
        if config.medusa_heads:
            self.medusa = MedusaHeads(
                config.n_embd, config.medusa_heads, config.vocab_size, config.medusa_own_head
            )
        cos, sin = rope_cache(config.block_size, config.head_size, config.rope_theta)
        # Derived from the config, so not saved in the state dict.
        self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, hs/2)
        self.register_buffer("rope_sin", sin, persistent=False)  # (block_size, hs/2)
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if self.medusa is not None:
            self.medusa.reset_parameters(self.lm_head)  # heads start as copies of the LM head
        # Detached scalars of the last forward with targets: "main", "total", and with
        # MTP/Medusa on "mtp", "mtp_1".., "medusa", "medusa_1".. (unweighted head losses).
        self.last_loss_parts: dict[str, torch.Tensor] = {}

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def new_kv_cache(self) -> KVCache:
        """An empty :class:`~models.kv_cache.KVCache` sized to ``block_size``."""
        return KVCache(self.config.n_layer, self.config.block_size)

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The last block's output (B, T, C), before the final norm.

        Args:
            idx: token ids (B, T).
            cache: for incremental decoding: ``idx`` continues the cached tokens, sits at
                positions ``[cache.length, cache.length + T)``, attends to the cached keys
                (causally among its own T tokens), and is appended to the cache.

        Raises:
            ValueError: the positions do not fit in block_size.
        """
        B, T = idx.shape
        start = 0 if cache is None else cache.length
        if start + T > self.config.block_size:
            raise ValueError(
                f"positions up to {start + T} exceed block_size {self.config.block_size}"
            )
        cos, sin = self.rope_cos[start : start + T], self.rope_sin[start : start + T]  # (T, hs/2)
        mask = None if cache is None else cache.attn_mask(T, idx.device)  # (T, start + T)
        x = self.drop(self.tok_emb(idx))  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, layer, mask)  # (B, T, C)
        if cache is not None:
            cache.advance(T)
        return x

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Next-token logits (..., V) from hidden states (..., C): final norm + LM head."""
        return self.lm_head(self.norm(h))

    def medusa_logits(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Medusa head k's logits for token t+k+1, k = 1..K, each (B, T, V), from (B, T, C)."""
        if self.medusa is None:
            raise ValueError("model has no Medusa heads (LMConfig.medusa_heads is 0)")
        return self.medusa(self.norm(h), self.lm_head)

    def mtp_hidden(self, depth: int, h_prev: torch.Tensor, idx_next: torch.Tensor) -> torch.Tensor:
        """MTP module ``depth`` (1-based): ``h^depth`` (B, T, C) from ``h^{depth-1}`` (B, T, C)
        and the ids of tokens ``t_{i+depth}`` (B, T). Logits: ``self.mtp_head(depth, h)``."""
        if self.mtp is None or not 1 <= depth <= len(self.mtp):
            raise ValueError(f"no MTP module at depth {depth} (mtp_depth={self.config.mtp_depth})")
        T = h_prev.size(1)
        emb = self.tok_emb(idx_next)  # (B, T, C)
        return self.mtp[depth - 1](h_prev, emb, self.rope_cos[:T], self.rope_sin[:T])

    def mtp_head(self, depth: int, h: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of MTP module ``depth``: its output norm + the shared LM head."""
        return self.lm_head(self.mtp[depth - 1].out_norm(h))

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
        return_logits: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Computes next-token logits for every position.

        Args:
            idx: token ids, LongTensor (B, T) with T <= block_size.
            targets: optional LongTensor (B, T); positions equal to -100 are ignored.
            return_logits: False (with targets) returns None for the logits: what training
                wants, since a compiled graph then need not hand the (B, T, V) logits out.

        Returns:
            ``(logits, loss)``: logits (B, T, V), or None when ``return_logits`` is False
            and targets are given; loss is the mean cross-entropy as a scalar tensor, or
            None without targets. With MTP/Medusa on, loss is
            ``main + mtp_lambda * mean_k mtp_k + medusa_weight * sum_k decay**k medusa_k``.

        Raises:
            ValueError: wrong rank, T > block_size, or targets shaped unlike idx.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T), got shape {tuple(idx.shape)}")
        if idx.size(1) > self.config.block_size:
            raise ValueError(
                f"sequence length {idx.size(1)} exceeds block_size {self.config.block_size}"
            )
        if targets is not None and targets.shape != idx.shape:
            raise ValueError(
                f"targets shape {tuple(targets.shape)} != idx shape {tuple(idx.shape)}"
            )
        h = self.hidden_states(idx)  # (B, T, C)
        logits = self.head(h)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = _cross_entropy(logits, targets)
            parts = {"main": loss.detach()}
            if self.mtp is not None:
                loss = loss + self.config.mtp_lambda * self._mtp_loss(h, idx, targets, parts)
            if self.medusa is not None:
                loss = loss + self.config.medusa_weight * self._medusa_loss(h, targets, parts)
            parts["total"] = loss.detach()
            self.last_loss_parts = parts
            if not return_logits:
                return None, loss
        return logits, loss

    def _mtp_loss(
        self, h: torch.Tensor, idx: torch.Tensor, targets: torch.Tensor, parts: dict
    ) -> torch.Tensor:
        """Mean over depths k of CE(MTP_k at i, t_{i+k+1}); depths past T are skipped."""
        T, losses = idx.size(1), []
        for k in range(1, len(self.mtp) + 1):
            if T - k < 1:
                break
            h = self.mtp_hidden(k, h[:, : T - k], idx[:, k:])  # (B, T - k, C)
            losses.append(_cross_entropy(self.mtp_head(k, h), targets[:, k:]))
            parts[f"mtp_{k}"] = losses[-1].detach()
        loss = torch.stack(losses).mean() if losses else h.new_zeros(())
        parts["mtp"] = loss.detach()
        return loss

    def _medusa_loss(self, h: torch.Tensor, targets: torch.Tensor, parts: dict) -> torch.Tensor:
        """Sum over heads k of decay**k * CE(head k at i, t_{i+k+1})."""
        T, loss = targets.size(1), h.new_zeros((), dtype=torch.float32)
        for k, logits in enumerate(self.medusa_logits(h), start=1):
            if T - k < 1:
                break
            head_loss = _cross_entropy(logits[:, : T - k], targets[:, k:])
            parts[f"medusa_{k}"] = head_loss.detach()
            loss = loss + self.config.medusa_decay**k * head_loss
        parts["medusa"] = loss.detach()
        return loss

    def loss_parts(self) -> dict[str, float]:
        """``last_loss_parts`` as Python floats (syncs the device: call it when logging)."""
        return {name: float(value) for name, value in self.last_loss_parts.items()}

    def num_params(self, exclude_embedding: bool = False) -> int:
        """Number of parameters; the tied head is counted once.

        Args:
            exclude_embedding: leave out the token embedding (= the tied output head).
        """
        n = sum(p.numel() for p in self.parameters())
        if exclude_embedding:
            n -= self.tok_emb.weight.numel()
        return n

    def estimate_flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) per token, PaLM appendix B: 6N + 12·L·nh·hs·T.

        Divide ``tokens_per_s * flops_per_token`` by the device's peak FLOP/s for MFU.
        The context term counts the keys a query sees: T for attention, the window for
        sliding_window, a chunk for the chunked mixers (gau, linear, mamba2; their state
        updates are left out), none for s4d.

        Args:
            seq_len: attention context T; defaults to block_size.
        """
        cfg = self.config
        T = cfg.block_size if seq_len is None else seq_len
        seen = {"attention": T, "sliding_window": min(T, cfg.window), "s4d": 0}
        context = sum(seen.get(name, min(T, cfg.chunk_size)) for name in cfg.mixers)
        return 6 * self.num_params() + 12 * cfg.n_head * cfg.head_size * context


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean CE over positions whose target is not IGNORE_INDEX; logits (B, T, V) in fp32."""
    B, T, V = logits.shape
    return F.cross_entropy(
        logits.reshape(B * T, V).float(), targets.reshape(B * T), ignore_index=IGNORE_INDEX
    )
