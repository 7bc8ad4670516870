"""Typed configuration and result of :func:`models.train.train_lm`, and its LR schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.attention import BACKENDS

__all__ = ["DTYPES", "RESUME_FIELDS", "TrainConfig", "TrainResult", "cosine_lr"]

_DEVICES = ("auto", "cpu", "cuda")
_PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TrainConfig:
    """How to train; stored as a plain dict in the checkpoint next to the model config."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 8  # sequences per micro-step (also documents per reader batch)
    block_size: int | None = None  # tokens per sequence; None = the model's block_size
    lr: float = 6e-4  # peak LR: nanoGPT's GPT-2 small value; tiny models take ~3e-3
    min_lr: float = 6e-5  # cosine floor, lr / 10 as in Chinchilla
    warmup_steps: int = 100  # linear warmup: Adam's moment estimates are noisy at first
    weight_decay: float = 0.1  # applied to matrices and embeddings only, not to norms
    beta1: float = 0.9
    beta2: float = 0.95  # lower than Adam's 0.999: steadier for LMs at large batch
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    grad_accum: int = 1  # micro-steps per optimizer step (larger effective batch)
    seed: int = 1337  # seeds init, dropout and the reader's shuffle: CPU runs repeat exactly
    device: str = "auto"  # "auto" = cuda when available, else cpu
    # "auto" = fp16 on CUDA (V100/T4 lack bf16), fp32 on CPU; CUDA refuses fp32 (no flash)
    precision: str = "auto"
    compile: bool | None = None  # torch.compile; None = on for CUDA, off on CPU
    shuffle: bool = True  # reader shuffle, seeded by `seed` and the epoch
    eos_id: int = 0  # end-of-document id placed between packed documents; match the tokenizer
    log_every: int = 10  # metrics.jsonl line (and device sync) every this many steps, and the last
    ckpt_every: int = 0  # also save ckpt.pt every this many steps; 0 = only at the end
    # DataLoader processes decoding records; 0 = in the training process. Changing it
    # changes the batch order, so a resumed run must keep it. 2-4 on GPU hosts.
    num_workers: int = 0
    # packed batches a background thread prepares (and pins on CUDA) ahead of the
    # step, so the step never waits on packing; 0 = pack inline in the training loop
    prefetch: int = 2
    # "auto" = flash pinned on CUDA (raises if it cannot run), PyTorch's pick on CPU;
    # "math" = the reference kernel anywhere (the fp32 baseline in benchmarks/train_lm.py);
    # "cudnn" = cuDNN's fused attention, CUDA only, opt-in (raises if it cannot run)
    attention: str = "auto"
    # peak FLOP/s of ONE device for MFU (H100 SXM bf16 dense: 989e12, or a measured
    # matmul peak); None = MFU is null in metrics.jsonl
    peak_flops: float | None = None
    progress: bool | None = None  # tqdm bar on stderr; None = only when stderr is a TTY
    # Warm start: a checkpoint (ckpt.pt) or run folder whose *model* weights initialise this
    # run (its optimizer, scaler and reader state are not taken: this is a new run). Keys in
    # both must agree in shape; Medusa heads the source lacks keep their fresh init. On
    # resume the run's own ckpt.pt wins. None = random init.
    init_from: str | None = None
    # Medusa-1: train only the Medusa heads (LMConfig.medusa_heads > 0) on a frozen backbone
    # taken from init_from (required: heads on a random frozen backbone learn nothing useful).
    # The logged loss is then the heads' objective, medusa_weight * sum_k decay**k CE_k; the
    # frozen model's next-token loss stays in loss_parts["main"].
    freeze_backbone: bool = False

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "grad_accum", "log_every")
        for name in (*positive, "warmup_steps", "seed", "eos_id", "ckpt_every", "num_workers",
                     "prefetch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"TrainConfig.{name} must be an int, got {value!r}")
            if value < (1 if name in positive else 0):
                raise ValueError(
                    f"TrainConfig.{name} must be >= {int(name in positive)}, got {value}"
                )
        if self.block_size is not None and (
            isinstance(self.block_size, bool)
            or not isinstance(self.block_size, int)
            or self.block_size <= 0
        ):
            raise ValueError(
                f"TrainConfig.block_size must be a positive int or None, got {self.block_size!r}"
            )
        for name in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"TrainConfig.{name} must be a number, got {value!r}")
            if value < 0 or not math.isfinite(value):
                raise ValueError(f"TrainConfig.{name} must be finite and >= 0, got {value}")
        if self.lr <= 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 < min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if self.device not in _DEVICES:
            raise ValueError(f"TrainConfig.device must be one of {_DEVICES}, got {self.device!r}")
        if self.precision not in _PRECISIONS:
            raise ValueError(
                f"TrainConfig.precision must be one of {_PRECISIONS}, got {self.precision!r}"
            )
        if self.compile not in (True, False, None):
            raise TypeError(f"TrainConfig.compile must be a bool or None, got {self.compile!r}")
        if not isinstance(self.shuffle, bool):
            raise TypeError(f"TrainConfig.shuffle must be a bool, got {self.shuffle!r}")
        if self.attention not in BACKENDS:
            raise ValueError(
                f"TrainConfig.attention must be one of {BACKENDS}, got {self.attention!r}"
            )
        if self.peak_flops is not None and (
            isinstance(self.peak_flops, bool)
            or not isinstance(self.peak_flops, int | float)
            or not 0 < self.peak_flops < math.inf
        ):
            raise ValueError(
                f"TrainConfig.peak_flops must be a positive number or None, got {self.peak_flops!r}"
            )
        if self.progress not in (True, False, None):
            raise TypeError(f"TrainConfig.progress must be a bool or None, got {self.progress!r}")
        if self.init_from is not None and not isinstance(self.init_from, str):
            raise TypeError(f"TrainConfig.init_from must be a string or None, got {self.init_from!r}")
        if self.init_from is not None and not self.init_from.strip():
            raise ValueError("TrainConfig.init_from must be a checkpoint URI or run folder, got ''")
        if not isinstance(self.freeze_backbone, bool):
            raise TypeError(
                f"TrainConfig.freeze_backbone must be a bool, got {self.freeze_backbone!r}"
            )
        if self.freeze_backbone and self.init_from is None:
            raise ValueError(
                "TrainConfig.freeze_backbone needs init_from (the trained LM whose weights "
                "stay fixed): heads trained on a random frozen backbone are meaningless"
            )


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_lm` did (on this rank)."""

    first_loss: float  # training loss of the first optimizer step this call ran
    final_loss: float  # training loss of the last optimizer step
    steps: int  # optimizer steps done in total (including those before a resume)
    tokens: int  # tokens consumed on all ranks: steps * world * grad_accum * batch * block
    checkpoint_uri: str
    metrics_uri: str
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "fp16" or "bf16"
    attention_backend: str  # what models.attention reported, e.g. "flash" or "math"
    skipped_steps: int  # fp16 steps the GradScaler skipped for inf/nan gradients
    start_step: int = 0  # step the run resumed from (0 = a fresh run)
    rank: int = 0
    world_size: int = 1


# Fields a resumed run must share with its checkpoint: they decide the data stream.
RESUME_FIELDS = ("batch_size", "block_size", "seed", "shuffle", "eos_id", "grad_accum",
                  "num_workers")


def cosine_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at 0-based ``step``: linear warmup to ``lr``, cosine decay to ``min_lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # in [0, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
