"""The vision models' task for :mod:`models.trainer`: image records, VQ-VAE, the classifiers
(EfficientNet, MobileNetV2) and the segmenter.

    RecordDataset(bytes_as="uint8") -> decode_images (uint8 NHWC, host)
      -> [Prefetcher thread: pin] -> to device -> float NCHW, resize, normalize (device)
      -> the model's train step under autocast; channels-last memory on CUDA

What differs between the vision kinds is a :class:`VisionModel` of plain functions (build,
normalization, train step, eval sums); :class:`VisionTask` binds one to a run's configs
and is what the loop calls. Evaluation: reconstruction MSE, PSNR, codebook perplexity
and usage (VQ-VAE); top-1 accuracy and loss (classifiers); pixel accuracy, mean pixel
accuracy and mean IoU from a summed confusion matrix, and the effective receptive field
(segmenter).

Dense kinds (``targets="dense"``) read the mask and boxes too (:func:`decode_dense`) and get
a :class:`~models.vision_model.DenseTargets` at the model input's size. Every image of their
dataset must have a mask: a batch with a maskless image raises, naming it. A kind defined
elsewhere binds the same task to its own :class:`VisionModel`: ``VisionTask(MY_MODEL,
model_config, train_config)`` from its ``models.kinds`` factory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.efficientnet import EfficientNet, EfficientNetConfig
from models.mobilenet import MobileNetV2, MobileNetV2Config
from models.receptive_field import (
    effective_receptive_field,
    erf_radius,
    theoretical_receptive_field,
)
from models.seg_metrics import confusion_matrix, segmentation_metrics
from models.segmenter import Segmenter, SegmenterConfig
from models.train_common import StepOutput
from models.train_config import TrainConfig
from models.vision_data import (
    DenseBatch,
    ImageBatch,
    dense_batches,
    image_batches,
    image_spec,
    to_dense_targets,
    to_model_input,
)
from models.vision_detect import THUNDERNET_MODEL
from models.vision_generative import GENERATIVE_MODELS
from models.vision_model import DenseTargets, Metrics, VisionModel
from models.vision_sam import SAM_MODEL
from models.vqvae import VQVAE, VQVAEConfig, perplexity, psnr

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VISION_MODELS", "VisionModel", "VisionTask",
           "make_task"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# VQ-VAE: images in [-1, 1], no labels; PSNR and codebook usage.

def _vq_train_step(model: nn.Module, x: torch.Tensor, _: torch.Tensor | None
                   ) -> tuple[torch.Tensor, Metrics]:
    _, loss, stats = model(x)
    return loss, stats


def _vq_eval_sums(model: nn.Module, x: torch.Tensor, _: torch.Tensor | None) -> Metrics:
    model = getattr(model, "_orig_mod", model)  # encode/decode are methods of the raw module
    indices = model.encode(x)  # (B, h, w)
    x_hat = model.decode_indices(indices)  # (B, C, H, W)
    K = model.config.codebook_size
    return {
        "squared_error": F.mse_loss(x_hat.float(), x.float(), reduction="sum"),
        "values": torch.tensor(float(x.numel()), device=x.device),
        "codes": torch.bincount(indices.flatten(), minlength=K).float(),  # (K,)
    }


def _vq_eval_finish(sums: Metrics) -> dict[str, float]:
    mse = sums["squared_error"] / sums["values"].clamp_min(1)
    return {
        "mse": float(mse),
        "psnr": float(psnr(mse)),  # of the mean squared error over the split
        "perplexity": float(perplexity(sums["codes"])),
        "usage": float((sums["codes"] > 0).float().mean()),
    }


# Classifiers (EfficientNet, MobileNetV2): ImageNet normalization for RGB, labels; top-1.

def _rgb_normalization(cfg: EfficientNetConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if cfg.in_channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5,) * cfg.in_channels, (0.5,) * cfg.in_channels


def _classifier_train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None
                       ) -> tuple[torch.Tensor, Metrics]:
    logits, loss = model(x, y)
    return loss, {"accuracy": (logits.argmax(1) == y).float().mean()}


def _classifier_eval_sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> Metrics:
    logits, _ = model(x)
    return {
        "images": torch.tensor(float(x.shape[0]), device=x.device),
        "correct": (logits.argmax(1) == y).float().sum(),
        "loss": F.cross_entropy(logits.float(), y, reduction="sum"),  # without label smoothing
    }


def _classifier_eval_finish(sums: Metrics) -> dict[str, float]:
    n = sums["images"].clamp_min(1)
    return {"accuracy": float(sums["correct"] / n), "loss": float(sums["loss"] / n),
            "images": int(sums["images"])}


# Segmenter: masks as targets; PA/MPA/MIoU from the summed confusion matrix, and the ERF.

ERF_SIDE = 64  # the logged ERF map is average-pooled to at most this many pixels a side


def _seg_train_step(model: nn.Module, x: torch.Tensor, y: DenseTargets
                    ) -> tuple[torch.Tensor, Metrics]:
    logits, loss = model(x, y.masks)
    return loss, {"pixel_accuracy": (logits.argmax(1) == y.masks).float().mean()}


def _seg_eval_sums(model: nn.Module, x: torch.Tensor, y: DenseTargets) -> Metrics:
    # one forward with input gradients: the logits (B, K, H, W) and the ERF map (H, W)
    erf, logits = effective_receptive_field(lambda images: model(images)[0], x)
    K = logits.shape[1]
    return {
        "confusion": confusion_matrix(logits.argmax(1), y.masks, K).float(),  # (K, K)
        "loss": F.cross_entropy(logits.float(), y.masks, reduction="sum"),
        "erf": erf,
        "images": torch.tensor(float(x.shape[0]), device=x.device),
    }


def _seg_eval_finish(sums: Metrics) -> dict[str, Any]:
    scores = segmentation_metrics(sums["confusion"])
    erf = sums["erf"].float()
    erf = erf / erf.max().clamp_min(1e-12)  # (H, W) in [0, 1]
    side = (min(ERF_SIDE, erf.shape[0]), min(ERF_SIDE, erf.shape[1]))
    shown = F.adaptive_avg_pool2d(erf[None, None], side)[0, 0]
    return {
        "pixel_accuracy": scores["pixel_accuracy"], "mean_accuracy": scores["mean_accuracy"],
        "mean_iou": scores["mean_iou"], "class_iou": scores["class_iou"],
        "loss": float(sums["loss"]) / max(1, scores["pixels"]),
        "images": int(sums["images"]), "erf_radius": erf_radius(erf),
        "erf": [[round(v, 4) for v in row] for row in shown.tolist()],
        "erf_input": list(erf.shape),  # (H, W) of the model input the map was pooled from
    }


def _seg_state_metrics(model: nn.Module) -> dict[str, float]:
    return {"receptive_field": theoretical_receptive_field(model.receptive_field_layers())}


VISION_MODELS: dict[str, VisionModel] = {
    "vqvae": VisionModel(
        name="vqvae", config_type=VQVAEConfig, build=VQVAE, labels=False,
        num_classes=lambda cfg: None,
        normalization=lambda cfg: ((0.5,) * cfg.in_channels, (0.5,) * cfg.in_channels),
        image_size=lambda cfg: None,
        train_step=_vq_train_step, eval_sums=_vq_eval_sums, eval_finish=_vq_eval_finish,
        state_metrics=lambda model: {"restarts": int(model.quantizer.restarts)},
    ),
    "efficientnet": VisionModel(
        name="efficientnet", config_type=EfficientNetConfig, build=EfficientNet, labels=True,
        num_classes=lambda cfg: cfg.num_classes, normalization=_rgb_normalization,
        image_size=lambda cfg: cfg.resolution,
        train_step=_classifier_train_step, eval_sums=_classifier_eval_sums,
        eval_finish=_classifier_eval_finish,
    ),
    "mobilenet_v2": VisionModel(
        name="mobilenet_v2", config_type=MobileNetV2Config, build=MobileNetV2, labels=True,
        num_classes=lambda cfg: cfg.num_classes, normalization=_rgb_normalization,
        image_size=lambda cfg: cfg.resolution,
        train_step=_classifier_train_step, eval_sums=_classifier_eval_sums,
        eval_finish=_classifier_eval_finish,
    ),
    "segmenter": VisionModel(
        name="segmenter", config_type=SegmenterConfig, build=Segmenter, labels=True,
        num_classes=lambda cfg: cfg.num_classes, normalization=_rgb_normalization,
        image_size=lambda cfg: cfg.resolution,
        train_step=_seg_train_step, eval_sums=_seg_eval_sums, eval_finish=_seg_eval_finish,
        state_metrics=_seg_state_metrics, targets="dense",
    ),
    **GENERATIVE_MODELS,  # vqgan, vae, flow, rectified_flow
    "sam": SAM_MODEL,  # models.vision_sam
    "thundernet": THUNDERNET_MODEL,  # models.vision_detect
}


class VisionTask:
    """A :class:`~models.train_common.Task` for one :class:`VisionModel` on an image dataset.

    Raises:
        TypeError: a model config of another kind.
    """

    unit = "images"
    drop_last = True  # every step sees a full batch (BatchNorm, compile); ranks stay in step

    def __init__(self, spec: VisionModel, model_config: Any, train_config: TrainConfig) -> None:
        if not isinstance(model_config, spec.config_type):
            raise TypeError(f"{spec.name} needs a {spec.config_type.__name__}, "
                            f"got {type(model_config).__name__}")
        if not isinstance(train_config, TrainConfig) or train_config.kind != spec.name:
            raise TypeError(f"train_config must be a {spec.name} TrainConfig, got {train_config!r}")
        self.spec, self.name = spec, spec.name
        self.model_config, self.train_config = model_config, train_config
        self.dense = spec.targets == "dense"
        self.reader_options = {"feature_spec": image_spec(labels=spec.labels, dense=self.dense),
                               "bytes_as": "uint8"}
        self.items_per_batch = train_config.batch_size  # images
        self.num_classes = spec.num_classes(model_config)
        self.mean, self.std = spec.normalization(model_config)
        self.image_size = train_config.image_size or spec.image_size(model_config)

    def resume(self, ckpt: dict[str, Any]) -> TrainConfig:
        return self.train_config

    def build(self) -> nn.Module:
        return self.spec.build(self.model_config)

    def start_weights(self, model: nn.Module, ckpt: dict[str, Any] | None) -> int:
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def channels_last(self, device: torch.device) -> bool:
        cl = self.train_config.channels_last
        return device.type == "cuda" if cl is None else cl

    def memory_format(self, device: torch.device) -> torch.memory_format:
        return torch.channels_last if self.channels_last(device) else torch.contiguous_format

    def stream(self, batches: Iterator[dict]) -> Iterator[ImageBatch | DenseBatch]:
        if self.dense:
            return dense_batches(batches, num_classes=self.num_classes)
        return image_batches(batches, labels=self.spec.labels, num_classes=self.num_classes)

    def eval_batches(self, reader: Iterable[dict]) -> Iterator[ImageBatch | DenseBatch]:
        it = iter(reader)
        try:
            yield from self.stream(it)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # stops the reader's decode threads

    def prepare(self, batch: ImageBatch | DenseBatch, device: torch.device
                ) -> tuple[torch.Tensor, Any]:
        x, y, *dense = batch  # uint8 (B, H, W, C), int64 (B,) or None[, masks, boxes, ...]
        x = to_model_input(x.to(device, non_blocking=True), mean=self.mean, std=self.std,
                           size=self.image_size, channels_last=self.channels_last(device))
        if self.dense:  # masks and boxes at the input's size (B, C, H', W')
            return x, to_dense_targets(y, *dense, size=tuple(x.shape[2:]), device=device)
        return x, (y.to(device, non_blocking=True) if y is not None else None)  # (B, C, H', W')

    def step(self, model: nn.Module, inputs: ImageBatch) -> StepOutput:
        loss, metrics = self.spec.train_step(model, *inputs)
        return StepOutput(loss, loss.detach(), metrics)

    def eval_sums(self, model: nn.Module, inputs: ImageBatch) -> Metrics:
        return self.spec.eval_sums(model, *inputs)

    def eval_finish(self, sums: Metrics) -> dict[str, Any]:
        return self.spec.eval_finish(sums)

    def train_mode(self, model: nn.Module) -> None:
        pass  # the whole model trains

    def running(self, device: torch.device, dtype: torch.dtype
                ) -> AbstractContextManager[dict[str, Any]]:
        return nullcontext({})

    def rate_fields(self, per_rank_rate: float) -> dict[str, Any]:
        return {}

    def log_metrics(self, model: nn.Module) -> dict[str, Any]:
        return self.spec.state_metrics(model)


def make_task(model_config: Any, train_config: TrainConfig) -> VisionTask:
    """The task of ``train_config.kind`` (``models.kinds.KINDS[kind].task``)."""
    return VisionTask(VISION_MODELS[train_config.kind], model_config, train_config)
