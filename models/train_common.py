"""What the training loop is made of besides the loop: the task contract and shared policies.

:class:`Task` is what a model kind brings to :mod:`models.trainer` (the LM's is in
:mod:`models.task_lm`, the vision models' in :mod:`models.task_vision`); the rest is
policy the loop applies to every kind, so a flag means the same thing for all of them:
``device: auto``, ``precision: auto``, seeding, AdamW's parameter groups, the float32
matmul and cuDNN precision, the GradScaler's skipped-step count, DataLoader workers,
pinning and evaluation.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import nn

from models.distributed import DistInfo, gather_objects
from models.fp8 import check_fp8_device

__all__ = ["DTYPES", "GATHER", "StepOutput", "Task", "cudnn_tf32", "evaluate", "make_loader",
           "make_optimizer", "matmul_precision", "pin_batch", "resolve_device",
           "resolve_precision", "scaler_step", "seed_everything"]

# the autocast dtype of each precision; fp8 is bf16 autocast around FP8 Linear layers
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "fp8": torch.bfloat16}
# Eval "sums" whose key starts with this are concatenated along dim 0 (over batches, then
# ranks, in order) instead of summed: statistics that do not add up, e.g. COCO mAP's
# detections (models.detection_eval).
GATHER = "gather/"

Batch = tuple[Any, ...]  # host tensors (or None) of one micro-batch, as a task streams them


class StepOutput(NamedTuple):
    """One micro-batch's forward: what to backpropagate and what to log."""

    loss: torch.Tensor  # the objective (0-d, attached to the graph)
    logged: torch.Tensor  # the training loss to log (0-d, detached); usually loss.detach()
    metrics: dict[str, torch.Tensor]  # detached 0-d tensors, averaged over micro-batches and ranks


class Task(Protocol):
    """What a model kind brings to the training loop: composition, not a trainer subclass.

    Built per run from ``(model_config, train_config)`` by the kind's factory (see
    ``models.kinds.ModelKind.task``). The loop owns everything else.
    """

    name: str  # the kind
    unit: str  # what one example is: "tokens" or "images"
    model_config: Any
    train_config: Any  # a models.train_config.TrainConfig
    reader_options: dict[str, Any]  # RecordDataset keyword arguments (feature_spec, bytes_as)
    drop_last: bool  # the train reader yields whole batches only
    items_per_batch: int  # examples in one micro-batch on one rank

    def resume(self, ckpt: dict[str, Any]) -> Any:
        """Checks ``ckpt`` can continue this run (raises ValueError); returns the train config."""

    def build(self) -> nn.Module:
        """A freshly initialised model (the loop has seeded the RNGs)."""

    def start_weights(self, model: nn.Module, ckpt: dict[str, Any] | None) -> int:
        """Loads the checkpoint (or a warm start), freezes what must not train; returns the
        number of trainable parameters."""

    def memory_format(self, device: torch.device) -> torch.memory_format:
        """The model's memory format on ``device`` (channels-last for convnets on CUDA)."""

    def stream(self, batches: Iterator[dict]) -> Iterator[Batch]:
        """Reader batches (epoch after epoch) -> host micro-batches. May have
        ``state_dict``/``load_state_dict`` (the LM's packer): checkpointed per rank."""

    def eval_batches(self, reader: Iterable[dict]) -> Iterator[Batch]:
        """One pass over the eval reader -> host micro-batches."""

    def prepare(self, batch: Batch, device: torch.device) -> Batch:
        """Host micro-batch -> the model's inputs on ``device`` (outside autocast)."""

    def step(self, model: nn.Module, inputs: Batch) -> StepOutput:
        """The forward of one micro-batch under autocast (``model`` may be compiled/DDP)."""

    def eval_sums(self, model: nn.Module, inputs: Batch) -> dict[str, torch.Tensor]:
        """Additive statistics of one eval micro-batch (summed over batches and ranks);
        those keyed ``GATHER + name`` are concatenated along dim 0 instead."""

    def eval_finish(self, sums: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Summed statistics -> the eval metrics (plain numbers)."""

    def train_mode(self, model: nn.Module) -> None:
        """Puts the raw model in training mode (Medusa-1 keeps its frozen backbone in eval)."""

    def running(self, device: torch.device, dtype: torch.dtype) -> AbstractContextManager[dict]:
        """Entered around the whole loop; yields the run's extras (lm: the attention kernel)."""

    def rate_fields(self, per_rank_rate: float) -> dict[str, Any]:
        """Metrics of the throughput (lm: MFU), for a metrics line."""

    def log_metrics(self, model: nn.Module) -> dict[str, Any]:
        """What the raw model reports on log steps (lm: loss_parts; VQ-VAE: restarts)."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto|cuda|cpu`` as a device; CUDA is this rank's GPU. Raises if CUDA is absent."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TrainConfig.device='cuda' but torch.cuda.is_available() is False")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` = fp16 on CUDA, fp32 elsewhere; raises for bf16 (and fp8, which runs on bf16
    autocast) on a GPU without it, and for fp8 on a GPU without FP8 tensor cores."""
    if name == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if name in ("bf16", "fp8") and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"{name} needs bf16, which {torch.cuda.get_device_name(device)} "
                           f"does not support")
    if name == "fp8":
        check_fp8_device(device)
    return name


