"""Vision zoo: images/s FP32/FP16/BF16 per kind, MobileNetV2 vs EfficientNet-B0, segmenter MIoU.

Not a test. Imports models/ and records/, plus shardforge.sample_images (numpy + PIL) to draw
the sample images (shapes on noise with their masks); timm, when installed, for the peers.

Speed (the default):

  1. Model-only training steps at ``--size`` (224) px on random tensors, the same loop for
     every net (AdamW, cross entropy; fp32: NCHW, TF32 off; fp16: autocast + GradScaler,
     channels-last; bf16: autocast, channels-last; eager): our MobileNetV2 1.0 and
     EfficientNet-B0 against timm's ``mobilenetv2_100`` and ``efficientnet_b0``. The peer
     ratio is MobileNetV2 images/s over EfficientNet-B0 images/s (timm's tables give about
     1.2x for training).
  2. Through the one trainer (``models.kinds.train_model``, what ``shardforge train`` runs)
     from shards of the sample images, stored at ``--store-size`` and resized on the device:
     ``mobilenet_v2``, ``efficientnet`` (b0) and the ``segmenter`` heads at ``--size``, each in
     fp32 (eager, the baseline), fp16 and bf16 (channels-last, torch.compile); images/s after
     ``--warmup`` steps, as ratios against fp32.

Quality (``--quality``): every segmenter head x upsampling trains the same budget
(``--quality-steps`` of ``--batch-size``) on the sample images at ``--quality-size`` px
(masks resized with NEAREST) and reports PA, MPA and MIoU on the eval split.

    python3 benchmarks/vision_zoo.py --out /tmp/sf-zoo                 # H100: speed
    python3 benchmarks/vision_zoo.py --quality --out /tmp/sf-zoo       # H100: MIoU per head
    python3 benchmarks/vision_zoo.py --smoke --device cpu --out /tmp/sf-zoo-smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.bench_common import reusable_dataset  # noqa: E402
from benchmarks.train_vision import sample_images  # noqa: E402
from models.efficientnet import EfficientNet, EfficientNetConfig  # noqa: E402
from models.kinds import build_configs, train_model  # noqa: E402
from models.mobilenet import MobileNetV2, MobileNetV2Config  # noqa: E402
from models.runlog import throughput_after  # noqa: E402
from models.segmenter import HEADS, UPSAMPLES  # noqa: E402
from models.train_config import TrainConfig  # noqa: E402
from models.vision_data import image_spec  # noqa: E402
from records.example_codec import encode_example  # noqa: E402
from records.writer import DatasetWriter  # noqa: E402

# name -> (precision, compile, channels_last) through the trainer; compile is off on CPU.
CONFIGS = {"fp32": ("fp32", False, False), "fp16": ("fp16", True, True),
           "bf16": ("bf16", True, True)}
SPEC = image_spec(labels=True, dense=True)  # image, label, mask, boxes: the dataset contract
CLASSES = 3  # circle, square, triangle


def _boxes(mask: np.ndarray) -> tuple[list[int], list[int]]:
    """One box per class present (a sample image holds one shape): its pixels' extent."""
    boxes, labels = [], []
    for cls in np.unique(mask).tolist():
        if cls:
            rows, cols = np.nonzero(mask == cls)
            boxes += [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
            labels.append(int(cls))
    return boxes, labels


def write_dataset(out: str, *, size: int, count: int, eval_count: int, seed: int = 0) -> str:
    """The sample images at ``size`` px with masks and boxes, unless identical ones are there."""
    from PIL import Image

    uri = f"file://{os.path.abspath(out)}/records/zoo-images/v={size}-{count}"
    config = {"size": size, "train": count, "eval": eval_count, "seed": seed,
              "source": "shardforge.sample_images", "masks": True}
    if reusable_dataset(uri, config):
        return uri
    t0 = time.perf_counter()
    with DatasetWriter(uri=uri, dataset="zoo-images", version=f"{size}-{count}",
                       feature_spec=SPEC, max_records_per_shard=max(16, count // 16),
                       config=config) as writer:
        for i, (image, mask, label) in enumerate(sample_images(count + eval_count, seed)):
            pixels = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)
            ids = np.asarray(mask.resize((size, size), Image.NEAREST), dtype=np.uint8)
            boxes, box_labels = _boxes(ids)
            writer.write("train" if i < count else "eval", encode_example({
                "image": [pixels.tobytes()], "image_shape": list(pixels.shape),
                "label": [label], "mask": [ids.tobytes()], "mask_shape": [size, size, 1],
                "boxes": ("int64", boxes), "box_labels": ("int64", box_labels)}))
    print(f"wrote {count + eval_count} images of {size}x{size} in "
          f"{time.perf_counter() - t0:.1f}s to {uri}", file=sys.stderr)
    return uri


# --- 1. model-only steps: ours against timm ---------------------------------------------

def peer_nets(args) -> dict:
    """name -> a fresh classifier (ours always; timm's when installed)."""
    if args.smoke:
        nets = {"ours mobilenet_v2": lambda: MobileNetV2(MobileNetV2Config.preset("tiny")),
                "ours efficientnet_b0": lambda: EfficientNet(EfficientNetConfig.preset("tiny"))}
    else:
        nets = {"ours mobilenet_v2": lambda: MobileNetV2(MobileNetV2Config()),
                "ours efficientnet_b0": lambda: EfficientNet(EfficientNetConfig.preset("b0"))}
    try:
        import timm
    except ImportError:
        print("timm is not installed: no peer rows", file=sys.stderr)
        return nets
    nets["timm mobilenetv2_100"] = lambda: timm.create_model("mobilenetv2_100")
    nets["timm efficientnet_b0"] = lambda: timm.create_model("efficientnet_b0")
    return nets


def model_steps(build, precision: str, args, device: torch.device) -> float:
    """Training images/s of ``build()`` over ``--steps`` steps after ``--warmup``."""
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    fmt = torch.channels_last if precision != "fp32" and cuda else torch.contiguous_format
    model = build().to(device, memory_format=fmt).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=cuda)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    side = 32 if args.smoke else args.size
    x = torch.randn(args.batch_size, 3, side, side, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000 if not args.smoke else 3, (args.batch_size,), device=device)
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(x)
            logits = out[0] if isinstance(out, tuple) else out
            loss = F.cross_entropy(logits.float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    return args.steps * args.batch_size / (time.perf_counter() - t0)


def peer_table(args, device: torch.device, configs: list[str]) -> dict:
    rows: dict[str, dict[str, dict]] = {}
    for name, build in peer_nets(args).items():
        rows[name] = {}
        for c in configs:
            runs = [model_steps(build, c, args, device) for _ in range(args.repeats)]
            rows[name][c] = {"images_per_s": float(np.median(runs)),
                             "spread": float(max(runs) - min(runs)) / float(np.median(runs))}
            print(f"{name:>22} {c}: {rows[name][c]['images_per_s']:>9,.0f} images/s "
                  f"(±{rows[name][c]['spread']:.1%} over {args.repeats})", file=sys.stderr)
    ratios = {}
    for owner in ("ours", "timm"):
        mnv2 = rows.get(f"{owner} mobilenet_v2" if owner == "ours" else "timm mobilenetv2_100")
        eff = rows.get(f"{owner} efficientnet_b0")
        if mnv2 and eff:
            ratios[owner] = {c: mnv2[c]["images_per_s"] / eff[c]["images_per_s"] for c in configs}
    for owner, by in ratios.items():
        print(f"{owner} MobileNetV2 / EfficientNet-B0: "
              + "  ".join(f"{c} {r:.2f}x" for c, r in by.items()), file=sys.stderr)
    return {"rows": rows, "mobilenet_over_effnet": ratios}


# --- 2. through the trainer ------------------------------------------------------------

def kind_configs(args) -> dict[str, tuple[str, str | None, dict]]:
    """run name -> (kind, preset, model overrides) timed through the trainer."""
    size = 32 if args.smoke else args.size
    tiny = "tiny" if args.smoke else None
    out = {"mobilenet_v2": ("mobilenet_v2", tiny or "v2_100", {"resolution": size}),
           "efficientnet": ("efficientnet", tiny or "b0", {"resolution": size})}
    for head in HEADS:
        out[f"segmenter-{head}"] = ("segmenter", tiny or "base",
                                    {"head": head, "upsample": "bilinear", "resolution": size})
    return out


def trainer_run(name: str, kind: str, preset: str | None, model: dict, config: str, steps: int,
                dataset_uri: str, args, device: torch.device) -> dict:
    precision, compile_, channels_last = CONFIGS[config]
    compile_ = compile_ and not args.no_compile
    cuda = device.type == "cuda"
    model_cfg, _ = build_configs(kind, preset=preset, model=model, train={},
                                 context={"num_classes": CLASSES})
    cfg = TrainConfig(kind=kind, steps=steps, batch_size=args.batch_size, lr=args.lr,
                      min_lr=args.lr / 10, warmup_steps=min(100, max(1, steps // 10)),
                      device=device.type, precision=precision, compile=compile_ and cuda,
                      channels_last=channels_last and cuda, log_every=args.warmup,
                      eval_every=0, eval_batches=args.eval_batches,
                      num_workers=args.num_workers, progress=False)
    torch._dynamo.reset()
    t0 = time.perf_counter()
    result = train_model(kind, dataset_uri=dataset_uri, model_config=model_cfg,
                         out_uri=f"file://{os.path.abspath(args.out)}/runs/{name}-{config}",
                         train_config=cfg)
    row = throughput_after(result.metrics_uri, warmup=args.warmup,
                           items_per_step=args.batch_size, unit="images")
    row.update(precision=result.precision, compile=cfg.compile, wall_s=time.perf_counter() - t0,
               eval={k: v for k, v in result.eval_metrics.items() if k != "erf"})
    return row


def trainer_table(args, device: torch.device, configs: list[str]) -> dict:
    uri = write_dataset(args.out, size=args.store_size, count=args.images,
                        eval_count=args.batch_size * max(1, args.eval_batches))
    rows: dict[str, dict[str, dict]] = {}
    for name, (kind, preset, model) in kind_configs(args).items():
        if args.kinds and kind not in args.kinds and name not in args.kinds:
            continue
        rows[name] = {}
        for c in configs:
            r = rows[name][c] = trainer_run(name, kind, preset, model, c,
                                            args.warmup + args.steps, uri, args, device)
            print(f"{name:>18} {c}: {r['images_per_s']:>9,.0f} images/s  step "
                  f"{r['step_ms']:.1f} ms  input wait {r['input_wait']:.1%}  first step "
                  f"{r['first_step_s']:.1f}s", file=sys.stderr)
    ratios = {n: {c: by[c]["images_per_s"] / by["fp32"]["images_per_s"] for c in by}
              for n, by in rows.items() if "fp32" in by}
    for n, by in ratios.items():
        print(f"{n:>18} vs fp32: " + "  ".join(f"{c} {x:.2f}x" for c, x in by.items()),
              file=sys.stderr)
    return {"rows": rows, "speedup_vs_fp32": ratios}


# --- quality ---------------------------------------------------------------------------

def quality_table(args, device: torch.device) -> dict:
    size = 32 if args.smoke else args.quality_size
    uri = write_dataset(args.out, size=size, count=args.quality_images,
                        eval_count=args.quality_eval)
    overrides = json.loads(args.quality_model)
    rows = {}
    for head in args.heads:
        for upsample in args.upsamples:
            model_cfg, _ = build_configs(
                "segmenter", preset="tiny" if args.smoke else args.quality_preset,
                model={**overrides, "head": head, "upsample": upsample},
                train={}, context={"num_classes": CLASSES})
            cfg = TrainConfig(kind="segmenter", steps=args.quality_steps,
                              batch_size=args.batch_size, lr=args.quality_lr,
                              min_lr=args.quality_lr / 100, weight_decay=1e-4,
                              warmup_steps=max(1, args.quality_steps // 20), device=device.type,
                              precision="bf16" if device.type == "cuda" else "fp32",
                              compile=False, log_every=max(1, args.quality_steps // 5),
                              num_workers=args.num_workers, progress=False)
            t0 = time.perf_counter()
            result = train_model("segmenter", dataset_uri=uri, model_config=model_cfg,
                                 out_uri=f"file://{os.path.abspath(args.out)}/quality/"
                                         f"{head}-{upsample}", train_config=cfg)
            ev = result.eval_metrics
            rows[f"{head}/{upsample}"] = {k: ev.get(k) for k in (
                "pixel_accuracy", "mean_accuracy", "mean_iou", "class_iou", "erf_radius")}
            rows[f"{head}/{upsample}"].update(
                final_loss=result.final_loss, wall_s=time.perf_counter() - t0,
                receptive_field=result.train_metrics.get("receptive_field"))
            print(f"{head:>8} {upsample:>13}: PA {ev['pixel_accuracy']:.4f}  MPA "
                  f"{ev['mean_accuracy']:.4f}  MIoU {ev['mean_iou']:.4f}  "
                  f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    return {"size": size, "steps": args.quality_steps, "batch_size": args.batch_size,
            "model": overrides, "preset": args.quality_preset, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/shardforge-vision-zoo", help="shards and run folders")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-compile", action="store_true",
                   help="fp16/bf16 eager too: a pure precision comparison, no compile time")
    p.add_argument("--configs", default="fp32,fp16,bf16", help="comma list of fp32,fp16,bf16")
    p.add_argument("--parts", default="peers,trainer", help="speed parts: peers,trainer")
    p.add_argument("--kinds", default="", help="trainer runs to time (default all), e.g. "
                   "mobilenet_v2,segmenter-unet")
    p.add_argument("--size", type=int, default=224, help="input side of the speed runs")
    p.add_argument("--store-size", type=int, default=64, help="side of the stored images")
    p.add_argument("--steps", type=int, default=50, help="timed steps per speed run")
    p.add_argument("--warmup", type=int, default=10, help="untimed first steps")
    p.add_argument("--repeats", type=int, default=3, help="model-only runs per row (median)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--images", type=int, default=8192, help="train images of the speed shards")
    p.add_argument("--eval-batches", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=None, help="default 6 on CUDA, 0 on CPU")
    p.add_argument("--quality", action="store_true", help="segmenter MIoU per head x upsample")
    p.add_argument("--quality-size", type=int, default=64)
    p.add_argument("--quality-steps", type=int, default=2000)
    p.add_argument("--quality-images", type=int, default=4096)
    p.add_argument("--quality-eval", type=int, default=512)
    p.add_argument("--quality-lr", type=float, default=2e-3)
    p.add_argument("--quality-preset", default="base")
    p.add_argument("--heads", default=",".join(HEADS), help="quality: comma list of heads")
    p.add_argument("--upsamples", default=",".join(UPSAMPLES),
                   help="quality: comma list of upsampling kinds")
    p.add_argument("--quality-model", default='{"output_stride": 8, "aspp_rate": 1}',
                   help="segmenter model overrides (JSON) of the quality runs")
    p.add_argument("--smoke", action="store_true", help="tiny presets, a few steps (CPU)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.smoke:
        args.steps, args.warmup, args.repeats, args.batch_size = 2, 1, 1, 4
        args.images, args.eval_batches, args.quality_steps = 16, 1, 3
        args.quality_images, args.quality_eval = 16, 4
    args.num_workers = args.num_workers if args.num_workers is not None else (6 if cuda else 0)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    args.heads = [x.strip() for x in args.heads.split(",") if x.strip()]
    args.upsamples = [x.strip() for x in args.upsamples.split(",") if x.strip()]
    if set(configs) - set(CONFIGS) or set(parts) - {"peers", "trainer"}:
        p.error(f"unknown --configs {configs} or --parts {parts}")
    if set(args.heads) - set(HEADS) or set(args.upsamples) - set(UPSAMPLES):
        p.error(f"unknown --heads {args.heads} or --upsamples {args.upsamples}")
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    print(f"{name}: batch {args.batch_size}, warmup {args.warmup}, steps {args.steps}",
          file=sys.stderr)
    result: dict = {"device": name, "torch": torch.__version__, "batch_size": args.batch_size,
                    "size": args.size, "smoke": args.smoke}
    if args.quality:
        result["quality"] = quality_table(args, device)
    else:
        if "peers" in parts:
            result["peers"] = peer_table(args, device, configs)
        if "trainer" in parts:
            result["trainer"] = trainer_table(args, device, configs)
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
