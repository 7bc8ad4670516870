"""Sequence mixers of :class:`~models.lm.DecoderLM` blocks, by name (``LMConfig.mixer``).

A mixer mixes information across positions; the block around it adds the residual and
(except for GAU, which is a whole block) the MLP. Every mixer is built as
``Cls(cfg: LMConfig, layer: int)`` and called like the attention it replaces::

    y = mixer(x, cos, sin, cache=None, layer=0, mask=None)   # x, y: (B, T, C)

``cos``/``sin`` (T, hs/2) are the RoPE rotations of the T positions (mixers without RoPE
ignore them). With a :class:`~models.kv_cache.KVCache`, attention-like mixers (attention,
sliding_window, gau) store keys/values through ``cache.update``; recurrent mixers
(:data:`RECURRENT`) read and write ``cache.states[layer]`` (None = empty) and never touch
``cache.length``. Classes are imported on first use, so ``import models.mixers`` is cheap.

Example::

    cfg = LMConfig.preset("tiny", mixer=["linear", "attention"])
    mixer = build_mixer(cfg, 0)  # a models.mixers.linear_attention.LinearAttention
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from models.lm_config import MIXERS, RECURRENT

if TYPE_CHECKING:
    from torch import nn

    from models.lm_config import LMConfig

__all__ = ["MIXERS", "RECURRENT", "REGISTRY", "build_mixer", "mixer_class"]

# name -> "module:Class"; every name of MIXERS has an entry.
REGISTRY: dict[str, str] = {
    "attention": "models.lm:CausalSelfAttention",
    "gau": "models.mixers.gau:GAU",
    "linear": "models.mixers.linear_attention:LinearAttention",
    "sliding_window": "models.mixers.sliding_window:SlidingWindowAttention",
    "s4d": "models.mixers.s4d:S4D",
    "mamba2": "models.mixers.mamba2:Mamba2",
}


def mixer_class(name: str) -> type:
    """The mixer class registered under ``name`` (imports its module on first use).

    Raises:
        ValueError: an unknown name.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown mixer {name!r}; expected one of {MIXERS}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_mixer(cfg: LMConfig, layer: int) -> nn.Module:
    """The mixer of block ``layer``: ``mixer_class(cfg.mixer_of(layer))(cfg, layer)``."""
    return mixer_class(cfg.mixer_of(layer))(cfg, layer)
