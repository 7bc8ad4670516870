"""One training loop for every model kind: the task brings the model, the loop the rest.

A :class:`~models.train_common.Task` (:mod:`models.task_lm`, :mod:`models.task_vision`)
supplies the model, its host batch stream, batch -> loss, its eval metrics and what to
log; this loop owns everything else, the same for every kind::

    RecordDataset (this rank's partition) -> loop_epochs -> task.stream (LM: packer;
      images: decode) -> [Prefetcher thread: pin] -> task.prepare (to the device)
      -> task.step under fp16 (GradScaler) / bf16 autocast (fp8: and torchao's FP8 Linear
      layers, models.fp8) or fp32
    AdamW (fused on CUDA) + warmup/cosine LR, grad accumulation (DDP no_sync), clipping,
    torch.compile and channels-last on CUDA, DDP under torchrun (NCCL; gloo on CPU),
    metrics.jsonl, evaluation on the eval split, ckpt.pt with the manifest's sha256.

Resume: ``ckpt.pt`` holds model, optimizer, GradScaler, step (the LR schedule is a
function of it), and per rank the reader position, the stream's state (the LM packer's
carried-over tokens) and the RNG states. A run killed after its last checkpoint and
restarted with ``resume=True`` follows the same loss curve (bit for bit on CPU) as one
that was never interrupted. It also holds the reader's topology-free progress, so a run
restarted with another world size or ``num_workers`` reads exactly the examples of the
epoch the old run had not (:func:`models.data.rank_resume_state`; not the same curve).
A task may keep less of the model (``task.saved_weights``): a PEFT run keeps its
trainable tensors and a reference to its base checkpoint.

Evaluation: every ``eval_every`` steps and at the end, over the dataset's eval split
(``eval_batches`` micro-batches per rank at most; skipped when there is no eval split),
with the raw model in eval mode; the metrics go into that step's metrics line as
``"eval": {"step": ..., ...}`` and into the result.

The host syncs once per ``log_every`` steps (the logged loss, fp16 skipped steps) and
not otherwise; under DDP the logged loss is the mean over ranks, and only rank 0 writes
metrics and checkpoints. Call it through :func:`models.kinds.train_model`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import torch

from models.checkpoint import (
    capture_rng_state,
    restore_rng_state,
    resume_checkpoint,
    save_checkpoint,
)
from models.data import Prefetcher, loop_epochs, loop_stream, rank_resume_state
from models.distributed import DistInfo, all_mean_, barrier, distributed, gather_objects
from models.fp8 import convert_to_fp8
from models.runlog import IntervalTimer, MetricsLog, ProgressBar, step_record
from models.train_common import (
    DTYPES,
    Task,
    cudnn_tf32,
    evaluate,
    make_loader,
    make_optimizer,
    matmul_precision,
    pin_batch,
    resolve_device,
    resolve_precision,
    scaler_step,
    seed_everything,
)
from models.train_config import CUDA_GRAPH_MODES, TrainConfig, TrainResult, cosine_lr
from records.uri import open_uri, resolve

__all__ = ["train", "train_on_source"]

log = logging.getLogger(__name__)

OnStep = Callable[[dict[str, Any]], None]


def train(task: Task, *, dataset_uri: str, out_uri: str, split: str = "train",
          eval_split: str | None = "eval", resume: bool | str = False,
          on_step: OnStep | None = None) -> TrainResult:
    """Trains ``task``'s model on a records/ dataset (one process, or DDP under torchrun).

    Args:
        task: the kind's task, bound to its configs (``models.kinds.make_task``).
        dataset_uri: a dataset version folder holding ``manifest.json`` and ``split=*/``.
        out_uri: run folder; receives ``metrics.jsonl``, ``config.json`` and ``ckpt.pt``.
        split: the training split (read shuffled by the train config's seed).
        eval_split: evaluated every ``eval_every`` steps and at the end when the dataset
            has it (else evaluation is skipped); None = never.
        resume, on_step: as in :func:`models.kinds.train_model`.

    Returns:
        A :class:`~models.train_config.TrainResult`.
    """
    from records.manifest import load_manifest, manifest_sha256
    from records.reader import RecordDataset  # imported late: records/ pulls in its codecs

    cfg = task.train_config
    with distributed(resolve_device(cfg.device).type) as info:
        common = dict(rank=info.rank, world_size=info.world_size, **task.reader_options)
        source = RecordDataset(dataset_uri, split, batch_size=cfg.batch_size, shuffle=cfg.shuffle,
                               seed=cfg.seed, drop_last=task.drop_last, **common)
        eval_source = None
        if eval_split is not None and eval_split in load_manifest(dataset_uri).splits:
            eval_source = RecordDataset(dataset_uri, eval_split, batch_size=cfg.batch_size,
                                        shuffle=False, **common)
        elif eval_split is not None:
            log.info("%s has no %s split: no evaluation", dataset_uri, eval_split)
        return train_on_source(
            task, source, out_uri=out_uri, dataset_manifest_sha256=manifest_sha256(dataset_uri),
            eval_source=eval_source, resume=resume, on_step=on_step,
            run_info={"dataset_uri": dataset_uri, "split": split,
                      "eval_split": eval_split if eval_source is not None else None},
        )


def train_on_source(task: Task, source: Any, *, out_uri: str, dataset_manifest_sha256: str,
                    eval_source: Iterable[dict] | None = None, resume: bool | str = False,
                    on_step: OnStep | None = None,
                    run_info: dict[str, Any] | None = None) -> TrainResult:
    """:func:`train` over any reader shaped like ``records.reader.RecordDataset``.

    ``source`` needs ``set_epoch``/``state_dict``/``load_state_dict`` (and ``advance`` to
    resume exactly); under DDP it must already be this rank's partition; ``num_workers >
    0`` needs a ``torch.utils.data.IterableDataset``. ``eval_source`` (this rank's part of
    the eval split) is iterated once per evaluation; None = no evaluation. ``run_info``
    is added to ``config.json``. Other arguments as in :func:`train`.

    Raises:
        ValueError: a source that cannot resume or feed workers, a checkpoint of another
            dataset, model, kind or data-stream config, and what the task raises.
    """
    cfg: TrainConfig = task.train_config
    if resume is not False and not callable(getattr(source, "advance", None)):
        raise ValueError(f"{type(source).__name__} has no advance(): it cannot resume exactly")
    if cfg.num_workers and not isinstance(source, torch.utils.data.IterableDataset):
        raise ValueError("TrainConfig.num_workers > 0 needs a torch IterableDataset source")
    with distributed(resolve_device(cfg.device).type) as info:
        device = resolve_device(cfg.device, info.local_rank)
        precision = resolve_precision(cfg.precision, device)
        ckpt = resume_checkpoint(
            resume, out_uri, model_config=task.model_config, train_config=cfg,
            dataset_manifest_sha256=dataset_manifest_sha256, world_size=info.world_size,
            must_match=cfg.profile.resume_fields,
        )
        if ckpt is not None:
            kind = ckpt["extra"].get("kind", task.name)
            if kind != task.name:
                raise ValueError(f"cannot resume: the checkpoint holds a {kind!r} model, "
                                 f"not {task.name!r}")
            cfg = task.resume(ckpt)
        with matmul_precision(device, precision), cudnn_tf32(device, precision):
            return _run(task, source, eval_source, cfg, device, precision, info, ckpt, out_uri,
                        dataset_manifest_sha256, on_step, run_info)


def _write_config(out_uri: str, task: Task, cfg: TrainConfig, sha: str, info: DistInfo,
                  trainable: int, total: int, run_info: dict[str, Any] | None) -> None:
    fs, out_path = resolve(out_uri)
    fs.makedirs(out_path, exist_ok=True)
    with open_uri(posixpath.join(out_uri, "config.json"), "w") as f:
        json.dump({"kind": task.name, "model_config": dataclasses.asdict(task.model_config),
                   "train_config": dataclasses.asdict(cfg), "dataset_manifest_sha256": sha,
                   "world_size": info.world_size, "trainable_params": trainable,
                   "total_params": total, **(run_info or {})}, f, indent=2)


def _mean_metrics(sums: dict[str, torch.Tensor], info: DistInfo) -> dict[str, float]:
    """The step's metrics averaged over ranks, as floats (syncs: log steps only)."""
    names = sorted(sums)
    if not names:
        return {}
    values = all_mean_(torch.stack([sums[k] for k in names]), info)
    return dict(zip(names, values.tolist(), strict=True))


def _run(task: Task, source: Any, eval_source: Iterable[dict] | None, cfg: TrainConfig,
         device: torch.device, precision: str, info: DistInfo, ckpt: dict[str, Any] | None,
         out_uri: str, sha: str, on_step: OnStep | None, run_info: dict[str, Any] | None,
         ) -> TrainResult:
    dtype, cuda = DTYPES[precision], device.type == "cuda"
    use_compile = cuda if cfg.compile is None else cfg.compile
    seed_everything(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's)
    raw_model = task.build()
    n_trainable = task.start_weights(raw_model, ckpt)  # resume, else a warm start; freezing
    n_total = sum(p.numel() for p in raw_model.parameters())
    raw_model.to(device, memory_format=task.memory_format(device))
    # before compile and DDP; keeps every Parameter and state-dict key
    fp8_layers = convert_to_fp8(raw_model, device) if precision == "fp8" else None
    optimizer = make_optimizer(raw_model, cfg, device)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if ckpt is not None and ckpt["scaler"]:
        scaler.load_state_dict(ckpt["scaler"])
    model = torch.compile(raw_model, mode=cfg.compile_mode) if use_compile else raw_model
    # CUDA-graph replays reuse their output buffers: each micro-step starts a new generation
    cudagraphs = use_compile and cuda and cfg.compile_mode in CUDA_GRAPH_MODES
    if info.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if cuda else None)
    autocast = torch.autocast(device.type, dtype=dtype) if precision != "fp32" else nullcontext()

    start_step, skipped_before = 0, 0
    first_loss = final_loss = float("nan")
    train_metrics: dict[str, Any] = {}
    eval_metrics: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    resumed: dict[str, Any] = {}  # this rank's data state out of the checkpoint
    if ckpt is not None:
        resumed = rank_resume_state(
            ckpt["data"], ckpt.get("reader_global"), rank=info.rank, world_size=info.world_size,
            same_topology=(len(ckpt["data"]) == info.world_size
                           and ckpt["train_config"].get("num_workers") == cfg.num_workers))
        source.load_state_dict(resumed["reader"])
        extra = ckpt["extra"]
        start_step, skipped_before = ckpt["step"], int(extra.get("skipped_steps", 0))
        final_loss = float(extra.get("final_loss", float("nan")))
        train_metrics = dict(extra.get("train_metrics", {}))
        eval_metrics = dict(extra.get("eval_metrics", {}))
    metrics_uri = posixpath.join(out_uri, "metrics.jsonl")
    ckpt_uri = posixpath.join(out_uri, "ckpt.pt")
    if info.is_main:
        _write_config(out_uri, task, cfg, sha, info, n_trainable, n_total, run_info)

    # Workers that live across epochs (one DataLoader iteration over every epoch) when the
    # reader can place a worker in any epoch; else fresh workers per epoch.
    streamed = bool(cfg.num_workers and cfg.persistent_workers
                    and callable(getattr(source, "epoch_batches", None)))
    loader = (make_loader(source, num_workers=cfg.num_workers, seed=cfg.seed + info.rank,
                          stream=streamed) if cfg.num_workers else None)
    start_epoch = int(source.state_dict().get("epoch", 0))
    stream = task.stream(loop_stream(source, loader) if streamed
                         else loop_epochs(source, start_epoch, iterable=loader))
    stateful = callable(getattr(stream, "state_dict", None))  # the LM's packer
    if ckpt is not None and stateful:
        stream.load_state_dict(resumed["packer"])

    def data_state() -> dict[str, Any]:  # what a checkpoint needs to continue this stream
        state = {"reader": source.state_dict()}
        if stateful:
            state["packer"] = stream.state_dict()
        return state

    batches = stream

    # A task may keep less than the whole model (a PEFT run: its trainable tensors and a
    # reference to its base): save_checkpoint keyword arguments, else the state dict.
    saved_weights = getattr(task, "saved_weights", None)

    def save(step: int, skipped: int) -> None:
        mine = batches.state if isinstance(batches, Prefetcher) else data_state()
        data = gather_objects({**mine, "rng": capture_rng_state()}, info)
        if info.is_main:
            elastic = getattr(source, "elastic_state", None)
            save_checkpoint(
                ckpt_uri, model=raw_model, optimizer=optimizer, step=step,
                reader_global=(elastic([d["reader"] for d in data], num_workers=cfg.num_workers)
                               if callable(elastic) else None),
                model_config=task.model_config, train_config=cfg, dataset_manifest_sha256=sha,
                reader_state=data[0]["reader"], scaler=scaler, data_state=data,
                extra={"kind": task.name, "final_loss": final_loss, "skipped_steps": skipped,
                       "train_metrics": train_metrics, "eval_metrics": eval_metrics, **extras},
                **(saved_weights(raw_model) if saved_weights is not None else {}),
            )
        barrier(info)  # no rank runs ahead of (or returns before) the written checkpoint

    def run_eval() -> dict[str, Any] | None:
        # Eager: a compiled model would recompile for eval mode, and evaluations are rare.
        if info.active:  # rank 0's buffers (BatchNorm statistics) on every rank: the ckpt's
            for buffer in raw_model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        return evaluate(task, raw_model, eval_source, device=device, autocast=autocast,
                        max_batches=cfg.eval_batches, info=info)

    items_per_step = cfg.grad_accum * task.items_per_batch  # per rank
    skipped_t = torch.zeros((), device=device)  # fp16 steps skipped: counted without syncing
    timer = IntervalTimer()
    metrics = MetricsLog(metrics_uri, enabled=info.is_main, resume_step=start_step)
    bar = ProgressBar(total=cfg.steps, initial=start_step,
                      enabled=cfg.progress if info.is_main else False)
    model.train()
    task.train_mode(raw_model)
    if cfg.prefetch:  # started last: nothing below may fail before the finally closes it
        batches = Prefetcher(stream, snapshot=data_state, depth=cfg.prefetch,
                             transform=(lambda b: pin_batch(b, device)) if cuda else None)
    try:
        with task.running(device, dtype) as extras:
            if fp8_layers is not None:  # how many Linear layers run FP8 matmuls
                extras["fp8_layers"] = len(fp8_layers)
            log.info("%s: %.2fM params (%d train, %.3g%%) on %s x%d, %s, compile %s, %s, "
                     "from step %d", task.name, n_total / 1e6, n_trainable,
                     100.0 * n_trainable / max(1, n_total), device, info.world_size, precision,
                     use_compile, extras, start_step)
            # The RNGs last: nothing above may draw from them after this (probing the
            # attention kernel with dropout does).
            if resumed.get("rng") is not None:
                restore_rng_state(resumed["rng"])
            elif info.rank:
                seed_everything(cfg.seed + info.rank)  # distinct dropout masks per rank
            for step in range(start_step, cfg.steps):
                lr = cosine_lr(step, lr=cfg.lr, min_lr=cfg.min_lr,
                               warmup_steps=cfg.warmup_steps, total_steps=cfg.steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=device)
                step_metrics: dict[str, torch.Tensor] = {}
                for micro in range(cfg.grad_accum):
                    t_wait = time.perf_counter()
                    batch = next(batches)
                    if cuda and not batch[0].is_pinned():
                        batch = pin_batch(batch, device)
                    timer.add_wait(time.perf_counter() - t_wait)
                    inputs = task.prepare(batch, device)
                    if cudagraphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    last = micro == cfg.grad_accum - 1
                    with model.no_sync() if info.active and not last else nullcontext():
                        with autocast:
                            out = task.step(model, inputs)
                        scaler.scale(out.loss / cfg.grad_accum).backward()
                    loss_sum += out.logged / cfg.grad_accum
                    for k, v in out.metrics.items():
                        v = v.detach().float() / cfg.grad_accum
                        step_metrics[k] = step_metrics[k] + v if k in step_metrics else v
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
                skipped = scaler_step(scaler, optimizer)  # skipped for inf/nan fp16 gradients
                if skipped is not None:
                    skipped_t += skipped
                optimizer.zero_grad(set_to_none=True)
                all_mean_(loss_sum, info)  # queued on the device: no host sync here
                timer.steps += 1

                done = step + 1
                do_eval = eval_source is not None and (
                    (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps)
                is_log = done % cfg.log_every == 0 or step == start_step or done == cfg.steps
                record = None
                if is_log or do_eval or on_step is not None:
                    train_metrics = {**_mean_metrics(step_metrics, info),
                                     **task.log_metrics(raw_model)}
                    record, per_rank = step_record(
                        done, loss_sum.item(), lr, timer, items_per_step=items_per_step,
                        world_size=info.world_size, unit=task.unit, scaler=scaler,
                        skipped=skipped_before + int(skipped_t.item()))
                    record.update(task.rate_fields(per_rank))
                    record.update(train_metrics)
                    if step == start_step:
                        first_loss = record["loss"]
                    final_loss = record["loss"]
                    if do_eval:
                        evaluated = run_eval()
                        if evaluated is None:
                            log.warning("step %d: the eval split gave no whole batch", done)
                        else:
                            eval_metrics = record["eval"] = {"step": done, **evaluated}
                        timer.lap()  # the evaluation is not training time
                    if is_log or do_eval:
                        metrics.write(record)
                bar.update(record if is_log else None)
                if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps:
                    save(done, skipped_before + int(skipped_t.item()))
                if on_step is not None:
                    on_step({**record, "steps": cfg.steps, "rank": info.rank})
    finally:
        if isinstance(batches, Prefetcher):
            batches.close()
        metrics.close()
        bar.close()
    steps = max(cfg.steps, start_step)
    return TrainResult(
        kind=task.name, first_loss=first_loss, final_loss=final_loss, steps=steps,
        examples=steps * items_per_step * info.world_size, unit=task.unit,
        checkpoint_uri=ckpt_uri, metrics_uri=metrics_uri, device=device.type,
        precision=precision, skipped_steps=skipped_before + int(skipped_t.item()),
        train_metrics=dict(train_metrics), eval_metrics=dict(eval_metrics),
        start_step=start_step, rank=info.rank, world_size=info.world_size, extras=dict(extras),
    )
