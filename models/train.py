"""Train a :class:`~models.lm.DecoderLM` from TFRecord shards written by ``records/``.

One function, no trainer class hierarchy::

    RecordDataset (records.reader) -> loop_epochs -> pack_documents -> DecoderLM
    AdamW + warmup/cosine LR, fp16 (GradScaler) / bf16 / fp32, grad clipping,
    SDPA through models.attention, metrics.jsonl, ckpt.pt with the manifest's sha256.

Example::

    result = train_lm(
        dataset_uri="file:///lake/records/posts/v=1",
        out_uri="file:///lake/models/lm/run-1",
        model_config=LMConfig.preset("tiny", vocab_size=8192),
        train_config=TrainConfig(steps=40, batch_size=8, lr=3e-3),
    )
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import posixpath
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.attention import sdpa_backend
from models.checkpoint import save_checkpoint
from models.data import TokenBatchSource, loop_epochs, pack_documents
from models.lm import DecoderLM, LMConfig
from records.uri import open_uri, resolve

__all__ = ["TrainConfig", "TrainResult", "cosine_lr", "train_lm", "train_lm_on_source"]

log = logging.getLogger(__name__)

_DEVICES = ("auto", "cpu", "cuda")
_PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
    log_every: int = 10  # write a metrics.jsonl line every this many steps (and the last)

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "grad_accum", "log_every")
        for name in (*positive, "warmup_steps", "seed", "eos_id"):
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


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_lm` did."""

    first_loss: float  # training loss of the first optimizer step
    final_loss: float  # training loss of the last optimizer step
    steps: int
    tokens: int  # tokens consumed: steps * grad_accum * batch_size * block_size
    checkpoint_uri: str
    metrics_uri: str
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "fp16" or "bf16"
    attention_backend: str  # what models.attention reported, e.g. "flash" or "math"
    skipped_steps: int  # fp16 steps the GradScaler skipped for inf/nan gradients


def cosine_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at 0-based ``step``: linear warmup to ``lr``, cosine decay to ``min_lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # in [0, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TrainConfig.device='cuda' but torch.cuda.is_available() is False")
    return torch.device(name)


