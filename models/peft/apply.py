"""Putting PEFT modules into a DecoderLM, reading their tensors out and back in, merging.

    model = DecoderLM(cfg); model.load_state_dict(base)       # the trained base LM
    apply_peft(model, {"kind": "lora", "rank": 8})            # base frozen, LoRA trains
    ...train...
    state = trainable_state_dict(model)                       # the LoRA tensors only
    other = load_peft(DecoderLM(cfg) with the base weights, state, model.peft_config)
    merge_peft(other)                                         # LoRA folded in, prefixes fixed
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from models.peft.adapter import Adapter, add_adapters
from models.peft.lora import LoRALinear, add_lora, merge_lora
from models.peft.prefix import PrefixEncoder, StaticPrefix, add_prefix, merge_prefix
from models.peft_config import PeftConfig, peft_config

__all__ = ["apply_peft", "load_peft", "merge_peft", "peft_tensor_names",
           "trainable_state_dict"]


def apply_peft(model: nn.Module, cfg: PeftConfig | Mapping[str, Any]) -> nn.Module:
    """Freezes ``model``'s parameters and injects the trainable PEFT modules (in place).

    LoRA pairs on the target Linears (B = 0), adapters after attention and MLP (up = 0)
    — both start as the base model exactly — or a prefix encoder hooked into every
    attention layer. The new modules take the device and dtype of the weights they sit
    by; only their parameters require grad. ``model.peft_config`` records ``cfg``.

    Args:
        model: a :class:`~models.lm.DecoderLM`, with its base weights loaded (or not yet:
            LoRA and adapters leave the base state-dict keys as they are).
        cfg: a PEFT config or a mapping with ``kind`` (see :mod:`models.peft_config`).

    Returns:
        ``model``.

    Raises:
        ValueError: the model already has PEFT modules, or has nothing the kind can adapt.
        FieldTypeError, FieldValueError: a bad ``cfg`` (field named).
    """
    cfg = peft_config(cfg)
    if getattr(model, "peft_config", None) is not None:
        raise ValueError(f"the model already has {model.peft_config.kind} PEFT modules")
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.kind == "lora":
        add_lora(model.blocks, cfg)
    elif cfg.kind == "adapter":
        add_adapters(model.blocks, cfg, model.config.n_embd)
    else:
        add_prefix(model, cfg)
    model.peft_config = cfg
    return model


def peft_tensor_names(model: nn.Module) -> list[str]:
    """State-dict names of the PEFT tensors of ``model`` (LoRA pairs, adapters, prefixes)."""
    names = []
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, LoRALinear):
            names += [f"{dot}lora_A", f"{dot}lora_B"]
        elif isinstance(module, Adapter | PrefixEncoder | StaticPrefix):
            names += [f"{dot}{name}" for name, _ in module.named_parameters()]
    return names


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The PEFT tensors of ``model`` by state-dict name: all a PEFT run trains and keeps."""
    state = model.state_dict()
    return {name: state[name] for name in peft_tensor_names(model)}


def load_peft(model: nn.Module, peft_state: Mapping[str, torch.Tensor],
              cfg: PeftConfig | Mapping[str, Any] | None = None) -> nn.Module:
    """Loads PEFT tensors into ``model`` (in place); applies ``cfg`` first when given.

    ``peft_state`` is what :func:`trainable_state_dict` returned; a prefix run's state may
    hold the merged prefixes (``peft_prefix.kv``) instead of the encoder.

    Args:
        model: a model with its base weights, PEFT applied already unless ``cfg`` is given.
        peft_state: name -> tensor.
        cfg: the PEFT config to apply first, or None.

    Returns:
        ``model``.

    Raises:
        ValueError: a model without PEFT modules, or a tensor that is missing, unknown or
            of another shape (named). Nothing is loaded when a check fails.
    """
    if cfg is not None:
        apply_peft(model, cfg)
    if getattr(model, "peft_config", None) is None:
        raise ValueError("the model has no PEFT modules: pass cfg, or apply_peft first")
    if "peft_prefix.kv" in peft_state:
        merge_prefix(model)  # a merged prefix: only the prefixes were kept
    expected = model.state_dict()
    names = peft_tensor_names(model)
    missing = [n for n in names if n not in peft_state]
    unknown = [n for n in peft_state if n not in names]
    if missing or unknown:
        raise ValueError(f"PEFT state does not fit the model: missing {missing[:4]}, "
                         f"unknown {unknown[:4]}")
    for name in names:
        if peft_state[name].shape != expected[name].shape:
            raise ValueError(f"PEFT tensor {name} has shape {tuple(peft_state[name].shape)}, "
                             f"the model's is {tuple(expected[name].shape)}")
    model.load_state_dict(dict(peft_state), strict=False)
    return model


def merge_peft(model: nn.Module) -> nn.Module:
    """The inference form of a PEFT model (in place): LoRA folded into the base weights,
    prefixes evaluated once; adapters have no merged form and stay. Returns ``model``."""
    kind = getattr(getattr(model, "peft_config", None), "kind", None)
    if kind == "lora":
        merge_lora(model)
    elif kind == "prefix":
        merge_prefix(model)
    return model
