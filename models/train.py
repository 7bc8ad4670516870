"""Train a :class:`~models.lm.DecoderLM` from TFRecord shards written by ``records/``.

One function, no trainer class hierarchy::

    RecordDataset (records.reader) -> loop_epochs -> DocumentPacker -> DecoderLM
    AdamW + warmup/cosine LR, fp16 (GradScaler) / bf16 / fp32, grad clipping,
    SDPA through models.attention, DDP under torchrun, metrics.jsonl,
    ckpt.pt with the manifest's sha256 and everything needed to resume exactly.

Warm start and Medusa-1: ``TrainConfig.init_from`` takes another run's model weights as
the start of a new run; with ``freeze_backbone`` only the Medusa heads train on top of
them (see :mod:`models.warm_start`).

Resume: ``ckpt.pt`` holds model, optimizer, GradScaler, step (the LR schedule is a
function of it), and per rank the reader position, the packer's carried-over
tokens and the RNG states (python, numpy, torch CPU and CUDA). A run killed after
its last checkpoint and restarted with ``resume=True`` follows the same loss curve
(bit for bit on CPU) as one that was never interrupted.

DDP: under ``torchrun --nproc_per_node N`` the process group is joined (NCCL on
CUDA, gloo on CPU), the model is wrapped in DistributedDataParallel, each rank reads
its own partition of the split, the logged loss is the mean over ranks, and only
rank 0 writes metrics and checkpoints.

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
import posixpath
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import torch

from models.attention import sdpa_backend
from models.checkpoint import (
    capture_rng_state,
    restore_rng_state,
    resume_checkpoint,
    save_checkpoint,
)
from models.data import DocumentPacker, Prefetcher, TokenBatchSource, loop_epochs
from models.distributed import DistInfo, all_mean_, barrier, distributed, gather_objects
from models.lm import DecoderLM, LMConfig
from models.runlog import IntervalTimer, MetricsLog, ProgressBar, metrics_record
from models.train_common import (
    make_optimizer,
    matmul_precision,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from models.train_config import DTYPES, RESUME_FIELDS, TrainConfig, TrainResult, cosine_lr
from models.warm_start import check_run, medusa1_train_mode, resumed_config, start_weights
from records.uri import open_uri, resolve

__all__ = ["TrainConfig", "TrainResult", "cosine_lr", "train_lm", "train_lm_on_source"]

log = logging.getLogger(__name__)

def train_lm(
    *,
    dataset_uri: str,
    out_uri: str,
    model_config: LMConfig,
    train_config: TrainConfig,
    split: str = "train",
    resume: bool | str = False,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Trains a DecoderLM on the ``input_ids`` of a records/ dataset (one process or DDP).

    Args:
        dataset_uri: a dataset version folder holding ``manifest.json`` and ``split=*/``.
        out_uri: run folder; receives ``metrics.jsonl``, ``config.json`` and ``ckpt.pt``.
        model_config: the architecture.
        train_config: the optimisation.
        split: which split to read.
        resume: False = start afresh; True = continue from ``<out_uri>/ckpt.pt`` when it
            exists (else start afresh: safe for restarts of preempted jobs); a URI =
            continue from that checkpoint (it must exist).
        on_step: called on every rank after every optimizer step with the step's metrics
            dict; it makes each step sync the device, so leave it None for speed.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: bad configs, token ids outside the vocabulary, an empty split, a
            checkpoint from another dataset, model or data-stream config, an ``init_from``
            checkpoint whose tensors do not fit the model (the message names the tensor).
        FileNotFoundError: an ``init_from`` or explicit ``resume`` checkpoint that is missing.
        RuntimeError: a device, precision or attention kernel that cannot run.
    """
    from records.manifest import manifest_sha256
    from records.reader import RecordDataset  # imported late: records/ pulls in its codecs

    with distributed(resolve_device(train_config.device).type) as info:
        source = RecordDataset(
            dataset_uri,
            split,
            batch_size=train_config.batch_size,
            shuffle=train_config.shuffle,
            seed=train_config.seed,
            rank=info.rank,
            world_size=info.world_size,
        )
        return train_lm_on_source(
            source,
            out_uri=out_uri,
            model_config=model_config,
            train_config=train_config,
            dataset_manifest_sha256=manifest_sha256(dataset_uri),
            resume=resume,
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
    resume: bool | str = False,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    run_info: dict[str, Any] | None = None,
) -> TrainResult:
    """:func:`train_lm` over any :class:`~models.data.TokenBatchSource` (tests, other readers).

    Under DDP ``source`` must already be this rank's partition. Exact resume needs a
    source with ``advance()`` (as ``RecordDataset`` has); ``num_workers > 0`` needs a
    ``torch.utils.data.IterableDataset``. ``run_info`` is added to ``config.json``.
    Other arguments as in :func:`train_lm`.
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
    check_run(model_config, cfg, block_size)
    if resume is not False and not callable(getattr(source, "advance", None)):
        raise ValueError(f"{type(source).__name__} has no advance(): it cannot resume exactly")
    if cfg.num_workers and not isinstance(source, torch.utils.data.IterableDataset):
        raise ValueError("TrainConfig.num_workers > 0 needs a torch IterableDataset source")
    with distributed(resolve_device(cfg.device).type) as info:
        device = resolve_device(cfg.device, info.local_rank)
        precision = resolve_precision(cfg.precision, device)
        ckpt = resume_checkpoint(
            resume, out_uri, model_config=model_config, train_config=cfg,
            dataset_manifest_sha256=dataset_manifest_sha256, world_size=info.world_size,
            must_match=RESUME_FIELDS,
        )
        if ckpt is not None:
            cfg = resumed_config(cfg, ckpt)  # its own weights win over init_from
        with matmul_precision(device, precision):
            return _train(source, cfg, model_config, block_size, device, precision, info, ckpt,
                          out_uri, dataset_manifest_sha256, on_step, run_info)


def _train(
    source: TokenBatchSource, cfg: TrainConfig, model_config: LMConfig, block_size: int,
    device: torch.device, precision: str, info: DistInfo, ckpt: dict[str, Any] | None,
    out_uri: str, sha: str, on_step: Callable[[dict[str, Any]], None] | None,
    run_info: dict[str, Any] | None,
) -> TrainResult:
    dtype = DTYPES[precision]
    use_compile = device.type == "cuda" if cfg.compile is None else cfg.compile
    seed_everything(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's)
    raw_model = DecoderLM(model_config)
    n_trainable = start_weights(raw_model, cfg, ckpt)  # resume, else init_from; Medusa-1 freezes
    optimizer_state = ckpt["optimizer"] if ckpt is not None else None
    raw_model.to(device)
    optimizer = make_optimizer(raw_model, cfg, device)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if ckpt is not None and ckpt["scaler"]:
        scaler.load_state_dict(ckpt["scaler"])
    model = torch.compile(raw_model) if use_compile else raw_model
    if info.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = torch.autocast(device.type, dtype=dtype) if precision != "fp32" else nullcontext()

    start_step, skipped_before = 0, 0
    if ckpt is not None:
        mine = ckpt["data"][info.rank]
        source.load_state_dict(mine["reader"])
        start_step, skipped_before = ckpt["step"], int(ckpt["extra"].get("skipped_steps", 0))
    fs, out_path = resolve(out_uri)
    metrics_uri = posixpath.join(out_uri, "metrics.jsonl")
    ckpt_uri = posixpath.join(out_uri, "ckpt.pt")
    if info.is_main:
        fs.makedirs(out_path, exist_ok=True)
        with open_uri(posixpath.join(out_uri, "config.json"), "w") as f:
            json.dump(
                {
                    "model_config": dataclasses.asdict(model_config),
                    "train_config": dataclasses.asdict(cfg),
                    "dataset_manifest_sha256": sha,
                    "world_size": info.world_size,
                    "trainable_params": n_trainable,
                    **(run_info or {}),
                },
                f,
                indent=2,
            )

    loader = None
    if cfg.num_workers:
        # Workers come from a forkserver, not fork(): the trainer runs a read-ahead thread and
        # often shares its process with other threaded runtimes (a Spark JVM gateway, Airflow),
        # and forking a multi-threaded process can deadlock a child on a lock held by a thread
        # that does not exist in it. The server preloads torch and the reader: forks stay cheap.
        context = torch.multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "records.reader"])
        loader = torch.utils.data.DataLoader(
            source, batch_size=None, num_workers=cfg.num_workers, prefetch_factor=4,
            multiprocessing_context=context,
            persistent_workers=False,  # the reader's resume contract needs fresh workers
            # its own generator: each iter() would otherwise draw worker seeds from the
            # global RNG at epoch starts, shifting dropout masks after a resume
            generator=torch.Generator().manual_seed(cfg.seed + info.rank),
        )
    start_epoch = int(source.state_dict().get("epoch", 0))
    packer = DocumentPacker(
        loop_epochs(source, start_epoch, iterable=loader),
        block_size=block_size,
        batch_size=cfg.batch_size,
        eos_id=cfg.eos_id,
        vocab_size=model_config.vocab_size,
    )
    if ckpt is not None:
        packer.load_state_dict(ckpt["data"][info.rank]["packer"])

    def data_state() -> dict[str, Any]:  # what a checkpoint needs to continue this stream
        return {"reader": source.state_dict(), "packer": packer.state_dict()}

    def pin(xy: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        torch.cuda.set_device(device)  # the prefetch thread pins on this rank's GPU
        return xy[0].pin_memory(), xy[1].pin_memory()  # lets the copies to it be async

    batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = packer

    def save(step: int, final_loss: float, skipped: int) -> None:
        mine = batches.state if isinstance(batches, Prefetcher) else data_state()
        data = gather_objects({**mine, "rng": capture_rng_state()}, info)
        if info.is_main:
            save_checkpoint(
                ckpt_uri, model=raw_model, optimizer=optimizer, step=step,
                model_config=model_config, train_config=cfg, dataset_manifest_sha256=sha,
                reader_state=data[0]["reader"], scaler=scaler, data_state=data,
                extra={"final_loss": final_loss, "skipped_steps": skipped},
            )
        barrier(info)  # no rank runs ahead of (or returns before) the written checkpoint

    tokens_per_step = cfg.grad_accum * cfg.batch_size * block_size  # per rank
    flops_per_token = raw_model.estimate_flops_per_token(block_size)
    first_loss = final_loss = float("nan")
    if ckpt is not None:
        final_loss = float(ckpt["extra"].get("final_loss", float("nan")))
    skipped_t = torch.zeros((), device=device)  # fp16 steps skipped: counted without syncing
    timer = IntervalTimer()
    metrics = MetricsLog(metrics_uri, enabled=info.is_main, resume_step=start_step)
    bar = ProgressBar(total=cfg.steps, initial=start_step,
                      enabled=cfg.progress if info.is_main else False)
    model.train()
    if cfg.freeze_backbone:
        medusa1_train_mode(raw_model)
    if cfg.prefetch:  # started last: nothing below may fail before the finally closes it
        batches = Prefetcher(packer, snapshot=data_state, depth=cfg.prefetch,
                             transform=pin if device.type == "cuda" else None)
    try:
        with sdpa_backend(
            device,
            dtype=dtype,
            n_head=model_config.n_head,
            head_size=model_config.head_size,
            dropout_p=model_config.dropout,
            backend=cfg.attention,
        ) as backend:
            n_params = raw_model.num_params() / 1e6
            log.info("%.2fM params on %s x%d, %s, attention %s, compile %s, from step %d",
                     n_params, device, info.world_size, precision, backend, use_compile,
                     start_step)
            # Set the RNGs last: probing the attention kernel with dropout draws from them.
            if ckpt is not None:
                restore_rng_state(ckpt["data"][info.rank]["rng"])
            elif info.rank:
                seed_everything(cfg.seed + info.rank)  # distinct dropout masks per rank
            for step in range(start_step, cfg.steps):
                lr = cosine_lr(step, lr=cfg.lr, min_lr=cfg.min_lr,
                               warmup_steps=cfg.warmup_steps, total_steps=cfg.steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=device)
                for micro in range(cfg.grad_accum):
                    t_wait = time.perf_counter()
                    x, y = next(batches)  # (B, T) each
                    if device.type == "cuda" and not x.is_pinned():
                        x, y = pin((x, y))
                    timer.add_wait(time.perf_counter() - t_wait)
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    last = micro == cfg.grad_accum - 1
                    sync = model.no_sync() if info.active and not last else nullcontext()
                    with sync:
                        with autocast:
                            # No logits back: the compiled graph need not hand them out.
                            _, loss = model(x, y, return_logits=False)
                        # Medusa-1 logs what trains: the heads' loss (the frozen backbone's
                        # next-token loss is a constant of the batch, kept in loss_parts).
                        logged = (raw_model.last_loss_parts["medusa"] * model_config.medusa_weight
                                  if cfg.freeze_backbone else loss.detach())
                        loss = loss / cfg.grad_accum
                        scaler.scale(loss).backward()
                    loss_sum += logged / cfg.grad_accum
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
                if scaler.is_enabled():
                    # GradScaler only exposes its scale through get_scale(), which syncs.
                    scale_before = scaler._scale.clone()
                scaler.step(optimizer)  # skipped when fp16 gradients hold inf/nan
                scaler.update()
                if scaler.is_enabled():
                    skipped_t += scaler._scale < scale_before  # backoff == a skipped step
                optimizer.zero_grad(set_to_none=True)
                all_mean_(loss_sum, info)  # queued on the device: no host sync here
                timer.steps += 1

                done = step + 1
                is_log = done % cfg.log_every == 0 or step == start_step or done == cfg.steps
                record = None
                if is_log or on_step is not None:
                    record = metrics_record(
                        done, loss_sum.item(), lr, timer, tokens_per_step, info.world_size,
                        flops_per_token, cfg.peak_flops, scaler,
                        skipped_before + int(skipped_t.item()), raw_model,
                    )
                    if step == start_step:
                        first_loss = record["loss"]
                    final_loss = record["loss"]
                    if is_log:
                        metrics.write(record)
                bar.update(record if is_log else None)
                if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps:
                    save(done, final_loss, skipped_before + int(skipped_t.item()))
                if on_step is not None:
                    on_step({**record, "steps": cfg.steps, "rank": info.rank})
    finally:
        if isinstance(batches, Prefetcher):
            batches.close()
        metrics.close()
        bar.close()
    return TrainResult(
        first_loss=first_loss,
        final_loss=final_loss,
        steps=max(cfg.steps, start_step),
        tokens=max(cfg.steps, start_step) * tokens_per_step * info.world_size,
        checkpoint_uri=ckpt_uri,
        metrics_uri=metrics_uri,
        device=device.type,
        precision=precision,
        attention_backend=backend,
        skipped_steps=skipped_before + int(skipped_t.item()),
        start_step=start_step,
        rank=info.rank,
        world_size=info.world_size,
    )
