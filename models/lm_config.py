"""The architecture of a :class:`~models.lm.DecoderLM`, torch-free.

Kept apart from :mod:`models.lm` so that a config file can be checked (and
:mod:`models.kinds` imported) before torch loads. :mod:`models.lm` re-exports it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from models.config_fields import (
    FieldTypeError,
    FieldValueError,
    check_choice,
    check_number,
    check_types,
    positive_ints,
    preset_values,
)

__all__ = ["ATTENTION_BACKENDS", "GAU_ATTENTIONS", "LMConfig", "LM_PRESETS", "MIXERS", "RECURRENT",
           "SSM_KERNELS"]

# What TrainConfig.attention and models.attention.sdpa_backend(backend=...) accept.
ATTENTION_BACKENDS = ("auto", "math", "cudnn", "flash")
# Sequence mixers a layer can use (LMConfig.mixer); models.mixers builds them.
MIXERS = ("attention", "gau", "linear", "sliding_window", "mamba2", "s4d")
# Mixers that decode from a fixed-size state instead of keys/values (no cache rollback).
RECURRENT = frozenset({"linear", "s4d", "mamba2"})
GAU_ATTENTIONS = ("squared_relu", "softmax")  # LMConfig.gau_attention
# LMConfig.ssm_kernel: mamba2's scan. "torch" = models.mixers.ssd (every device), "triton" =
# a fused Triton kernel, mamba-ssm's or fla-core's (CUDA; models.mixers.ssd_triton), "auto" =
# triton on CUDA when one is installed and agrees with the PyTorch scan, else torch.
SSM_KERNELS = ("auto", "torch", "triton")

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
    # Sequence mixer of every layer (a name of MIXERS), or a list of n_layer names (hybrids).
    mixer: str | list[str] = "attention"  # softmax attention (FlashAttention on CUDA)
    window: int = 256  # sliding_window: a token sees itself and the window - 1 before it
    chunk_size: int = 64  # chunked forms of gau, linear, mamba2: quadratic within a chunk
    gau_expansion: int = 2  # GAU value/gate width e = expansion * C (FLASH paper: 2)
    gau_qk_dim: int = 128  # GAU shared query/key width s (FLASH paper: 128)
    gau_attention: str = "squared_relu"  # GAU scores: relu(.)^2 as in FLASH, or "softmax"
    ssm_state: int = 64  # N: state size per channel (s4d) or per head (mamba2)
    ssm_expand: int = 2  # mamba2 inner width = expand * C
    ssm_head_dim: int = 64  # mamba2 head width P
    ssm_conv: int = 4  # mamba2 depthwise causal conv kernel
    ssm_kernel: str = "auto"  # mamba2's SSD scan: a name of SSM_KERNELS

    def __post_init__(self) -> None:
        self._check_mixer()
        view = copy.copy(self)  # check_types knows plain scalars; mixer is checked above
        view.mixer = "attention"
        check_types(view)
        positive_ints(self, ("vocab_size", "block_size", "n_layer", "n_head", "n_embd",
                             "multiple_of"))
        positive_ints(self, ("mtp_depth", "medusa_heads"), low=0)
        positive_ints(self, ("window", "chunk_size", "gau_expansion", "gau_qk_dim", "ssm_state",
                             "ssm_expand", "ssm_head_dim", "ssm_conv"))
        check_choice(self, "gau_attention", GAU_ATTENTIONS)
        check_choice(self, "ssm_kernel", SSM_KERNELS)
        if self.gau_qk_dim % 2:
            raise FieldValueError("LMConfig", "gau_qk_dim", f"RoPE needs an even width, got "
                                  f"{self.gau_qk_dim}")
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

    def _check_mixer(self) -> None:
        """Checks ``mixer``: a name of MIXERS, or a list (or tuple) of n_layer such names."""
        value = self.mixer
        if isinstance(value, tuple):
            value = self.mixer = list(value)
        names = value if isinstance(value, list) else [value]
        for name in names:
            if not isinstance(name, str):
                raise FieldTypeError("LMConfig", "mixer", f"must be a string or a list of "
                                     f"strings, got {value!r}")
            if name not in MIXERS:
                raise FieldValueError("LMConfig", "mixer", f"unknown mixer {name!r}; expected "
                                      f"one of {MIXERS}")
        if isinstance(value, list) and len(value) != self.n_layer:
            raise FieldValueError("LMConfig", "mixer", f"a list needs one name per layer: "
                                  f"{len(value)} names for n_layer={self.n_layer}")

    def mixer_of(self, layer: int) -> str:
        """The mixer name of block ``layer`` (0-based).

        Raises:
            ValueError: ``layer`` outside ``[0, n_layer)``.
        """
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.n_layer:
            raise ValueError(f"layer must be in [0, {self.n_layer}), got {layer!r}")
        return self.mixer[layer] if isinstance(self.mixer, list) else self.mixer

    @property
    def mixers(self) -> list[str]:
        """The mixer name of every block, in order."""
        return [self.mixer_of(i) for i in range(self.n_layer)]

    @property
    def recurrent_layers(self) -> list[int]:
        """Blocks whose mixer decodes from a state (RECURRENT): no KV-cache rollback."""
        return [i for i, name in enumerate(self.mixers) if name in RECURRENT]

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
