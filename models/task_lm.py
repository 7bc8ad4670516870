"""The language model's task for :mod:`models.trainer`: packed documents, next-token loss.

    reader batches (input_ids, padded) -> DocumentPacker -> (x, y) (B, T) windows
      -> DecoderLM(x, y) under autocast, attention kernel pinned by models.attention

The LM brings to the loop: its model (with a warm start and Medusa-1 freezing from
:mod:`models.warm_start`), the packer whose carried-over tokens are checkpointed per rank
(exact resume), the SDPA kernel policy (a fused kernel enforced on CUDA), MFU and the
loss parts of extra heads in metrics lines, and evaluation: the mean next-token
cross-entropy over the eval split's tokens (``loss``) and ``perplexity = exp(loss)``.
With Medusa-1 (``freeze_backbone``) the logged training loss is the heads' objective.
With ``peft`` (:mod:`models.peft`) the model is the ``init_from`` base with PEFT modules
injected, only those train, and the checkpoint keeps only them plus a reference to the base.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from models.attention import sdpa_backend
from models.data import DocumentPacker
from models.lm import DecoderLM, LMConfig
from models.peft.apply import trainable_state_dict
from models.peft.run import check_resume, peft_start_weights
from models.train_common import StepOutput
from models.train_config import TrainConfig, check_lm_run
from models.warm_start import medusa1_train_mode, resumed_config, start_weights

__all__ = ["LMTask", "make_task"]

Pair = tuple[torch.Tensor, torch.Tensor]  # (x, y), LongTensors (B, T)


class LMTask:
    """A :class:`~models.train_common.Task` for a :class:`DecoderLM` on a token dataset.

    Raises:
        TypeError: configs of another kind.
        ValueError: a training block size beyond the model's, an ``eos_id`` outside the
            vocabulary, or a Medusa-1 run that cannot train its heads (field named).
    """

    name = "lm"
    unit = "tokens"
    drop_last = False  # the packer carries a partial reader batch over into the next

    def __init__(self, model_config: LMConfig, train_config: TrainConfig) -> None:
        if not isinstance(model_config, LMConfig):
            raise TypeError(f"model_config must be an LMConfig, got {type(model_config).__name__}")
        if not isinstance(train_config, TrainConfig) or train_config.kind != "lm":
            raise TypeError(f"train_config must be an lm TrainConfig, got {train_config!r}")
        self.model_config, self.train_config = model_config, train_config
        self.reader_options: dict[str, Any] = {}  # the manifest's features; input_ids is read
        self.block_size = check_lm_run(model_config, train_config)
        self.items_per_batch = train_config.batch_size * self.block_size  # tokens
        self.model: DecoderLM | None = None
        self.flops_per_token = 0.0
        self.params: dict[str, int] = {}  # trainable_params, total_params (after start_weights)
        self.peft_record: dict[str, Any] | None = None  # a PEFT run's ckpt["peft"]

    def resume(self, ckpt: dict[str, Any]) -> TrainConfig:
        check_resume(self.train_config, ckpt)  # the same PEFT setting, or none on both sides
        self.train_config = resumed_config(self.train_config, ckpt)  # its own weights win
        return self.train_config

    def build(self) -> DecoderLM:
        self.model = DecoderLM(self.model_config)
        self.flops_per_token = self.model.estimate_flops_per_token(self.block_size)
        return self.model

    def start_weights(self, model: DecoderLM, ckpt: dict[str, Any] | None) -> int:
        if self.train_config.peft is not None:  # base from init_from (or the ckpt's reference)
            self.peft_record = peft_start_weights(model, self.train_config, ckpt)
            trainable = self.peft_record["trainable_params"]
        else:
            trainable = start_weights(model, self.train_config, ckpt)  # resume, else init_from
        self.params = {"trainable_params": trainable,
                       "total_params": sum(p.numel() for p in model.parameters())}
        return trainable

    def saved_weights(self, model: DecoderLM) -> dict[str, Any]:
        """What the checkpoint keeps of ``model`` beyond the default (``save_checkpoint``
        keyword arguments): a PEFT run keeps its trainable tensors and its base reference."""
        if self.peft_record is None:
            return {}
        return {"model_state": trainable_state_dict(model), "peft": self.peft_record}

    def memory_format(self, device: torch.device) -> torch.memory_format:
        return torch.contiguous_format

    def stream(self, batches: Iterator[dict]) -> DocumentPacker:
        cfg = self.train_config
        return DocumentPacker(batches, block_size=self.block_size, batch_size=cfg.batch_size,
                              eos_id=cfg.eos_id, vocab_size=self.model_config.vocab_size)

    def eval_batches(self, reader: Iterable[dict]) -> Iterator[Pair]:
        """Every whole window of the split once, ``batch_size`` a batch (the last may be short)."""
        cfg = self.train_config
        it = iter(reader)
        try:
            windows = DocumentPacker(it, block_size=self.block_size, batch_size=1,
                                     eos_id=cfg.eos_id, vocab_size=self.model_config.vocab_size)
            xs: list[torch.Tensor] = []
            ys: list[torch.Tensor] = []
            for x, y in windows:  # (1, T) each
                xs.append(x)
                ys.append(y)
                if len(xs) == cfg.batch_size:
                    yield torch.cat(xs), torch.cat(ys)  # (B, T) each
                    xs, ys = [], []
            if xs:
                yield torch.cat(xs), torch.cat(ys)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def prepare(self, batch: Pair, device: torch.device) -> Pair:
        x, y = batch
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def step(self, model: torch.nn.Module, inputs: Pair) -> StepOutput:
        x, y = inputs
        _, loss = model(x, y, return_logits=False)  # the compiled graph need not hand logits out
        # Medusa-1 logs what trains: the heads' loss (the frozen backbone's next-token loss
        # is a constant of the batch, kept in loss_parts).
        if self.train_config.freeze_backbone:
            logged = self.model.last_loss_parts["medusa"] * self.model_config.medusa_weight
        else:
            logged = loss.detach()
        return StepOutput(loss, logged, {})

    def eval_sums(self, model: torch.nn.Module, inputs: Pair) -> dict[str, torch.Tensor]:
        x, y = inputs
        logits, _ = model(x)  # (B, T, V): the next-token head only, not MTP/Medusa
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
        return {"loss": loss, "tokens": torch.tensor(float(y.numel()), device=y.device)}

    def eval_finish(self, sums: dict[str, torch.Tensor]) -> dict[str, Any]:
        loss = float(sums["loss"] / sums["tokens"])  # mean next-token cross-entropy, nats
        return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf,
                "tokens": int(sums["tokens"])}

    def train_mode(self, model: DecoderLM) -> None:
        if self.train_config.freeze_backbone:
            medusa1_train_mode(model)  # the frozen backbone runs without dropout

    @contextmanager
    def running(self, device: torch.device, dtype: torch.dtype) -> Iterator[dict[str, Any]]:
        cfg, mc = self.train_config, self.model_config
        # The SDPA kernel policy (a fused kernel enforced on CUDA) is for mixers that run
        # SDPA; a model of only gau/linear/s4d/mamba2 layers has none to pin ("none").
        uses_sdpa = any(name in ("attention", "sliding_window") for name in mc.mixers)
        pinned = (sdpa_backend(device, dtype=dtype, n_head=mc.n_head, head_size=mc.head_size,
                               dropout_p=mc.dropout, backend=cfg.attention,
                               seq_len=cfg.block_size or mc.block_size)
                  if uses_sdpa else nullcontext("none"))
        with pinned as backend:
            extras = {"attention": backend, "init_from": cfg.init_from,
                      "freeze_backbone": cfg.freeze_backbone}
            if cfg.peft is not None:  # what it trains, of how much
                extras.update(peft=dataclasses.asdict(cfg.peft), **self.params)
            yield extras

    def rate_fields(self, per_rank_rate: float) -> dict[str, Any]:
        peak = self.train_config.peak_flops
        return {"mfu": per_rank_rate * self.flops_per_token / peak if peak else None}

    def log_metrics(self, model: DecoderLM) -> dict[str, Any]:
        parts = getattr(model, "last_loss_parts", None)  # syncs the device: log steps only
        return {"loss_parts": {k: float(v) for k, v in parts.items()}} if parts else {}


def make_task(model_config: LMConfig, train_config: TrainConfig) -> LMTask:
    """The LM's task (``models.kinds.KINDS["lm"].task``)."""
    return LMTask(model_config, train_config)
