"""What a vision model kind brings to the shared image task: plain functions and its targets.

A :class:`VisionModel` is registered in :data:`models.task_vision.VISION_MODELS`; the task
(:class:`models.task_vision.VisionTask`) reads the image records, moves a batch to the
device and calls the kind's functions with ``(model, x, y)`` where ``y`` depends on
``VisionModel.targets``:

    "none"    y is None                                     (VQ-VAE, VAE, flows, VQGAN)
    "labels"  y is int64 (B,) class ids                     (EfficientNet, MobileNetV2, ...)
    "dense"   y is a :class:`DenseTargets` on the device    (segmenter, SAM-style, detector)

Dense targets come from the image dataset's ``mask`` feature (raw uint8 H*W class ids,
0 = background, class c = label id c - 1) and its ``boxes`` / ``box_labels`` features
(boxes of the mask's connected components, written by the Beam image pipeline).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["TARGETS", "DenseTargets", "Metrics", "VisionModel"]

Metrics = dict[str, torch.Tensor]
TARGETS = ("none", "labels", "dense")


@dataclass
class DenseTargets:
    """Per-pixel and per-object targets of one batch, at the model input's resolution.

    Attributes:
        labels: int64 (B,) image class ids (label id, i.e. mask class - 1).
        masks: int64 (B, H, W) mask class ids: 0 = background, c >= 1 = label id c - 1;
            resized (nearest) to the input's H x W.
        boxes: per image a float32 (N_i, 4) tensor of ``x0, y0, x1, y1`` in input pixels
            (x1, y1 exclusive), one row per connected component of a non-background class;
            N_i may be 0.
        box_labels: per image an int64 (N_i,) tensor of the boxes' mask class ids (>= 1).
    """

    labels: torch.Tensor
    masks: torch.Tensor
    boxes: list[torch.Tensor]
    box_labels: list[torch.Tensor]

    def to(self, device: torch.device, non_blocking: bool = False) -> DenseTargets:
        """The same targets on ``device``."""
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return DenseTargets(move(self.labels), move(self.masks),
                            [move(b) for b in self.boxes], [move(b) for b in self.box_labels])


@dataclass(frozen=True)
class VisionModel:
    """What is particular to one vision model kind, as plain functions.

    Attributes:
        name: the ``kind`` it is registered under.
        config_type: the model config dataclass.
        build: config -> model.
        labels: whether it reads the ``label`` feature (True for ``targets`` "labels"
            and "dense").
        num_classes: config -> classes (labels are checked against it) or None.
        normalization: config -> per-channel ``(mean, std)`` on the [0, 1] scale.
        image_size: config -> default side the device resizes to (None = as stored).
        train_step: ``(model, x (B, C, H, W), y) -> (loss, metrics)`` with ``y`` as
            ``targets`` says; metrics are detached 0-d tensors, averaged over the step's
            micro-batches.
        eval_sums: ``(model, x, y) -> sums``: additive tensors of one eval batch
            (summed over batches and ranks).
        eval_finish: sums -> final eval metrics.
        state_metrics: raw model -> metrics read from its state on log steps (counters).
        targets: ``"none"``, ``"labels"`` or ``"dense"`` (see the module docstring).
    """

    name: str
    config_type: type
    build: Callable[[Any], nn.Module]
    labels: bool
    num_classes: Callable[[Any], int | None]
    normalization: Callable[[Any], tuple[tuple[float, ...], tuple[float, ...]]]
    image_size: Callable[[Any], int | None]
    train_step: Callable[[nn.Module, torch.Tensor, Any], tuple[torch.Tensor, Metrics]]
    eval_sums: Callable[[nn.Module, torch.Tensor, Any], Metrics]
    eval_finish: Callable[[Metrics], dict[str, float]]
    state_metrics: Callable[[nn.Module], dict[str, float]] = lambda model: {}
    targets: str = ""

    def __post_init__(self) -> None:
        if not self.targets:  # the default follows ``labels``
            object.__setattr__(self, "targets", "labels" if self.labels else "none")
        if self.targets not in TARGETS:
            raise ValueError(f"{self.name}: targets must be one of {TARGETS}, got "
                             f"{self.targets!r}")
