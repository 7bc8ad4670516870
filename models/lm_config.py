"""The architecture of a :class:`~models.lm.DecoderLM`, torch-free.

Kept apart from :mod:`models.lm` so that a config file can be checked (and
:mod:`models.kinds` imported) before torch loads. :mod:`models.lm` re-exports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from models.config_fields import (
    FieldValueError,
    check_number,
    check_types,
    positive_ints,
    preset_values,
)

__all__ = ["ATTENTION_BACKENDS", "LMConfig", "LM_PRESETS"]

# What TrainConfig.attention and models.attention.sdpa_backend(backend=...) accept.
ATTENTION_BACKENDS = ("auto", "math", "cudnn")

LM_PRESETS: dict[str, dict[str, Any]] = {
    # CPU unit tests: a forward+backward takes milliseconds.
    "tiny": dict(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=256, multiple_of=32),
    # GPT-2 small class (~124M parameters with the tied head): the GPU baseline.
    "small": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304),
}


@dataclass
class LMConfig:
    """Hyper-parameters of a :class:`DecoderLM`; stored as a plain dict in checkpoints."""

    vocab_size: int = 50304  # GPT-2's 50257 rounded up to a multiple of 64: faster matmuls
    block_size: int = 1024  # longest sequence; sizes the RoPE cos/sin cache
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # pretraining on plenty of data does not need it; ~0.1 to finetune
    rope_theta: float = 10000.0  # RoPE base from RoFormer/LLaMA; raise it for long contexts
    bias: bool = False  # no biases in Linear layers: slightly better and faster (LLaMA, PaLM)
    multiple_of: int = 256  # SwiGLU hidden size is rounded up to this: tensor-core friendly
    norm_eps: float = 1e-5  # RMSNorm epsilon; LLaMA's value, safe under fp16 autocast
    # Multi-token prediction (models.mtp): D sequential modules, module k predicts t+k+1.
    mtp_depth: int = 0  # D; 0 = off. DeepSeek-V3 uses 1; more gives longer speculative drafts
    mtp_lambda: float = 0.3  # loss = main + lambda * mean of the D MTP losses (DeepSeek-V3 early)
    # Medusa heads (models.medusa): head k predicts t+k+1 from the last hidden state.
    medusa_heads: int = 0  # K; 0 = off. The Medusa paper uses 4-5
    medusa_own_head: bool = False  # each head gets its own output Linear instead of the LM's
    medusa_decay: float = 0.8  # head k's loss weight is decay**k (Medusa paper: 0.8**k)
    medusa_weight: float = 1.0  # scales the summed Medusa loss; ~0.2 for joint (Medusa-2) runs

    def __post_init__(self) -> None:
        check_types(self)
        positive_ints(self, ("vocab_size", "block_size", "n_layer", "n_head", "n_embd",
                             "multiple_of"))
        positive_ints(self, ("mtp_depth", "medusa_heads"), low=0)
        if self.n_embd % self.n_head:
            raise FieldValueError("LMConfig", "n_embd", f"({self.n_embd}) must be divisible by "
                                  f"n_head ({self.n_head})")
        if self.head_size % 2:
            raise FieldValueError("LMConfig", "n_head", f"RoPE needs an even head size "
                                  f"(n_embd / n_head), got {self.head_size}")
        check_number(self, "dropout", high=1.0)
        check_number(self, "rope_theta", low_open=True)
        check_number(self, "norm_eps", low_open=True)
        for name in ("mtp_lambda", "medusa_decay", "medusa_weight"):
            check_number(self, name)

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU hidden width: 2/3 of 4*C (same params as a GELU MLP), rounded up."""
        hidden = int(2 * 4 * self.n_embd / 3)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LMConfig:
        """Returns a named configuration ("tiny", "small") with ``overrides`` applied.

        Raises:
            ValueError: unknown preset name.
            TypeError: an override that is not an LMConfig field.
        """
        return cls(**preset_values(cls, LM_PRESETS, name, overrides))
