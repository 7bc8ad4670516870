"""Vision trainer throughput (FP32 eager baseline vs FP16 / BF16) and VQ-VAE PSNR on a budget.

Not a test. Imports models/ and records/, plus shardforge.sample_images (numpy + PIL)
to draw the sample images; a GPU image needs torch, numpy, PIL, pyarrow, fsspec and
protobuf, no TensorFlow. It

  1. draws the sample images (shapes on noise, 3 classes; the deliberately defective
     ones are left out), resizes them with PIL and writes them as image shards in the
     feature layer's contract (raw uint8 HWC ``image``, ``image_shape``, ``label``,
     ``mask``) with records.writer into ``--out`` (reused when identical): one dataset
     at the VQ-VAE's side, one at EfficientNet's resolution; or reads ``--dataset-uri``;
  2. trains each model from those shards through the one trainer
     (models.kinds.train_model) in
       fp32: FP32 eager, NCHW, TF32 off (true FP32)                -- the baseline
       fp16: FP16 autocast + GradScaler, channels-last, torch.compile
       bf16: BF16 autocast, channels-last, torch.compile
     and reads images/s after the first ``--warmup`` steps from metrics.jsonl;
  3. every VQ-VAE config trains the same ``--vq-steps`` budget and reports PSNR,
     MSE and codebook perplexity on the eval split; EfficientNet reports top-1;
  4. prints images/s side by side as ratios against the fp32 baseline, and one JSON
     line (prefixed ``RESULT``).

    python benchmarks/train_vision.py --out /tmp/sf-vision-bench                     # H100
    python benchmarks/train_vision.py --tiny --device cpu --steps 3 --out /tmp/sfvb  # smoke
"""

from __future__ import annotations

import argparse
import io
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

from benchmarks.bench_common import reusable_dataset  # noqa: E402
from models.efficientnet import EfficientNetConfig  # noqa: E402
from models.kinds import train_model  # noqa: E402
from models.runlog import throughput_after  # noqa: E402
from models.train_config import TrainConfig  # noqa: E402
from models.vqvae import VQVAEConfig  # noqa: E402
from records.example_codec import encode_example  # noqa: E402
from records.spec import FixedLenFeature  # noqa: E402
from records.writer import DatasetWriter  # noqa: E402

# name -> (precision, compile, channels_last); compile is forced off on CPU.
CONFIGS = {
    "fp32": ("fp32", False, False),
    "fp16": ("fp16", True, True),
    "bf16": ("bf16", True, True),
}
SPEC = {
    "image": FixedLenFeature((), "bytes"),
    "image_shape": FixedLenFeature((3,), "int64"),
    "label": FixedLenFeature((1,), "int64"),
    "mask": FixedLenFeature((), "bytes", default=b""),
}


def sample_images(count: int, seed: int) -> list[tuple[object, object, int]]:
    """``count`` clean (PIL image, PIL mask, label) from shardforge.sample_images."""
    from PIL import Image

    from shardforge.sample_images import DEFECTS, SHAPES, write_images

    files: dict[str, bytes] = {}
    dirty = write_images(files.__setitem__, count + len(DEFECTS), np.random.default_rng(seed))
    out = []
    for line in files["manifest.jsonl"].decode().splitlines():
        entry = json.loads(line)
        if entry["image"] in dirty:
            continue
        image = Image.open(io.BytesIO(files[entry["image"]])).convert("RGB")
        mask = Image.open(io.BytesIO(files[entry["mask"]]))
        out.append((image, mask, SHAPES.index(entry["label"])))
    return out[:count]


