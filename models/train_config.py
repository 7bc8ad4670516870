"""How to train any model kind: one typed :class:`TrainConfig`, its result and the LR schedule.

Torch-free, so that a config file can be checked before torch loads.

One config for every kind (:data:`models.kinds.KINDS`). ``kind`` picks a
:class:`TrainProfile`: the defaults of the fields marked "kind's default" (an LM and a
convnet want different batch sizes, learning rates, weight decay and Adam beta2) and
the fields only that kind uses. A field of another kind must stay unset (None)::

    TrainConfig(steps=40, lr=3e-3)                        # an LM: batch 8, beta2 0.95, ...
    TrainConfig(kind="vqvae", steps=40, channels_last=True)   # batch 64, beta2 0.999, ...
    TrainConfig(kind="vqvae", block_size=64)              # FieldValueError: block_size

Bad values raise :class:`~models.config_fields.FieldTypeError` (a TypeError) or
:class:`~models.config_fields.FieldValueError` (a ValueError) naming the field.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.config_fields import (
    FieldValueError,
    check_choice,
    check_number,
    check_types,
    positive_ints,
)
from models.lm_config import ATTENTION_BACKENDS, LMConfig
from models.peft_config import PeftConfig, peft_config

__all__ = ["COMPILE_MODES", "CUDA_GRAPH_MODES", "KIND_FIELDS", "PRECISIONS", "TRAINING",
           "TrainConfig", "TrainProfile", "TrainResult", "check_lm_run", "cosine_lr"]

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "fp8")  # fp8: models/fp8.py
# torch.compile's modes; "reduce-overhead" replays each step's kernels as CUDA graphs
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that capture CUDA graphs


@dataclass(frozen=True)
class TrainProfile:
    """How a family of model kinds trains.

    Attributes:
        defaults: values of the fields left None: the shared fields whose default depends
            on the kind and the profile's own fields.
        own_fields: the kind-specific fields this profile accepts.
        resume_fields: fields a resumed run must share with its checkpoint (they decide
            the data stream).
    """

    defaults: Mapping[str, Any]
    own_fields: tuple[str, ...]
    resume_fields: tuple[str, ...]


LM_TRAINING = TrainProfile(
    defaults=dict(
        batch_size=8,  # sequences per micro-step (also documents per reader batch)
        lr=6e-4,  # nanoGPT's GPT-2 small value; tiny models take ~3e-3
        min_lr=6e-5,  # lr / 10, as in Chinchilla
        weight_decay=0.1,
        beta2=0.95,  # lower than Adam's 0.999: steadier for LMs at large batch
        eos_id=0, attention="auto", freeze_backbone=False,
    ),
    own_fields=("block_size", "eos_id", "attention", "peak_flops", "init_from",
                "freeze_backbone", "peft"),
    resume_fields=("batch_size", "block_size", "seed", "shuffle", "eos_id", "grad_accum"),
)
VISION_TRAINING = TrainProfile(
    defaults=dict(
        batch_size=64,  # images per micro-step and rank (also the reader's batch)
        lr=1e-3,  # convnets of this size take 1e-3 .. 3e-3
        min_lr=1e-4,  # lr / 10
        weight_decay=0.05,
        beta2=0.999,  # Adam's default: convnets do not need the LM's 0.95
    ),
    own_fields=("channels_last", "image_size"),
    resume_fields=("batch_size", "seed", "shuffle", "grad_accum"),
)
# The generative image kinds (vqgan, vae, flow, rectified_flow): the vision fields, with
# no weight decay (it biases likelihoods and GAN generators; DiT trains without it) and
# a lower LR (transformers and flows diverge at the convnets' 1e-3).
GENERATIVE_TRAINING = TrainProfile(
    defaults=dict(batch_size=64, lr=3e-4, min_lr=3e-5, weight_decay=0.0, beta2=0.99),
    own_fields=VISION_TRAINING.own_fields,
    resume_fields=VISION_TRAINING.resume_fields,
)
# kind -> profile; models.kinds.KINDS declares each kind with its profile from here.
TRAINING: dict[str, TrainProfile] = {
    "lm": LM_TRAINING, "vqvae": VISION_TRAINING, "efficientnet": VISION_TRAINING,
    "mobilenet_v2": VISION_TRAINING, "segmenter": VISION_TRAINING,
    "sam": VISION_TRAINING, "thundernet": VISION_TRAINING,
    "vqgan": GENERATIVE_TRAINING, "vae": GENERATIVE_TRAINING, "flow": GENERATIVE_TRAINING,
    "rectified_flow": GENERATIVE_TRAINING,
}
KIND_FIELDS = tuple(dict.fromkeys(f for p in TRAINING.values() for f in p.own_fields))


@dataclass
class TrainConfig:
    """How to train; stored as a plain dict in the checkpoint next to the model config."""

    kind: str = "lm"  # the model kind (models.kinds.KINDS): picks the defaults left None below
    steps: int = 1000  # optimizer steps
    batch_size: int | None = None  # per micro-step and rank; kind's default: lm 8, vision 64
    lr: float | None = None  # peak AdamW LR; kind's default: lm 6e-4, vision 1e-3
    min_lr: float | None = None  # cosine floor; kind's default: lr / 10 of the default lr
    warmup_steps: int = 100  # linear warmup: Adam's moments (and BatchNorm) settle first
    # kind's default: lm 0.1, vision 0.05; matrices and conv kernels only, never norms,
    # biases or codebooks
    weight_decay: float | None = None
    beta1: float = 0.9
    beta2: float | None = None  # kind's default: lm 0.95, vision 0.999
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    grad_accum: int = 1  # micro-steps per optimizer step (larger effective batch)
    seed: int = 1337  # seeds init, dropout, stochastic depth and the shuffle: CPU runs repeat
    device: str = "auto"  # "auto" = cuda when available, else cpu
    # "auto" = fp16 + GradScaler on CUDA (V100/T4 lack bf16), fp32 on CPU; an LM on CUDA
    # refuses fp32 unless attention is "math" (no flash kernel for fp32); "fp8" = bf16 with
    # FP8 matmuls in the large Linear layers (torchao; sm_89+; models/fp8.py)
    precision: str = "auto"
    compile: bool | None = None  # torch.compile; None = on for CUDA, off on CPU
    # torch.compile's mode (COMPILE_MODES) when compiling: "reduce-overhead" replays the
    # forward and backward as CUDA graphs, so the GPU no longer waits on kernel launches
    # between small kernels (more memory: static input and output buffers); "max-autotune"
    # also benchmarks matmul kernels at compile time (minutes)
    compile_mode: str = "default"
    shuffle: bool = True  # reader shuffle, seeded by `seed` and the epoch
    log_every: int = 10  # metrics.jsonl line (and device sync) every this many steps, and the last
    ckpt_every: int = 0  # also save ckpt.pt every this many steps; 0 = only at the end
    # evaluate on the dataset's eval split every this many steps and at the end (0 = at the
    # end only); skipped when the dataset has no eval split
    eval_every: int = 0
    eval_batches: int = 0  # reader batches per evaluation and rank; 0 = the whole eval split
    # DataLoader processes decoding records; 0 = in the training process. A resumed run
    # that changes it (or the world size) reads the rest of the epoch in another order
    # (elastic resume); keeping both continues exactly. 2-6 on GPU hosts.
    num_workers: int = 0
    # the workers live across epochs (records.epoch_stream: no restart stall at epoch starts,
    # same batches and resume as fresh workers); False = fresh workers every epoch
    persistent_workers: bool = True
    # batches a background thread prepares (packs or decodes, and pins on CUDA) ahead of
    # the step, so the step never waits on them; 0 = inline in the training loop
    prefetch: int = 2
    progress: bool | None = None  # tqdm bar on stderr; None = only when stderr is a TTY

    # --- lm only ---
    block_size: int | None = None  # tokens per sequence; None = the model's block_size
    eos_id: int | None = None  # end-of-document id between packed documents; lm default 0
    # "auto" = a fused kernel pinned on CUDA: cuDNN's on Hopper, else FlashAttention-2
    # (raises if none can run), PyTorch's pick on CPU; "math" = the reference kernel anywhere
    # (the fp32 baseline in benchmarks/train_lm.py); "cudnn" = cuDNN's fused attention on
    # any GPU, CUDA only; "flash" = FlashAttention-2 (each raises if it cannot run)
    attention: str | None = None
    # peak FLOP/s of ONE device for MFU (H100 SXM bf16 dense: 989e12, or a measured
    # matmul peak); None = MFU is null in metrics.jsonl
    peak_flops: float | None = None
    # Warm start: a checkpoint (ckpt.pt) or run folder whose *model* weights initialise this
    # run (its optimizer, scaler and reader state are not taken: this is a new run). Keys in
    # both must agree in shape; Medusa heads the source lacks keep their fresh init. On
    # resume the run's own ckpt.pt wins. None = random init.
    init_from: str | None = None
    # Medusa-1: train only the Medusa heads (LMConfig.medusa_heads > 0) on a frozen backbone
    # taken from init_from (required: heads on a random frozen backbone learn nothing useful).
    # The logged loss is then the heads' objective, medusa_weight * sum_k decay**k CE_k; the
    # frozen model's next-token loss stays in loss_parts["main"]. lm default False.
    freeze_backbone: bool | None = None
    # Parameter-efficient fine-tuning of the trained LM that init_from names (required):
    # a mapping {kind: lora | adapter | prefix, ...fields} (models.peft_config), e.g.
    # {kind: lora, rank: 8}. Only the injected tensors train; the checkpoint holds them and
    # a reference (URI + sha256) to the base checkpoint. None = train the whole model.
    peft: PeftConfig | None = None

    # --- vqvae, efficientnet ---
    channels_last: bool | None = None  # NHWC memory (tensor-core conv kernels); None = on CUDA
    # side the device resizes images to; None = the model's (EfficientNet: its compound-scaled
    # resolution; VQ-VAE: as stored in the shards)
    image_size: int | None = None

    def __post_init__(self) -> None:
        check_choice(self, "kind", tuple(TRAINING))
        profile = TRAINING[self.kind]
        for name in KIND_FIELDS:
            if name not in profile.own_fields and getattr(self, name) is not None:
                users = sorted(k for k, p in TRAINING.items() if name in p.own_fields)
                raise FieldValueError("TrainConfig", name, f"is not a {self.kind} training "
                                      f"field (only {', '.join(users)} use it); leave it unset")
        for name, default in profile.defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, default)
        if self.peft is not None:
            self.peft = peft_config(self.peft)  # a mapping from a config file; named errors
        view = copy.copy(self)  # check_types knows scalars only; peft checked itself above
        view.peft = None
        check_types(view)
        positive_ints(self, ("steps", "batch_size", "grad_accum", "log_every", "block_size",
                             "image_size"))
        positive_ints(self, ("warmup_steps", "seed", "eos_id", "ckpt_every", "eval_every",
                             "eval_batches", "num_workers", "prefetch"), low=0)
        check_number(self, "lr", low_open=True)
        for name in ("min_lr", "weight_decay", "grad_clip"):
            check_number(self, name)
        if self.min_lr > self.lr:
            raise FieldValueError("TrainConfig", "min_lr", f"must be <= lr, got lr={self.lr}, "
                                  f"min_lr={self.min_lr}")
        for name in ("beta1", "beta2"):
            check_number(self, name, high=1.0)
        check_choice(self, "device", DEVICES)
        check_choice(self, "precision", PRECISIONS)
        check_choice(self, "compile_mode", COMPILE_MODES)
        if self.compile is False and self.compile_mode != "default":
            raise FieldValueError("TrainConfig", "compile_mode", f"is {self.compile_mode!r} "
                                  "but compile is false; set compile: true (or leave it unset)")
        if self.attention is not None:
            check_choice(self, "attention", ATTENTION_BACKENDS)
        check_number(self, "peak_flops", low_open=True)
        if self.init_from is not None and not self.init_from.strip():
            raise FieldValueError("TrainConfig", "init_from",
                                  "must be a checkpoint URI or run folder, got ''")
        if self.freeze_backbone and self.init_from is None:
            raise FieldValueError(
                "TrainConfig", "freeze_backbone", "needs init_from (the trained LM whose "
                "weights stay fixed): heads trained on a random frozen backbone are meaningless")
        if self.peft is not None and self.init_from is None:
            raise FieldValueError("TrainConfig", "peft", "needs init_from (the trained LM it "
                                  "fine-tunes): PEFT of a random frozen model is meaningless")
        if self.peft is not None and self.freeze_backbone:
            raise FieldValueError("TrainConfig", "peft", "cannot be combined with "
                                  "freeze_backbone (Medusa-1 trains the heads, PEFT the adapters)")

    @property
    def profile(self) -> TrainProfile:
        """The :class:`TrainProfile` of ``kind``."""
        return TRAINING[self.kind]


@dataclass(frozen=True)
class TrainResult:
    """What a training run did (on this rank); the same for every kind."""

    kind: str
    first_loss: float  # training loss of the first optimizer step this call ran
    final_loss: float  # training loss of the last optimizer step
    steps: int  # optimizer steps done in total (including those before a resume)
    examples: int  # consumed on all ranks: steps * world * grad_accum * batch (* block: tokens)
    unit: str  # what examples counts: "tokens" (lm) or "images"
    checkpoint_uri: str
    metrics_uri: str
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "fp16", "bf16" or "fp8"
    skipped_steps: int  # fp16 steps the GradScaler skipped for inf/nan gradients
    # the task's training metrics at the last log step (VQ-VAE: mse, psnr, perplexity,
    # usage, restarts; EfficientNet: accuracy; lm: loss_parts when the model has extra heads)
    train_metrics: dict[str, Any] = field(default_factory=dict)
    # the last evaluation, {"step": ..., metrics} (lm: loss, perplexity, tokens; VQ-VAE: mse,
    # psnr, perplexity, usage; EfficientNet: accuracy, loss, images); {} without eval split
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    start_step: int = 0  # step the run resumed from (0 = a fresh run)
    rank: int = 0
    world_size: int = 1
    # what only this kind reports (lm: attention backend, init_from, freeze_backbone, peft,
    # trainable_params, total_params)
    extras: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        """A flat JSON-able summary: the losses, counts, device, ``eval``, ``train_metrics``
        and the extras' keys. Non-finite floats (a loss never logged) become None."""
        out = {
            "first_loss": self.first_loss, "final_loss": self.final_loss, "steps": self.steps,
            "examples": self.examples, "unit": self.unit, "device": self.device,
            "precision": self.precision, "skipped_steps": self.skipped_steps,
            "eval": self.eval_metrics, "train_metrics": self.train_metrics, **self.extras,
        }
        return _plain(out)


