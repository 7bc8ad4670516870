"""Parameter-efficient fine-tuning of a trained LM: the typed ``train.peft`` block, torch-free.

``TrainConfig.peft`` holds one of these (the config file gives a mapping with ``kind``);
:func:`peft_config` turns the mapping into the kind's dataclass and names a bad field
``peft.<field>`` (``train.peft.<field>`` once :func:`models.kinds.build_configs` adds its
section). The modules themselves are in :mod:`models.peft` (torch).

    peft_config({"kind": "lora", "rank": 4})      # LoRAConfig(rank=4, alpha=16.0, ...)
    peft_config({"kind": "adapter", "rank": 4})   # FieldValueError: peft.rank (not an adapter field)
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.config_fields import (
    FieldError,
    FieldTypeError,
    FieldValueError,
    check_number,
    check_types,
    positive_ints,
)

__all__ = ["LORA_TARGETS", "PEFT_KINDS", "AdapterConfig", "LoRAConfig", "PeftConfig",
           "PrefixConfig", "peft_config"]

# LoRA target name -> (sub-module of a Block, Linear in it). "qkv"/"proj": the attention's
# input and output projections; "gate"/"up"/"down": the SwiGLU's three Linears.
LORA_TARGETS: dict[str, tuple[str, str]] = {
    "qkv": ("attn", "qkv"), "proj": ("attn", "proj"),
    "gate": ("mlp", "gate"), "up": ("mlp", "up"), "down": ("mlp", "proj"),
}


def _check_kind(config: Any, kind: str) -> None:
    if config.kind != kind:
        raise FieldValueError(type(config).__name__, "kind", f"must be {kind!r}, got "
                              f"{config.kind!r}")


@dataclass
class LoRAConfig:
    """LoRA (Hu et al., 2021): ``W x + (alpha / rank) * B A x`` with A (r, in), B (out, r).

    B starts at zero, so the fine-tuned model starts as the base model.
    """

    kind: str = "lora"
    rank: int = 8  # r; the paper's GPT-3 runs use 1-8 on the attention projections
    alpha: float = 16.0  # scaling alpha / r: changing r keeps the update's size (alpha = 2r)
    dropout: float = 0.0  # on LoRA's input only; the frozen path is untouched
    # which Linears of every block get a LoRA pair: names of LORA_TARGETS (None = the
    # attention projections, as in the paper)
    targets: list[str] | None = field(default_factory=lambda: ["qkv", "proj"])

    def __post_init__(self) -> None:
        targets = ["qkv", "proj"] if self.targets is None else self.targets
        view = copy.copy(self)  # check_types knows scalars only; the list is checked below
        view.targets = None
        check_types(view)
        _check_kind(self, "lora")
        positive_ints(self, ("rank",))
        check_number(self, "alpha", low_open=True)
        check_number(self, "dropout", high=1.0)
        if not isinstance(targets, list | tuple) or not targets:
            raise FieldTypeError("LoRAConfig", "targets", f"must be a non-empty list of names "
                                 f"among {list(LORA_TARGETS)}, got {targets!r}")
        for name in targets:
            if name not in LORA_TARGETS:
                raise FieldValueError("LoRAConfig", "targets", f"unknown target {name!r}; "
                                      f"expected names among {list(LORA_TARGETS)}")
        if len(set(targets)) != len(targets):
            raise FieldValueError("LoRAConfig", "targets", f"names a target twice: {targets}")
        self.targets = list(targets)


@dataclass
class AdapterConfig:
    """Houlsby adapters (2019): ``h + up(gelu(down(h)))`` on the attention's and the MLP's
    output, inside the residual branch. ``up`` starts at zero: the start is the base model."""

    kind: str = "adapter"
    bottleneck: int = 64  # m; Houlsby et al. find 8-256 enough (2 * m * C params per adapter)

    def __post_init__(self) -> None:
        check_types(self)
        _check_kind(self, "adapter")
        positive_ints(self, ("bottleneck",))


@dataclass
class PrefixConfig:
    """Prefix-tuning (Li & Liang, 2021): P learned key/value positions in front of every
    attention layer, produced during training by an MLP over P learned vectors (the
    reparameterisation steadies training); afterwards only the prefixes are needed."""

    kind: str = "prefix"
    length: int = 16  # P virtual positions per layer (the paper: 10 for table-to-text, 200 more)
    reparam_hidden: int = 512  # the MLP's hidden width (the paper: 512 or 800)

    def __post_init__(self) -> None:
        check_types(self)
        _check_kind(self, "prefix")
        positive_ints(self, ("length", "reparam_hidden"))


PeftConfig = LoRAConfig | AdapterConfig | PrefixConfig
PEFT_KINDS: dict[str, type] = {"lora": LoRAConfig, "adapter": AdapterConfig,
                               "prefix": PrefixConfig}


def peft_config(value: Any) -> PeftConfig:
    """The typed PEFT config of ``value``: a mapping with ``kind`` (or a config already).

    Raises:
        FieldTypeError, FieldValueError: owner ``TrainConfig``, field ``peft`` or
            ``peft.<field>``: not a mapping, an unknown kind, a field of another kind
            (with a did-you-mean hint) or a bad value.
    """
    if isinstance(value, tuple(PEFT_KINDS.values())):
        return value
    if not isinstance(value, Mapping):
        raise FieldTypeError("TrainConfig", "peft", f"must be a mapping with a kind among "
                             f"{list(PEFT_KINDS)}, got {value!r}")
    kind = value.get("kind")
    if kind not in PEFT_KINDS:
        raise FieldValueError("TrainConfig", "peft.kind", f"must be one of "
                              f"{tuple(PEFT_KINDS)}, got {kind!r}")
    cls = PEFT_KINDS[kind]
    names = [f.name for f in dataclasses.fields(cls)]
    for key in value:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FieldValueError("TrainConfig", f"peft.{key}", f"not a field of the {kind} "
                                  f"PEFT config (fields: {', '.join(names[1:])}){hint}")
    try:
        return cls(**value)
    except FieldError as exc:
        raise type(exc)("TrainConfig", f"peft.{exc.field}", exc.message) from None