def seed_everything(seed: int) -> None:
    """Seeds Python's, numpy's and torch's (CPU and every CUDA device) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def make_optimizer(model: nn.Module, cfg: Any, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters; weight decay on matrices only.

    ``cfg`` is a TrainConfig (lr, betas, weight_decay); fused on CUDA.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # matmul weights, conv kernels, the embedding
    no_decay = [p for p in params if p.dim() < 2]  # norm gains and biases
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"  # one kernel for all parameters
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


@contextmanager
def matmul_precision(device: torch.device, precision: str) -> Iterator[None]:
    """TF32 for the fp32 leftovers of fp16/bf16 runs; true IEEE FP32 for fp32 runs (CUDA)."""
    if device.type != "cuda":
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest" if precision == "fp32" else "high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@contextmanager
def cudnn_tf32(device: torch.device, precision: str) -> Iterator[None]:
    """cuDNN convolutions follow the matmul policy: TF32 in fp16/bf16 runs, IEEE FP32 in fp32."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def scaler_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer
                ) -> torch.Tensor | None:
    """``scaler.step(optimizer)`` and ``scaler.update()``; reports a skipped step.

    Returns:
        None when the scaler is disabled (fp32/bf16); else a 0-d bool tensor on the
        scaler's device, True when the gradients held inf/nan so that the optimizer step
        was skipped (the scale backed off). No host sync: sum it and read it when logging.
    """
    if not scaler.is_enabled():
        scaler.step(optimizer)
        return None
    scale_before = scaler._scale.clone()  # get_scale() would sync; scale() created _scale
    scaler.step(optimizer)
    scaler.update()
    return scaler._scale < scale_before  # a backoff is a skipped step


def pin_batch(batch: Batch, device: torch.device) -> Batch:
    """Pins a host micro-batch's tensors (None stays), so the copies to ``device`` are async."""
    torch.cuda.set_device(device)  # the prefetch thread pins on this rank's GPU
    return tuple(t.pin_memory() if isinstance(t, torch.Tensor) else t for t in batch)


def make_loader(source: Any, *, num_workers: int, seed: int, stream: bool = False
                ) -> torch.utils.data.DataLoader:
    """A DataLoader of ``num_workers`` processes over reader ``source`` (its own batches).

    With ``stream`` it iterates ``records.epoch_stream.EpochStream(source)``: ONE iteration
    covers every epoch, so the workers live across epochs (no restart stall at epoch
    starts); consume it with :func:`models.data.loop_stream`. Without it, each epoch is
    one iteration with fresh workers (:func:`models.data.loop_epochs`), the resume
    contract of ``records.reader``; both give the same batches in the same order.

    Workers come from a forkserver, not fork(): the trainer runs a read-ahead thread and
    often shares its process with other threaded runtimes (a Spark JVM gateway, Airflow),
    and forking a multi-threaded process can deadlock a child on a lock held by a thread
    that does not exist in it. The server preloads torch and the reader: forks stay cheap.
    """
    context = torch.multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "records.reader", "records.epoch_stream"])
    if stream:
        from records.epoch_stream import EpochStream  # late: records/ pulls in its codecs

        source = EpochStream(source)
    return torch.utils.data.DataLoader(
        source, batch_size=None, num_workers=num_workers, prefetch_factor=4,
        multiprocessing_context=context,
        # fresh workers per iter(): per epoch without `stream` (the reader's resume contract
        # needs them), once for the whole run with it
        persistent_workers=False,
        # its own generator: each iter() would otherwise draw worker seeds from the global
        # RNG at epoch starts, shifting dropout masks after a resume
        generator=torch.Generator().manual_seed(seed),
    )


def evaluate(task: Task, model: nn.Module, reader: Iterable[dict], *, device: torch.device,
             autocast: AbstractContextManager | None = None, max_batches: int = 0,
             info: DistInfo | None = None) -> dict[str, Any] | None:
    """The task's eval metrics of ``model`` over one pass of ``reader`` (all ranks together).

    Runs ``model`` (the raw one: eager) in eval mode under ``no_grad``; leaves it in the
    mode it found it in.

    Args:
        reader: this rank's partition of the eval split.
        autocast: entered around the model calls (None = full precision).
        max_batches: stop after this many micro-batches per rank; 0 = all of them.
        info: this rank's place under DDP; the sums are gathered from every rank (and
            summed, or concatenated in rank order for ``GATHER`` keys).

    Returns:
        The metrics, or None when no rank got a whole micro-batch out of the split.
    """
    modes = {m: m.training for m in model.modules()}  # Medusa-1 mixes train and eval
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    gathered: dict[str, list[torch.Tensor]] = {}  # GATHER keys: kept batch by batch
    batches = task.eval_batches(reader)
    try:
        with torch.no_grad():
            for batch in itertools.islice(batches, max_batches or None):
                inputs = task.prepare(batch, device)
                with autocast or nullcontext():
                    for k, v in task.eval_sums(model, inputs).items():
                        if k.startswith(GATHER):
                            gathered.setdefault(k, []).append(v)
                        else:
                            sums[k] = sums[k] + v.double() if k in sums else v.double()
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # stops the reader's decode threads
        for m, mode in modes.items():
            m.training = mode
    mine = {k: v.cpu() for k, v in sums.items()}
    mine.update({k: torch.cat(v).cpu() for k, v in gathered.items()})
    merged: dict[str, torch.Tensor] = {}
    for part in gather_objects(mine, info or DistInfo()):  # in rank order
        for k, v in part.items():  # a rank may have seen no batch
            if k not in merged:
                merged[k] = v
            else:
                merged[k] = torch.cat([merged[k], v]) if k.startswith(GATHER) else merged[k] + v
    return task.eval_finish(merged) if merged else None