def write_dataset(out: str, *, size: int, count: int, eval_count: int, seed: int = 0) -> str:
    """Writes the sample images at ``size`` x ``size`` unless an identical dataset is there."""
    from PIL import Image

    uri = f"file://{os.path.abspath(out)}/records/bench-images/v={size}"
    config = {"size": size, "train": count, "eval": eval_count, "seed": seed,
              "source": "shardforge.sample_images"}
    if reusable_dataset(uri, config):
        return uri
    t0 = time.perf_counter()
    samples = sample_images(count + eval_count, seed)
    with DatasetWriter(uri=uri, dataset="bench-images", version=str(size), feature_spec=SPEC,
                       max_records_per_shard=max(16, count // 16), config=config) as writer:
        for i, (image, mask, label) in enumerate(samples):
            pixels = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)
            m = np.asarray(mask.resize((size, size), Image.NEAREST), dtype=np.uint8)
            writer.write("train" if i < count else "eval", encode_example({
                "image": [pixels.tobytes()], "image_shape": list(pixels.shape),
                "label": [label], "mask": [m.tobytes()]}))
    print(f"wrote {len(samples)} images of {size}x{size} in {time.perf_counter() - t0:.1f}s "
          f"to {uri}", file=sys.stderr)
    return uri


def run_config(kind: str, name: str, args, dataset_uri: str, model_config, steps: int,
               device: torch.device) -> dict:
    precision, compile_, channels_last = CONFIGS[name]
    cuda = device.type == "cuda"
    cfg = TrainConfig(
        kind=kind, steps=steps, batch_size=args.batch_size, lr=args.lr, min_lr=args.lr / 10,
        warmup_steps=min(100, max(1, steps // 10)), weight_decay=0.0 if kind == "vqvae" else 0.05,
        device=device.type, precision=precision, compile=compile_ and cuda,
        channels_last=channels_last and cuda, image_size=args.vq_size if kind == "vqvae" else None,
        log_every=args.warmup, num_workers=args.num_workers, progress=False,
    )
    torch._dynamo.reset()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    result = train_model(kind, dataset_uri=dataset_uri, model_config=model_config,
                         out_uri=f"file://{os.path.abspath(args.out)}/runs/{kind}-{name}",
                         train_config=cfg)
    row = throughput_after(result.metrics_uri, warmup=args.warmup, items_per_step=args.batch_size,
                           unit="images")
    row.update(precision=result.precision, compile=cfg.compile, channels_last=cfg.channels_last,
               steps=steps, wall_s=time.perf_counter() - t0, eval=result.eval_metrics,
               max_memory_gib=torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None)
    return row


def model_configs(args) -> dict:
    """kind -> model config, at full size or ``--tiny`` (CPU smoke runs)."""
    if args.tiny:
        return {
            "vqvae": VQVAEConfig.preset("tiny"),
            "efficientnet": EfficientNetConfig.preset("tiny", num_classes=args.num_classes,
                                                      resolution=args.vq_size),
        }
    effnet = EfficientNetConfig.preset(args.effnet, num_classes=args.num_classes)
    if args.effnet_size:
        effnet = EfficientNetConfig.preset(args.effnet, num_classes=args.num_classes,
                                           resolution=args.effnet_size)
    return {"vqvae": VQVAEConfig(), "efficientnet": effnet}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/shardforge-vision-bench", help="shards and run folders")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default="vqvae,efficientnet", help="comma list")
    p.add_argument("--configs", default="fp32,fp16,bf16", help="comma list of fp32,fp16,bf16")
    p.add_argument("--effnet", default="b0", help="EfficientNet preset b0..b7")
    p.add_argument("--effnet-size", type=int, default=None,
                   help="EfficientNet input side (default: the preset's resolution)")
    p.add_argument("--vq-size", type=int, default=None,
                   help="VQ-VAE image side (default 64 on CUDA, 32 on CPU)")
    p.add_argument("--steps", type=int, default=100,
                   help="timed EfficientNet steps of fp16/bf16 (the baseline: --baseline-steps)")
    p.add_argument("--baseline-steps", type=int, default=None,
                   help="timed EfficientNet fp32 steps (default: --steps // 2, >= 1)")
    p.add_argument("--vq-steps", type=int, default=None,
                   help="VQ-VAE step budget, the same for every config (default 1000 on CUDA, "
                        "warmup + --steps on CPU)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed first steps (default 10 on CUDA, 1 on CPU)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per step (default 128 on CUDA, 4 on CPU)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-workers", type=int, default=None,
                   help="reader DataLoader workers (default 6 on CUDA, 0 on CPU)")
    p.add_argument("--images", type=int, default=None,
                   help="sample images to write per dataset (default 32768 on CUDA, 48 on CPU: "
                        "an epoch of 256 batches, so the per-epoch reader restart is amortized)")
    p.add_argument("--store-size", type=int, default=64,
                   help="side of the stored EfficientNet images (upsampled on the device)")
    p.add_argument("--dataset-uri", default=None,
                   help="train both models on these image shards instead of the sample images")
    p.add_argument("--num-classes", type=int, default=3, help="classes of --dataset-uri")
    p.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke runs)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    args.batch_size = args.batch_size or (128 if cuda else 4)
    args.num_workers = args.num_workers if args.num_workers is not None else (6 if cuda else 0)
    args.vq_size = args.vq_size or (64 if cuda else 32)
    args.images = args.images or (32768 if cuda else 48)
    args.baseline_steps = args.baseline_steps or max(1, args.steps // 2)
    args.vq_steps = args.vq_steps or (1000 if cuda else args.warmup + args.steps)
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if set(configs) - set(CONFIGS) or set(kinds) - {"vqvae", "efficientnet"}:
        p.error(f"unknown --configs {configs} or --models {kinds}")
    if min(args.steps, args.baseline_steps, args.warmup) < 1 or args.vq_steps <= args.warmup:
        p.error("step counts must be positive and --vq-steps must exceed --warmup")

    mconfigs = model_configs(args)
    eval_count = max(args.batch_size, args.images // 8)
    datasets = {}
    for kind in kinds:
        # EfficientNet reads the same small stored images and upsamples them on the GPU to its
        # resolution: the sample images are drawn at <= 64 px, so storing 224 px copies would
        # only make the reader move 12x the bytes.
        size = args.vq_size if kind == "vqvae" else min(args.store_size, mconfigs[kind].resolution)
        datasets[kind] = args.dataset_uri or write_dataset(args.out, size=size, count=args.images,
                                                           eval_count=eval_count)
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    print(f"{name}: batch {args.batch_size}, warmup {args.warmup}, workers {args.num_workers}",
          file=sys.stderr)

    rows: dict[str, dict[str, dict]] = {}
    for kind in kinds:
        rows[kind] = {}
        for c in configs:
            if kind == "vqvae":
                steps = args.vq_steps
            else:
                steps = args.warmup + (args.baseline_steps if c == "fp32" else args.steps)
            r = rows[kind][c] = run_config(kind, c, args, datasets[kind], mconfigs[kind], steps,
                                           device)
            ev = r["eval"]
            quality = (f"PSNR {ev.get('psnr', float('nan')):.2f} dB, perplexity "
                       f"{ev.get('perplexity', float('nan')):.1f}" if kind == "vqvae"
                       else f"top-1 {ev.get('accuracy', float('nan')):.3f}")
            print(f"{kind:>12} {c:>5}: {r['images_per_s']:>9,.0f} images/s  step "
                  f"{r['step_ms']:.1f} ms  input wait {r['input_wait']:.1%}  first step "
                  f"{r['first_step_s']:.1f}s  skipped {r['skipped_steps']}  after {steps} steps: "
                  f"loss {r['final_loss']:.4f}, eval {quality}", file=sys.stderr)
    ratios = {kind: {c: by[c]["images_per_s"] / by["fp32"]["images_per_s"] for c in by}
              for kind, by in rows.items() if "fp32" in by}
    print("\nimages/s vs the fp32 eager baseline:", file=sys.stderr)
    for kind, by in ratios.items():
        print(f"{kind:>12}: " + "  ".join(f"{c} {x:.2f}x" for c, x in by.items()),
              file=sys.stderr)
    result = {
        "device": name, "torch": torch.__version__, "batch_size": args.batch_size,
        "warmup_steps": args.warmup, "num_workers": args.num_workers, "vq_size": args.vq_size,
        "vq_steps": args.vq_steps, "effnet": args.effnet if not args.tiny else "tiny",
        "model_configs": {k: vars(v) for k, v in mconfigs.items() if k in kinds},
        "configs": rows, "speedup_vs_fp32": ratios,
    }
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
