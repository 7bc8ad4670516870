"""Promptable segmentation (sam) and detection (thundernet): images/s and quality on a budget.

Not a test. Imports models/ and records/, the sample images of shardforge.sample_images
(numpy + PIL, through benchmarks.train_vision) and the Beam pipeline's box extraction
(pipelines/beam/image_boxes.py: numpy + scipy); torchvision for the detection peer and
pycocotools for COCO mAP when present. It

  1. draws the sample images (one shape of 3 classes on noise; the deliberately defective
     ones are left out), resizes images (bilinear) and masks (nearest) to --store-size,
     takes the boxes of the masks' connected components (image_boxes.mask_boxes, as the
     Beam image pipeline does) and writes image shards in the feature layer's contract
     (image, image_shape, label, mask, mask_shape, boxes, box_labels) into --out, reused
     when identical; the trainer reads them and resizes on the device;
  2. throughput (default): trains sam and thundernet through the one trainer
     (models.kinds.train_model) in
       fp32: FP32 eager, NCHW, TF32 off (true FP32)                -- the baseline
       fp16: FP16 autocast + GradScaler, channels-last, torch.compile
       bf16: BF16 autocast, channels-last, torch.compile
     and reports images/s after --warmup steps: the median of the logged intervals (one
     every --log-every steps) with their spread, and the ratio to fp32;
  3. --quality: every model trains the same budget (steps x --batch-size images, eager,
     --precision: FP16 + GradScaler by default, the trainer's "auto" on CUDA and
     torchvision's AMP recipe) and is evaluated on the whole eval split:
       sam                     mIoU from one point (the object's centre; the mask SAM
                               picks by predicted IoU), the best of its 3 masks, a box
       thundernet              COCO mAP and mAP@0.5 (pycocotools' COCOeval)
       thundernet-no-cem       without the Context Enhancement Module (C4 alone)
       thundernet-no-sam       without the Spatial Attention Module
       fasterrcnn_mobilenet_v3_large_fpn (torchvision; weights=None, weights_backbone=None,
                               min_size = max_size = ThunderNet's side): the same shards,
                               batch, steps, AdamW, LR schedule, clipping and precision, its
                               own loop (torchvision models take lists of images and targets)
     (the peer is skipped with a printed note when torchvision cannot run);
  4. prints one JSON line prefixed ``RESULT``.

    python benchmarks/detection.py --out /tmp/sf-det                 # H100: images/s
    python benchmarks/detection.py --out /tmp/sf-det --quality       # H100: quality
    python benchmarks/detection.py --out /tmp/sfd --smoke --quality  # CPU, tiny, a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.bench_common import reusable_dataset  # noqa: E402
from models.data import loop_epochs  # noqa: E402
from models.detection_eval import detection_metrics, detection_sums  # noqa: E402
from models.kinds import train_model  # noqa: E402
from models.ps_roi_align import torchvision_ops  # noqa: E402
from models.sam import SAMConfig  # noqa: E402
from models.thundernet import ThunderNetConfig  # noqa: E402
from models.train_common import DTYPES, GATHER, make_loader, make_optimizer  # noqa: E402
from models.train_config import TrainConfig, cosine_lr  # noqa: E402
from models.vision_data import dense_batches, image_spec  # noqa: E402
from records.example_codec import encode_example  # noqa: E402
from records.reader import RecordDataset  # noqa: E402
from records.spec import FixedLenFeature, VarLenFeature  # noqa: E402
from records.writer import DatasetWriter  # noqa: E402

CLASSES = 3  # shardforge.sample_images.SHAPES
CONFIGS = {"fp32": ("fp32", False, False), "fp16": ("fp16", True, True),
           "bf16": ("bf16", True, True)}  # name -> (precision, compile, channels_last)
SPEC = {
    "image": FixedLenFeature((), "bytes"), "image_shape": FixedLenFeature((3,), "int64"),
    "label": FixedLenFeature((1,), "int64"), "mask": FixedLenFeature((), "bytes"),
    "mask_shape": FixedLenFeature((3,), "int64"), "boxes": VarLenFeature("int64"),
    "box_labels": VarLenFeature("int64"),
}


def write_dataset(out: str, *, size: int, count: int, eval_count: int, seed: int = 0) -> str:
    """Writes the sample images, masks and boxes at ``size`` px unless an identical dataset
    is there; returns its URI."""
    from PIL import Image

    from benchmarks.train_vision import sample_images
    from pipelines.beam.image_boxes import mask_boxes

    uri = f"file://{os.path.abspath(out)}/records/bench-dense/v={size}"
    config = {"size": size, "train": count, "eval": eval_count, "seed": seed,
              "source": "shardforge.sample_images", "boxes": "image_boxes.mask_boxes"}
    if reusable_dataset(uri, config):
        return uri
    t0 = time.perf_counter()
    samples = sample_images(count + eval_count, seed)
    with DatasetWriter(uri=uri, dataset="bench-dense", version=str(size), feature_spec=SPEC,
                       max_records_per_shard=max(16, count // 16), config=config) as writer:
        for i, (image, mask, label) in enumerate(samples):
            pixels = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)
            m = np.asarray(mask.resize((size, size), Image.NEAREST), dtype=np.uint8)
            boxes, box_labels = mask_boxes(m)
            writer.write("train" if i < count else "eval", encode_example({
                "image": [pixels.tobytes()], "image_shape": list(pixels.shape),
                "label": [label], "mask": [m.tobytes()], "mask_shape": [size, size, 1],
                "boxes": boxes, "box_labels": box_labels}))
    print(f"wrote {len(samples)} images with masks and boxes of {size}x{size} in "
          f"{time.perf_counter() - t0:.1f}s to {uri}", file=sys.stderr)
    return uri


def model_config(kind: str, args, **overrides):
    if kind == "sam":
        return SAMConfig.preset(args.sam_preset, image_size=args.sam_size, **overrides)
    return ThunderNetConfig.preset(args.tn_preset, num_classes=CLASSES, image_size=args.tn_size,
                                   **overrides)


def train_config(kind: str, args, *, steps: int, precision: str, compile_: bool,
                 channels_last: bool, device: torch.device, eval_batches: int = 0
                 ) -> TrainConfig:
    return TrainConfig(
        kind=kind, steps=steps, batch_size=args.batch_size, lr=args.lr, min_lr=args.lr / 10,
        warmup_steps=min(100, max(1, steps // 10)), device=device.type, precision=precision,
        compile=compile_ and device.type == "cuda",
        channels_last=channels_last and device.type == "cuda", log_every=args.log_every,
        num_workers=args.num_workers, progress=False, seed=args.seed, eval_batches=eval_batches)


def interval_rates(metrics_uri: str, warmup: int) -> list[float]:
    """images/s of every logged interval after ``warmup`` steps."""
    with open(metrics_uri.removeprefix("file://")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return [m["images_per_s"] for m in lines if m["step"] > warmup]


def run(kind: str, name: str, args, uri: str, device: torch.device, *, steps: int,
        precision: str, compile_: bool = False, channels_last: bool = False,
        eval_batches: int = 0, **overrides) -> dict:
    """One training run through the trainer; a failure is reported, not raised (the other
    runs of a device session still happen)."""
    try:
        return _run(kind, name, args, uri, device, steps=steps, precision=precision,
                    compile_=compile_, channels_last=channels_last, eval_batches=eval_batches,
                    **overrides)
    except Exception as exc:  # reported in the RESULT line
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}", "images_per_s": float("nan"),
                "spread": [float("nan")] * 2, "wall_s": None, "eval": {}}


def _run(kind: str, name: str, args, uri: str, device: torch.device, *, steps: int,
         precision: str, compile_: bool, channels_last: bool, eval_batches: int,
         **overrides) -> dict:
    cfg = train_config(kind, args, steps=steps, precision=precision, compile_=compile_,
                       channels_last=channels_last, device=device, eval_batches=eval_batches)
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    result = train_model(kind, dataset_uri=uri, model_config=model_config(kind, args, **overrides),
                         out_uri=f"file://{os.path.abspath(args.out)}/runs/{name}",
                         train_config=cfg)
    rates = interval_rates(result.metrics_uri, args.warmup) or [float("nan")]
    return {"images_per_s": statistics.median(rates), "spread": [min(rates), max(rates)],
            "intervals": len(rates), "precision": result.precision, "compile": cfg.compile,
            "steps": steps, "wall_s": round(time.perf_counter() - t0, 1),
            "final_loss": result.final_loss, "eval": result.eval_metrics,
            "max_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                               if device.type == "cuda" else None)}


def merge(parts: list[dict]) -> dict:
    """Eval sums of several batches, as models.train_common.evaluate merges them."""
    out: dict = {}
    for sums in parts:
        for k, v in sums.items():
            out[k] = v if k not in out else (torch.cat([out[k], v]) if k.startswith(GATHER)
                                             else out[k] + v)
    return out


def peer(args, uri: str, device: torch.device, steps: int) -> dict:
    """torchvision's fasterrcnn_mobilenet_v3_large_fpn trained and evaluated like ours."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.manual_seed(args.seed)
    model = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=CLASSES + 1,
        min_size=args.tn_size, max_size=args.tn_size).to(device)
    cfg = train_config("thundernet", args, steps=steps, precision=args.precision,
                       compile_=False, channels_last=False, device=device)
    optimizer = make_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    spec = {"feature_spec": image_spec(labels=True, dense=True), "bytes_as": "uint8"}
    reader = RecordDataset(uri, "train", batch_size=args.batch_size, shuffle=True,
                           seed=args.seed, drop_last=True, **spec)
    loader = (make_loader(reader, num_workers=args.num_workers, seed=args.seed)
              if args.num_workers else None)
    stream = dense_batches(loop_epochs(reader, 0, iterable=loader))
    autocast = torch.autocast(device.type, dtype=DTYPES[args.precision],
                              enabled=args.precision != "fp32")

    def inputs(batch):
        images, _, _, boxes, box_labels, counts = batch
        x = images.to(device).permute(0, 3, 1, 2).float() / 255  # the model normalizes
        return list(x), [{"boxes": boxes[i, :n].to(device).float(),
                          "labels": box_labels[i, :n].to(device)}
                         for i, n in enumerate(counts.tolist())]

    model.train()
    t0 = time.perf_counter()
    t_warm = None
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, lr=cfg.lr, min_lr=cfg.min_lr,
                                    warmup_steps=cfg.warmup_steps, total_steps=steps)
        x, targets = inputs(next(stream))
        with autocast:
            loss = sum(model(x, targets).values())
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0:  # progress of a run that a time limit may cut
            print(f"peer step {step + 1}/{steps} loss {float(loss.detach()):.4f} "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if step + 1 == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t_warm = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timed = time.perf_counter() - (t_warm or t0)
    rate = (steps - (args.warmup if t_warm else 0)) * args.batch_size / timed
    model.eval()
    parts = []
    with torch.no_grad():
        eval_reader = RecordDataset(uri, "eval", batch_size=args.batch_size, **spec)
        for batch in dense_batches(eval_reader):
            x, targets = inputs(batch)
            with autocast:
                outputs = model(x)
            dets = torch.zeros(len(x), 100, 6, device=device)
            for i, o in enumerate(outputs):
                k = min(100, len(o["scores"]))
                dets[i, :k] = torch.cat([o["boxes"][:k].float(), o["scores"][:k, None].float(),
                                         o["labels"][:k, None].float()], dim=1)
            parts.append(detection_sums(dets, [t["boxes"] for t in targets],
                                        [t["labels"] for t in targets]))
    return {"images_per_s": rate, "steps": steps, "final_loss": float(loss.detach()),
            "wall_s": round(time.perf_counter() - t0, 1), "eval": detection_metrics(merge(parts))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/shardforge-detection-bench")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-compile", action="store_true",
                   help="fp16/bf16 eager too: a pure precision comparison, no compile time")
    p.add_argument("--models", default="sam,thundernet", help="comma list")
    p.add_argument("--configs", default="fp32,fp16,bf16", help="throughput: comma list")
    p.add_argument("--quality", action="store_true", help="quality at a fixed budget instead")
    p.add_argument("--smoke", action="store_true", help="tiny models and data (CPU check)")
    p.add_argument("--sam-preset", default="small")
    p.add_argument("--sam-size", type=int, default=64, help="SAM input side")
    p.add_argument("--tn-preset", default="snet146")
    p.add_argument("--tn-size", type=int, default=320, help="ThunderNet (and peer) input side")
    p.add_argument("--store-size", type=int, default=64, help="side of the stored images")
    p.add_argument("--images", type=int, default=16384, help="train images written")
    p.add_argument("--eval-images", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=60, help="timed throughput steps")
    p.add_argument("--warmup", type=int, default=20, help="untimed first steps")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--precision", default=None, choices=("fp32", "fp16", "bf16"),
                   help="quality runs (default fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--sam-steps", type=int, default=1000, help="quality budget of sam")
    p.add_argument("--tn-steps", type=int, default=1000,
                   help="quality budget of every detector (ThunderNet, ablations, peer)")
    p.add_argument("--ablations", default="cem,spatial_attention",
                   help="ThunderNet flags switched off one at a time in --quality ('' = none)")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--no-full", action="store_true",
                   help="quality: only the ablations (and the peer), not the full ThunderNet")
    p.add_argument("--peer-only", action="store_true",
                   help="quality: the torchvision peer alone (a process of its own on a shared GPU)")
    p.add_argument("--num-workers", type=int, default=None, help="default 6 on CUDA, 0 on CPU")
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.smoke:
        args.sam_preset, args.tn_preset, args.sam_size, args.tn_size = "tiny", "tiny", 32, 64
        args.store_size, args.images, args.eval_images, args.batch_size = 32, 48, 16, 8
        args.steps, args.warmup, args.log_every = 2, 1, 1
        args.sam_steps, args.tn_steps = 4, 4
    args.num_workers = args.num_workers if args.num_workers is not None else (6 if cuda else 0)
    args.precision = args.precision or ("fp16" if cuda else "fp32")
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if set(kinds) - {"sam", "thundernet"} or set(configs) - set(CONFIGS):
        p.error(f"unknown --models {kinds} or --configs {configs}")
    uri = write_dataset(args.out, size=args.store_size, count=args.images,
                        eval_count=args.eval_images, seed=args.seed % 1000)
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    print(f"{name}: batch {args.batch_size}, workers {args.num_workers}", file=sys.stderr)
    result = {"device": name, "torch": torch.__version__, "batch_size": args.batch_size,
              "args": vars(args)}

    if not args.quality:
        rows: dict[str, dict] = {}
        for kind in kinds:
            rows[kind] = {}
            for c in configs:
                precision, compile_, cl = CONFIGS[c]
                compile_ = compile_ and not args.no_compile
                r = rows[kind][c] = run(kind, f"{kind}-{c}", args, uri, device,
                                        steps=args.warmup + args.steps, precision=precision,
                                        compile_=compile_, channels_last=cl, eval_batches=1)
                print(f"{kind:>10} {c}: {r['images_per_s']:>8,.0f} images/s (intervals "
                      f"{r['spread'][0]:,.0f}-{r['spread'][1]:,.0f}), {r['wall_s']} s",
                      file=sys.stderr)
        result["throughput"] = rows
        result["speedup_vs_fp32"] = {k: {c: r[c]["images_per_s"] / r["fp32"]["images_per_s"]
                                         for c in r} for k, r in rows.items() if "fp32" in r}
        print(f"speedup vs fp32: {result['speedup_vs_fp32']}", file=sys.stderr)
    else:
        quality: dict[str, dict] = {}
        precision = args.precision
        if "sam" in kinds:
            quality["sam"] = run("sam", "q-sam", args, uri, device, steps=args.sam_steps,
                                 precision=precision)
            print(f"sam: {quality['sam']['eval']}", file=sys.stderr)
        if "thundernet" in kinds:
            variants = {} if args.peer_only or args.no_full else {"thundernet": {}}
            ablations = "" if args.peer_only else args.ablations
            for flag in filter(None, (a.strip() for a in ablations.split(","))):
                variants[f"thundernet-no-{'sam' if flag == 'spatial_attention' else flag}"] = {
                    flag: False}
            for label, flags in variants.items():
                quality[label] = run("thundernet", f"q-{label}", args, uri, device,
                                     steps=args.tn_steps, precision=precision, **flags)
                print(f"{label}: {quality[label]['eval']}", file=sys.stderr)
            if args.no_peer:
                pass
            elif torchvision_ops() is None:
                print("note: torchvision cannot run here: the fasterrcnn_mobilenet_v3_large_fpn "
                      "peer is skipped", file=sys.stderr)
            else:
                try:
                    r = peer(args, uri, device, args.tn_steps)
                except Exception as exc:  # reported in the RESULT line
                    traceback.print_exc()
                    r = {"error": f"{type(exc).__name__}: {exc}", "images_per_s": float("nan"),
                         "eval": {"map_50": float("nan")}}
                quality["fasterrcnn_mobilenet_v3_large_fpn"] = r
                print(f"peer: {r['eval']} {r['images_per_s']:,.0f} images/s", file=sys.stderr)
                if "thundernet" in quality:
                    ours = quality["thundernet"]["eval"].get("map_50", float("nan"))
                    result["map_50_vs_peer"] = ours - r["eval"]["map_50"]
        result["quality"] = quality
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return result


if __name__ == "__main__":
    main()