def _plain(value: Any) -> Any:
    """``value`` with JSON types only: dicts, lists, str, int, finite float, bool, None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    return _plain(float(value))  # numpy scalars and the like


def check_lm_run(model_config: LMConfig, cfg: TrainConfig) -> int:
    """Checks an LM's train config against its model config; returns the training block size.

    Raises:
        FieldValueError: (naming the TrainConfig field) a block size beyond the model's, an
            eos_id outside the vocabulary, a Medusa-1 run (``freeze_backbone``) of a model
            without heads, Medusa heads left without targets by the block size, or
            prefix-tuning of a model without attention layers.
    """
    block_size = cfg.block_size or model_config.block_size
    if block_size > model_config.block_size:
        raise FieldValueError("TrainConfig", "block_size", f"{block_size} > the model's "
                              f"block_size {model_config.block_size}")
    if cfg.eos_id is not None and cfg.eos_id >= model_config.vocab_size:
        raise FieldValueError("TrainConfig", "eos_id", f"{cfg.eos_id} is outside the "
                              f"vocabulary [0, {model_config.vocab_size})")
    if cfg.freeze_backbone and not model_config.medusa_heads:
        raise FieldValueError("TrainConfig", "freeze_backbone", "trains only the Medusa heads, "
                              "but the model has none (set LMConfig.medusa_heads > 0)")
    if cfg.peft is not None and cfg.peft.kind == "prefix" and all(
            model_config.mixer_of(i) != "attention" for i in range(model_config.n_layer)):
        raise FieldValueError("TrainConfig", "peft", "prefix-tuning prepends keys and values to "
                              "softmax attention; the model has no attention layer")
    if model_config.medusa_heads and block_size <= model_config.medusa_heads:
        # Head k needs k + 1 positions; a head without a loss gets no gradient and DDP,
        # which expects one for every trainable parameter, would fail a step later.
        raise FieldValueError("TrainConfig", "block_size", f"{block_size} leaves Medusa heads "
                              f"without targets: it must exceed medusa_heads "
                              f"({model_config.medusa_heads})")
    return block_size


def cosine_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at 0-based ``step``: linear warmup to ``lr``, cosine decay to ``min_lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # in [0, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