def _resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"bf16 is not supported on {torch.cuda.get_device_name(device)}")
    return name


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _make_optimizer(model: DecoderLM, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # matmul weights and the (tied) embedding
    no_decay = [p for p in params if p.dim() < 2]  # norm gains and biases
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"  # one kernel for all parameters
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def train_lm(
    *,
    dataset_uri: str,
    out_uri: str,
    model_config: LMConfig,
    train_config: TrainConfig,
    split: str = "train",
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Trains a DecoderLM on the ``input_ids`` of a records/ dataset.

    Args:
        dataset_uri: a dataset version folder holding ``manifest.json`` and ``split=*/``.
        out_uri: run folder; receives ``metrics.jsonl``, ``config.json`` and ``ckpt.pt``.
        model_config: the architecture.
        train_config: the optimisation.
        split: which split to read.
        on_step: called after every optimizer step with the step's metrics dict.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: bad configs, token ids outside the vocabulary, an empty split.
        RuntimeError: a device, precision or attention kernel that cannot run.
    """
    from records.manifest import manifest_sha256
    from records.reader import RecordDataset  # imported late: records/ pulls in its codecs

    source = RecordDataset(
        dataset_uri,
        split,
        batch_size=train_config.batch_size,
        shuffle=train_config.shuffle,
        seed=train_config.seed,
    )
    return train_lm_on_source(
        source,
        out_uri=out_uri,
        model_config=model_config,
        train_config=train_config,
        dataset_manifest_sha256=manifest_sha256(dataset_uri),
        on_step=on_step,
        run_info={"dataset_uri": dataset_uri, "split": split},
    )


def train_lm_on_source(
    source: TokenBatchSource,
    *,
    out_uri: str,
    model_config: LMConfig,
    train_config: TrainConfig,
    dataset_manifest_sha256: str,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    run_info: dict[str, Any] | None = None,
) -> TrainResult:
    """:func:`train_lm` over any :class:`~models.data.TokenBatchSource` (tests, other readers).

    ``run_info`` is added to ``config.json``. Other arguments as in :func:`train_lm`.
    """
    if not isinstance(source, TokenBatchSource):
        raise TypeError(f"source must be a TokenBatchSource, got {type(source).__name__}")
    if not isinstance(model_config, LMConfig):
        raise TypeError(f"model_config must be an LMConfig, got {type(model_config).__name__}")
    if not isinstance(train_config, TrainConfig):
        raise TypeError(f"train_config must be a TrainConfig, got {type(train_config).__name__}")
    cfg = train_config
    block_size = cfg.block_size or model_config.block_size
    if block_size > model_config.block_size:
        raise ValueError(
            f"TrainConfig.block_size {block_size} > model block_size {model_config.block_size}"
        )
    if cfg.eos_id >= model_config.vocab_size:
        raise ValueError(
            f"eos_id {cfg.eos_id} is outside the vocabulary [0, {model_config.vocab_size})"
        )

    device = _resolve_device(cfg.device)
    precision = _resolve_precision(cfg.precision, device)
    dtype = _DTYPES[precision]
    use_compile = device.type == "cuda" if cfg.compile is None else cfg.compile
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (norms, loss) on tensor cores
        torch.backends.cudnn.allow_tf32 = True

    _seed_everything(cfg.seed)
    raw_model = DecoderLM(model_config).to(device)
    model = torch.compile(raw_model) if use_compile else raw_model
    optimizer = _make_optimizer(raw_model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    use_amp = precision != "fp32"
    autocast = torch.autocast(device.type, dtype=dtype) if use_amp else nullcontext()
    batches = pack_documents(
        loop_epochs(source),
        block_size=block_size,
        batch_size=cfg.batch_size,
        eos_id=cfg.eos_id,
        vocab_size=model_config.vocab_size,
    )

    fs, out_path = resolve(out_uri)
    fs.makedirs(out_path, exist_ok=True)
    metrics_uri = posixpath.join(out_uri, "metrics.jsonl")
    ckpt_uri = posixpath.join(out_uri, "ckpt.pt")
    with open_uri(posixpath.join(out_uri, "config.json"), "w") as f:
        json.dump(
            {
                "model_config": dataclasses.asdict(model_config),
                "train_config": dataclasses.asdict(cfg),
                "dataset_manifest_sha256": dataset_manifest_sha256,
                **(run_info or {}),
            },
            f,
            indent=2,
        )

    tokens_per_step = cfg.grad_accum * cfg.batch_size * block_size
    first_loss = final_loss = float("nan")
    skipped = 0
    model.train()
    with (
        sdpa_backend(
            device,
            dtype=dtype,
            n_head=model_config.n_head,
            head_size=model_config.head_size,
            dropout_p=model_config.dropout,
        ) as backend,
        open_uri(metrics_uri, "w") as metrics_file,
    ):
        n_params = raw_model.num_params() / 1e6
        log.info("%.2fM params on %s, %s, attention %s", n_params, device, precision, backend)
        for step in range(cfg.steps):
            t0 = time.perf_counter()
            lr = cosine_lr(
                step,
                lr=cfg.lr,
                min_lr=cfg.min_lr,
                warmup_steps=cfg.warmup_steps,
                total_steps=cfg.steps,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for _ in range(cfg.grad_accum):
                x, y = next(batches)  # (B, T) each
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast:
                    _, loss = model(x, y)
                loss = loss / cfg.grad_accum
                scaler.scale(loss).backward()
                loss_sum += loss.detach()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
            scale_before = scaler.get_scale()
            scaler.step(optimizer)  # skipped when fp16 gradients hold inf/nan
            scaler.update()
            if scaler.is_enabled() and scaler.get_scale() < scale_before:
                skipped += 1
            optimizer.zero_grad(set_to_none=True)

            loss_value = loss_sum.item()  # syncs the device, so the timing below is honest
            dt = time.perf_counter() - t0
            if step == 0:
                first_loss = loss_value
            final_loss = loss_value
            record = {
                "step": step + 1,
                "loss": loss_value,
                "lr": lr,
                "tokens_per_s": tokens_per_step / dt if dt > 0 else float("inf"),
                "loss_scale": scaler.get_scale() if scaler.is_enabled() else None,
                "skipped_steps": skipped,
            }
            if (step + 1) % cfg.log_every == 0 or step == 0 or step + 1 == cfg.steps:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
            if on_step is not None:
                on_step({**record, "steps": cfg.steps})

    save_checkpoint(
        ckpt_uri,
        model=raw_model,
        optimizer=optimizer,
        step=cfg.steps,
        model_config=model_config,
        train_config=cfg,
        dataset_manifest_sha256=dataset_manifest_sha256,
        reader_state=source.state_dict(),
        scaler=scaler,
        extra={"final_loss": final_loss, "skipped_steps": skipped},
    )
    return TrainResult(
        first_loss=first_loss,
        final_loss=final_loss,
        steps=cfg.steps,
        tokens=cfg.steps * tokens_per_step,
        checkpoint_uri=ckpt_uri,
        metrics_uri=metrics_uri,
        device=device.type,
        precision=precision,
        attention_backend=backend,
        skipped_steps=skipped,
    )
