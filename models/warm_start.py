"""Where an LM run's weights start: its checkpoint, another run's weights, and Medusa-1.

:class:`~models.task_lm.LMTask` calls these around building its model (the
configs that cannot work are rejected before, by :func:`models.train_config.check_lm_run`):

- :func:`resumed_config` keeps a resumed run honest about where its weights came from;
- :func:`start_weights` loads the run's own checkpoint (resume), else ``init_from``'s
  model weights, then for Medusa-1 (``freeze_backbone``) freezes all but the heads;
- :func:`medusa1_train_mode` runs the frozen backbone without dropout.

Medusa-1 (Cai et al., 2024): the heads train on top of an LM whose weights stay fixed.
Frozen parameters have ``requires_grad`` False, so autograd builds no graph through the
backbone (its output does not require grad), the optimizer holds only the heads'
parameters, and DDP (``find_unused_parameters=False``) reduces only theirs: every head
gets a gradient on every step as long as ``block_size > medusa_heads``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from models.checkpoint import load_model_weights
from models.lm import DecoderLM
from models.medusa import freeze_backbone
from models.train_config import TrainConfig

__all__ = ["init_from_checkpoint", "medusa1_train_mode", "resumed_config", "start_weights"]

log = logging.getLogger(__name__)

# LMConfig fields that change no tensor shape but what the weights mean: a checkpoint
# trained with other values would load without complaint and compute nonsense.
_SAME_MEANING = ("n_head", "rope_theta", "norm_eps")


def resumed_config(cfg: TrainConfig, ckpt: dict[str, Any]) -> TrainConfig:
    """``cfg`` for a run resuming from ``ckpt``: its ``init_from`` is the checkpoint's.

    The checkpoint's weights win over ``init_from`` on resume, so the run records where
    its weights really came from, not what the new config names.

    Raises:
        ValueError: ``freeze_backbone`` differs from the checkpoint's (its optimizer holds
            the parameters of the other setting).
    """
    saved = ckpt["train_config"]
    if bool(saved.get("freeze_backbone", False)) != cfg.freeze_backbone:
        raise ValueError(
            f"cannot resume: the checkpoint was trained with freeze_backbone="
            f"{bool(saved.get('freeze_backbone', False))}, this run has {cfg.freeze_backbone}"
        )
    init_from = saved.get("init_from")
    if init_from != cfg.init_from:
        log.info("resume: the checkpoint's weights win over init_from %s", cfg.init_from)
    return dataclasses.replace(cfg, init_from=init_from)


def init_from_checkpoint(model: DecoderLM, uri: str) -> dict[str, Any]:
    """Loads the model weights of another run into ``model``: a warm start, not a resume.

    Tensors in both must match in shape; Medusa-head tensors the source lacks keep their
    fresh init (zeroed residual blocks), and heads of their own (``medusa_own_head``)
    start as copies of the *loaded* LM head, as :class:`~models.medusa.MedusaHeads` does
    at construction. Source tensors the model lacks (say, MTP modules) are left out with
    a warning.

    Args:
        model: a freshly built model.
        uri: a checkpoint file or a run folder holding ``ckpt.pt``.

    Returns:
        What :func:`~models.checkpoint.load_model_weights` returned.

    Raises:
        FileNotFoundError: no checkpoint at ``uri``.
        ValueError: a shape mismatch or a missing backbone tensor (named), or an LMConfig
            field in ``_SAME_MEANING`` that differs from the checkpoint's.
    """
    report = load_model_weights(model, uri, may_miss=("medusa.",))
    saved = report["model_config"]
    for name in _SAME_MEANING:
        if name in saved and saved[name] != getattr(model.config, name):
            raise ValueError(
                f"init_from {report['checkpoint']}: LMConfig.{name} is {saved[name]!r} there "
                f"but {getattr(model.config, name)!r} here; its weights would mean something else"
            )
    if model.medusa is not None and model.medusa.heads is not None:
        for k, head in enumerate(model.medusa.heads):
            if f"medusa.heads.{k}.weight" in report["missing"]:
                head.weight.data.copy_(model.lm_head.weight.data)
    if report["unused"]:
        log.warning("init_from %s: %d tensors this model has no place for are left out: %s",
                    report["checkpoint"], len(report["unused"]), ", ".join(report["unused"][:4]))
    log.info("init_from %s: %d tensors loaded, %d fresh (%s)", report["checkpoint"],
             len(report["loaded"]), len(report["missing"]), ", ".join(report["missing"][:4]))
    return report


def start_weights(model: DecoderLM, cfg: TrainConfig, ckpt: dict[str, Any] | None) -> int:
    """Sets ``model``'s starting weights and which of them train; returns how many train.

    The run's own checkpoint (resume) wins; else ``cfg.init_from``'s model weights; else
    the fresh init stays. With ``cfg.freeze_backbone`` only the Medusa heads train.
    Call it before the optimizer is built: that takes only trainable parameters.
    """
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    elif cfg.init_from is not None:
        init_from_checkpoint(model, cfg.init_from)
    if cfg.freeze_backbone:
        freeze_backbone(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tensors = sum(1 for p in model.parameters() if p.requires_grad)
    log.info("%d of %d parameters train (%d tensors)%s", trainable, model.num_params(), tensors,
             ": Medusa-1, backbone frozen" if cfg.freeze_backbone else "")
    return trainable


def medusa1_train_mode(model: DecoderLM) -> None:
    """Training mode for the heads only: the frozen backbone runs as when decoding.

    Dropout in a frozen backbone would only feed the heads hidden states they never see
    at inference; in eval mode the backbone is also deterministic.
    """
    model.eval()
    model.medusa.train()
