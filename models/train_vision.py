"""Train the vision models (VQ-VAE, EfficientNet) from image TFRecord shards.

One loop for every kind; what differs per model is a :class:`~models.vision_tasks.VisionTask`
(build, normalize, train step, eval sums) — composition, no trainer classes::

    RecordDataset(bytes_as="uint8") -> loop_epochs -> decode_images (uint8 NHWC, host)
      -> [Prefetcher thread: pin] -> to device -> float NCHW, resize, normalize (device)
      -> task.train_step under fp16 (GradScaler) / bf16 autocast or fp32
    AdamW (fused on CUDA) + warmup/cosine LR, grad clipping and accumulation,
    channels-last and torch.compile on CUDA, DDP under torchrun, metrics.jsonl,
    ckpt.pt with the manifest's sha256 and everything needed to resume exactly,
    evaluation on the eval split (top-1 accuracy; reconstruction PSNR and perplexity).

It reuses the LM trainer's parts (:mod:`models.train`, :mod:`models.checkpoint`,
:mod:`models.runlog`, :mod:`models.data`, :mod:`models.distributed`) and behaves like it:
the same checkpoint layout (per rank: reader state and RNG states), ``resume=True``
continues bit for bit on CPU, rank 0 writes, fp16 steps the GradScaler skips are
counted without a host sync and logged as ``skipped_steps``.

Example::

    result = train_vision(
        kind="efficientnet",
        dataset_uri="file:///lake/records/images/v=1",
        out_uri="file:///lake/models/effnet/run-1",
        model_config=EfficientNetConfig.preset("b0", num_classes=3),
        train_config=VisionTrainConfig(steps=2000, batch_size=128),
    )
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from models.checkpoint import (
    capture_rng_state,
    restore_rng_state,
    resume_checkpoint,
    save_checkpoint,
)
from models.data import Prefetcher, loop_epochs
from models.distributed import DistInfo, all_mean_, barrier, distributed, gather_objects
from models.runlog import IntervalTimer, MetricsLog, ProgressBar, images_record
from models.train_common import (
    make_optimizer,
    matmul_precision,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from models.train_config import DTYPES, cosine_lr
from models.vision_config import VISION_RESUME_FIELDS, VisionTrainConfig, VisionTrainResult
from models.vision_data import image_batches, image_spec, to_model_input
from models.vision_tasks import VisionTask, evaluate, get_task
from records.uri import open_uri, resolve

__all__ = ["VisionTrainConfig", "VisionTrainResult", "evaluate", "scaler_step", "train_vision",
           "train_vision_on_source"]

log = logging.getLogger(__name__)


def train_vision(
    *, kind: str | VisionTask, dataset_uri: str, out_uri: str, model_config: Any,
    train_config: VisionTrainConfig, split: str = "train", eval_split: str | None = "eval",
    resume: bool | str = False, on_step: Callable[[dict[str, Any]], None] | None = None,
) -> VisionTrainResult:
    """Trains a vision model on the images of a records/ dataset (one process or DDP).

    Args:
        kind: ``"vqvae"`` or ``"efficientnet"`` (or a :class:`VisionTask`).
        dataset_uri: a dataset version folder of image shards (``image``, ``image_shape``,
            ``label``; see :mod:`models.vision_data`).
        out_uri: run folder; receives ``metrics.jsonl``, ``config.json`` and ``ckpt.pt``.
        model_config: a ``VQVAEConfig`` or ``EfficientNetConfig``.
        train_config: the optimisation.
        split: the training split (read shuffled, whole batches only).
        eval_split: evaluated every ``eval_every`` steps and at the end; None = never.
        resume: False = start afresh; True = continue from ``<out_uri>/ckpt.pt`` when it
            exists (else start afresh); a URI = continue from that checkpoint.
        on_step: called on every rank after every optimizer step with its metrics dict
            (it makes each step sync the device).

    Returns:
        A :class:`VisionTrainResult`.

    Raises:
        ValueError: bad configs, malformed images or labels, an empty split, a checkpoint
            of another dataset, model, kind or data-stream config.
        KeyError: the dataset has no ``split`` or ``eval_split``.
        RuntimeError: a device or precision that cannot run.
    """
    from records.manifest import manifest_sha256
    from records.reader import RecordDataset  # imported late: records/ pulls in its codecs

    task = get_task(kind)
    cfg = train_config
    with distributed(resolve_device(cfg.device).type) as info:
        spec = image_spec(labels=task.labels)
        common = dict(feature_spec=spec, rank=info.rank, world_size=info.world_size,
                      bytes_as="uint8")
        # drop_last: every step sees a full batch (BatchNorm, compile) and ranks stay in step
        source = RecordDataset(dataset_uri, split, batch_size=cfg.batch_size, shuffle=cfg.shuffle,
                               seed=cfg.seed, drop_last=True, **common)
        eval_source = None
        if eval_split is not None:
            eval_source = RecordDataset(dataset_uri, eval_split, batch_size=cfg.batch_size,
                                        shuffle=False, **common)
        return train_vision_on_source(
            source, kind=task, out_uri=out_uri, model_config=model_config, train_config=cfg,
            dataset_manifest_sha256=manifest_sha256(dataset_uri), eval_source=eval_source,
            resume=resume, on_step=on_step,
            run_info={"dataset_uri": dataset_uri, "split": split, "eval_split": eval_split},
        )


def train_vision_on_source(
    source: Any, *, kind: str | VisionTask, out_uri: str, model_config: Any,
    train_config: VisionTrainConfig, dataset_manifest_sha256: str,
    eval_source: Iterable[dict] | None = None, resume: bool | str = False,
    on_step: Callable[[dict[str, Any]], None] | None = None, run_info: dict[str, Any] | None = None,
) -> VisionTrainResult:
    """:func:`train_vision` over any reader shaped like ``RecordDataset(bytes_as="uint8")``.

    ``source`` needs ``set_epoch``/``state_dict``/``load_state_dict`` (and ``advance`` to
    resume exactly); under DDP it must already be this rank's partition. ``eval_source``
    is iterated once per evaluation. Other arguments as in :func:`train_vision`.
    """
    task = get_task(kind)
    if not isinstance(model_config, task.config_type):
        raise TypeError(f"{task.name} needs a {task.config_type.__name__}, "
                        f"got {type(model_config).__name__}")
    if not isinstance(train_config, VisionTrainConfig):
        raise TypeError(f"train_config must be a VisionTrainConfig, got "
                        f"{type(train_config).__name__}")
    cfg = train_config
    if resume is not False and not callable(getattr(source, "advance", None)):
        raise ValueError(f"{type(source).__name__} has no advance(): it cannot resume exactly")
    if cfg.num_workers and not isinstance(source, torch.utils.data.IterableDataset):
        raise ValueError("VisionTrainConfig.num_workers > 0 needs a torch IterableDataset source")
    with distributed(resolve_device(cfg.device).type) as info:
        device = resolve_device(cfg.device, info.local_rank)
        precision = resolve_precision(cfg.precision, device)
        ckpt = resume_checkpoint(
            resume, out_uri, model_config=model_config, train_config=cfg,
            dataset_manifest_sha256=dataset_manifest_sha256, world_size=info.world_size,
            must_match=VISION_RESUME_FIELDS,
        )
        if ckpt is not None and ckpt["extra"].get("kind") != task.name:
            raise ValueError(f"cannot resume: the checkpoint holds a {ckpt['extra'].get('kind')!r}"
                             f" model, not {task.name!r}")
        with matmul_precision(device, precision), _cudnn_tf32(device, precision):
            return _train(task, source, eval_source, cfg, model_config, device, precision, info,
                          ckpt, out_uri, dataset_manifest_sha256, on_step, run_info)


@contextmanager
def _cudnn_tf32(device: torch.device, precision: str) -> Iterator[None]:
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


def _train(task: VisionTask, source: Any, eval_source: Iterable[dict] | None,
           cfg: VisionTrainConfig, model_config: Any, device: torch.device, precision: str,
           info: DistInfo, ckpt: dict[str, Any] | None, out_uri: str, sha: str,
           on_step: Callable[[dict[str, Any]], None] | None, run_info: dict[str, Any] | None,
           ) -> VisionTrainResult:
    dtype = DTYPES[precision]
    cuda = device.type == "cuda"
    use_compile = cuda if cfg.compile is None else cfg.compile
    channels_last = cuda if cfg.channels_last is None else cfg.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    image_size = cfg.image_size or task.image_size(model_config)
    mean, std = task.normalization(model_config)
    seed_everything(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's)
    raw_model = task.build(model_config)
    if ckpt is not None:
        raw_model.load_state_dict(ckpt["model"])
    raw_model.to(device, memory_format=memory_format)
    optimizer = make_optimizer(raw_model, cfg, device)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if ckpt is not None and ckpt["scaler"]:
        scaler.load_state_dict(ckpt["scaler"])
    compiled = torch.compile(raw_model) if use_compile else raw_model
    model = compiled
    if info.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(compiled, device_ids=[device.index] if cuda else None)
    autocast = torch.autocast(device.type, dtype=dtype) if precision != "fp32" else nullcontext()

    def prepare(x: torch.Tensor) -> torch.Tensor:  # uint8 (B, H, W, C) -> (B, C, H', W') float
        return to_model_input(x.to(device, non_blocking=True), mean=mean, std=std,
                              size=image_size, channels_last=channels_last)

    start_step, skipped_before = 0, 0
    first_loss = final_loss = float("nan")
    train_metrics: dict[str, float] = {}
    eval_metrics: dict[str, Any] = {}
    if ckpt is not None:
        source.load_state_dict(ckpt["data"][info.rank]["reader"])
        extra = ckpt["extra"]
        start_step, skipped_before = ckpt["step"], int(extra.get("skipped_steps", 0))
        final_loss = float(extra.get("final_loss", float("nan")))
        train_metrics, eval_metrics = extra.get("train_metrics", {}), extra.get("eval_metrics", {})
    fs, out_path = resolve(out_uri)
    metrics_uri, ckpt_uri = posixpath.join(out_uri, "metrics.jsonl"), posixpath.join(out_uri,
                                                                                      "ckpt.pt")
    if info.is_main:
        fs.makedirs(out_path, exist_ok=True)
        with open_uri(posixpath.join(out_uri, "config.json"), "w") as f:
            json.dump({"kind": task.name, "model_config": dataclasses.asdict(model_config),
                       "train_config": dataclasses.asdict(cfg), "dataset_manifest_sha256": sha,
                       "world_size": info.world_size, **(run_info or {})}, f, indent=2)

    loader = None
    if cfg.num_workers:  # forkserver workers, as in models.train (no fork of a threaded process)
        context = torch.multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "records.reader"])
        loader = torch.utils.data.DataLoader(
            source, batch_size=None, num_workers=cfg.num_workers, prefetch_factor=4,
            multiprocessing_context=context, persistent_workers=False,
            generator=torch.Generator().manual_seed(cfg.seed + info.rank),
        )
    start_epoch = int(source.state_dict().get("epoch", 0))
    decoded = image_batches(loop_epochs(source, start_epoch, iterable=loader), labels=task.labels,
                            num_classes=task.num_classes(model_config))

    def data_state() -> dict[str, Any]:  # what a checkpoint needs to continue this stream
        return {"reader": source.state_dict()}

    def pin(xy: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[torch.Tensor, Any]:
        torch.cuda.set_device(device)  # the prefetch thread pins on this rank's GPU
        return xy[0].pin_memory(), (xy[1].pin_memory() if xy[1] is not None else None)

    batches: Iterator[tuple[torch.Tensor, torch.Tensor | None]] = decoded

    def run_eval() -> dict[str, Any]:
        # Eager: a compiled model would recompile for eval mode, and evaluations are rare.
        if info.active:  # rank 0's BatchNorm statistics on every rank: the checkpoint's model
            for buffer in raw_model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        return evaluate(task, raw_model, eval_source, prepare=prepare, device=device,
                        autocast=autocast, max_batches=cfg.eval_batches,
                        num_classes=task.num_classes(model_config), info=info)

    def save(step: int, skipped: int) -> None:
        mine = batches.state if isinstance(batches, Prefetcher) else data_state()
        data = gather_objects({**mine, "rng": capture_rng_state()}, info)
        if info.is_main:
            save_checkpoint(
                ckpt_uri, model=raw_model, optimizer=optimizer, step=step,
                model_config=model_config, train_config=cfg, dataset_manifest_sha256=sha,
                reader_state=data[0]["reader"], scaler=scaler, data_state=data,
                extra={"kind": task.name, "final_loss": final_loss, "skipped_steps": skipped,
                       "train_metrics": train_metrics, "eval_metrics": eval_metrics},
            )
        barrier(info)  # no rank runs ahead of (or returns before) the written checkpoint

    images_per_step = cfg.grad_accum * cfg.batch_size  # per rank
    skipped_t = torch.zeros((), device=device)  # fp16 steps skipped: counted without syncing
    timer = IntervalTimer()
    metrics = MetricsLog(metrics_uri, enabled=info.is_main, resume_step=start_step)
    bar = ProgressBar(total=cfg.steps, initial=start_step,
                      enabled=cfg.progress if info.is_main else False)
    model.train()
    if cfg.prefetch:  # started last: nothing below may fail before the finally closes it
        batches = Prefetcher(decoded, snapshot=data_state, depth=cfg.prefetch,
                             transform=pin if cuda else None)
    try:
        log.info("%s: %.2fM params on %s x%d, %s, compile %s, channels_last %s, from step %d",
                 task.name, sum(p.numel() for p in raw_model.parameters()) / 1e6, device,
                 info.world_size, precision, use_compile, channels_last, start_step)
        if ckpt is not None:  # the RNGs last: nothing above may draw from them after this
            restore_rng_state(ckpt["data"][info.rank]["rng"])
        elif info.rank:
            seed_everything(cfg.seed + info.rank)  # distinct dropout / drop-path masks per rank
        for step in range(start_step, cfg.steps):
            lr = cosine_lr(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps,
                           total_steps=cfg.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            step_metrics: dict[str, torch.Tensor] = {}
            for micro in range(cfg.grad_accum):
                t_wait = time.perf_counter()
                x, y = next(batches)  # uint8 (B, H, W, C), int64 (B,) or None
                if cuda and not x.is_pinned():
                    x, y = pin((x, y))
                timer.add_wait(time.perf_counter() - t_wait)
                x = prepare(x)  # (B, C, H, W) float32, normalized
                y = y.to(device, non_blocking=True) if y is not None else None
                last = micro == cfg.grad_accum - 1
                with model.no_sync() if info.active and not last else nullcontext():
                    with autocast:
                        loss, stats = task.train_step(model, x, y)
                    loss = loss / cfg.grad_accum
                    scaler.scale(loss).backward()
                loss_sum += loss.detach()
                for k, v in stats.items():
                    v = v.detach().float() / cfg.grad_accum
                    step_metrics[k] = step_metrics[k] + v if k in step_metrics else v
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
            skipped = scaler_step(scaler, optimizer)  # skipped when fp16 gradients hold inf/nan
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
                names = sorted(step_metrics)
                values = all_mean_(torch.stack([step_metrics[k] for k in names]), info) \
                    if names else torch.zeros(0)
                train_metrics = {k: float(v) for k, v in zip(names, values.tolist(), strict=True)}
                train_metrics.update(task.state_metrics(raw_model))
                record = images_record(done, loss_sum.item(), lr, timer, images_per_step,
                                       info.world_size, scaler,
                                       skipped_before + int(skipped_t.item()), train_metrics)
                if step == start_step:
                    first_loss = record["loss"]
                final_loss = record["loss"]
                if do_eval:
                    eval_metrics = record["eval"] = {"step": done, **run_eval()}
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
    return VisionTrainResult(
        kind=task.name, first_loss=first_loss, final_loss=final_loss, steps=steps,
        images=steps * images_per_step * info.world_size, checkpoint_uri=ckpt_uri,
        metrics_uri=metrics_uri, device=device.type, precision=precision,
        skipped_steps=skipped_before + int(skipped_t.item()), train_metrics=dict(train_metrics),
        eval_metrics=dict(eval_metrics), start_step=start_step, rank=info.rank,
        world_size=info.world_size,
    )
