"""A PEFT run's weights: where they start, what its checkpoint keeps, how to load it back.

:class:`~models.task_lm.LMTask` calls these when ``TrainConfig.peft`` is set:

- :func:`check_resume`: a resumed run keeps the checkpoint's PEFT setting;
- :func:`peft_start_weights`: the base weights (``init_from``, or on resume the base the
  checkpoint refers to, its sha256 checked), then :func:`~models.peft.apply.apply_peft`,
  then on resume the checkpoint's trained tensors;
- the checkpoint keeps only :func:`~models.peft.apply.trainable_state_dict` plus the
  reference that :func:`peft_start_weights` returns (``ckpt["peft"]``).

:func:`load_peft_checkpoint` rebuilds the trained model for inference from such a file.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from models.checkpoint import checkpoint_file, checkpoint_sha256, load_checkpoint
from models.lm import DecoderLM, LMConfig
from models.peft.apply import apply_peft, load_peft, merge_peft
from models.peft_config import PeftConfig
from models.train_config import TrainConfig
from models.warm_start import init_from_checkpoint
from records.uri import resolve, to_uri

__all__ = ["check_resume", "load_base", "load_peft_checkpoint", "peft_start_weights"]

log = logging.getLogger(__name__)

# LMConfig fields a PEFT run may set apart from its base model: they change no weight.
_FREE_FIELDS = ("dropout", "block_size")


def _plain(cfg: PeftConfig | None) -> dict[str, Any] | None:
    return dataclasses.asdict(cfg) if cfg is not None else None


def check_resume(cfg: TrainConfig, ckpt: dict[str, Any]) -> None:
    """Raises ValueError when ``ckpt`` was trained with another ``peft`` than ``cfg``'s.

    The optimizer state and the checkpoint's tensors belong to that setting (and a PEFT
    checkpoint holds no base weights for a full run to continue from).
    """
    saved = ckpt["train_config"].get("peft")
    if saved != _plain(cfg.peft):
        raise ValueError(f"cannot resume: the checkpoint was trained with peft={saved}, "
                         f"this run has peft={_plain(cfg.peft)}")


def load_base(model: DecoderLM, uri: str, sha256: str | None = None) -> dict[str, Any]:
    """Loads base checkpoint ``uri`` into ``model`` (no PEFT modules yet); returns the
    reference a PEFT checkpoint keeps: ``{"base_uri", "base_sha256"}``.

    Args:
        model: a freshly built model of the base's architecture.
        uri: the base checkpoint file or run folder.
        sha256: the sha256 the file must have (a resume checks the base did not change).

    Raises:
        FileNotFoundError: no checkpoint at ``uri``.
        ValueError: another sha256 than ``sha256``, a model config that differs from the
            base's in a field other than dropout or block_size (named), or what
            :func:`~models.warm_start.init_from_checkpoint` raises.
    """
    uri = to_uri(*resolve(checkpoint_file(uri)))  # absolute: the run may move elsewhere
    digest = checkpoint_sha256(uri)
    if sha256 is not None and digest != sha256:
        raise ValueError(f"base checkpoint {uri} changed since the PEFT run started (sha256 "
                         f"{digest[:12]}.., the run's checkpoint refers to {sha256[:12]}..)")
    report = init_from_checkpoint(model, uri)
    saved, here = report["model_config"], dataclasses.asdict(model.config)
    for name, value in here.items():
        if name not in _FREE_FIELDS and name in saved and saved[name] != value:
            raise ValueError(f"peft: the model must be the base model's; LMConfig.{name} is "
                             f"{saved[name]!r} in {uri} but {value!r} here")
    return {"base_uri": uri, "base_sha256": digest}


def peft_start_weights(model: DecoderLM, cfg: TrainConfig,
                       ckpt: dict[str, Any] | None) -> dict[str, Any]:
    """Base weights, PEFT modules, and on resume the trained tensors; returns the run's
    ``peft`` record (kept in its checkpoint under ``"peft"``).

    Call it before the optimizer is built: only the PEFT parameters require grad.

    Returns:
        ``{"kind", "base_uri", "base_sha256", "trainable_params", "total_params"}``.

    Raises:
        ValueError: a resume from a checkpoint without a base reference, a changed base,
            or a model that does not fit the base (see :func:`load_base`).
    """
    if ckpt is not None:
        ref = ckpt.get("peft")
        if not ref:
            raise ValueError("cannot resume a PEFT run from a checkpoint without a base "
                             "reference (ckpt['peft'])")
        base = load_base(model, ref["base_uri"], ref["base_sha256"])
    else:
        base = load_base(model, cfg.init_from)
    apply_peft(model, cfg.peft)
    if ckpt is not None:
        load_peft(model, ckpt["model"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("peft %s over %s: %d of %d parameters train (%.3f%%)", cfg.peft.kind,
             base["base_uri"], trainable, total, 100.0 * trainable / total)
    return {"kind": cfg.peft.kind, **base, "trainable_params": trainable, "total_params": total}


def load_peft_checkpoint(uri: str, *, merge: bool = False, verify: bool = True) -> DecoderLM:
    """The model a PEFT run trained: its base (from the reference) plus its PEFT tensors.

    Args:
        uri: the PEFT run's checkpoint file or run folder.
        merge: fold LoRA into the weights and evaluate the prefix MLP once
            (:func:`~models.peft.apply.merge_peft`); the logits stay the same.
        verify: check the base checkpoint's sha256 against the reference.

    Returns:
        A :class:`DecoderLM` on the CPU in eval mode.

    Raises:
        FileNotFoundError: no checkpoint at ``uri`` or at its base's URI.
        ValueError: not a PEFT checkpoint, a changed base, or tensors that do not fit.
    """
    uri = checkpoint_file(uri)
    ckpt = load_checkpoint(uri)
    ref = ckpt.get("peft")
    if not ref:
        raise ValueError(f"{uri} is not a PEFT checkpoint (no base reference)")
    model = DecoderLM(LMConfig(**ckpt["model_config"]))
    load_base(model, ref["base_uri"], ref["base_sha256"] if verify else None)
    load_peft(model, ckpt["model"], ckpt["train_config"]["peft"])
    if merge:
        merge_peft(model)
    return model.eval()
