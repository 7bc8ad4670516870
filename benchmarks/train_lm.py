"""Trainer throughput: FP32 eager baseline vs FP16 / BF16 + flash attention + torch.compile.

Not a test. Imports only models/ and records/ (a GPU image needs torch, numpy,
pyarrow, fsspec and protobuf; no TensorFlow). It

  1. writes ~N documents of random token ids (uniform in [1, vocab), lengths in
     [block/8, 2*block]) as TFRecord shards with records.writer.DatasetWriter into
     ``--out`` (reused when an identical dataset is already there);
  2. on CUDA, measures a bf16 matmul peak (``--matmul-n`` cubed matmuls) for MFU;
  3. trains the preset from those shards through the real reader (DataLoader
     workers) and the one trainer (models.kinds.train_model, kind lm) in three
     configurations:
       fp32: FP32 eager, math attention, TF32 off (true FP32)   -- the baseline
       fp16: FP16 autocast + GradScaler, flash attention, torch.compile
       bf16: BF16 autocast, flash attention, torch.compile
       bf16-cudnn (only when asked for): as bf16 with cuDNN's fused attention
  4. prints tokens/s, MFU, input-wait share for each, the ratios vs the baseline, and
     one JSON line (prefixed ``RESULT``) of results.

The first ``--warmup`` steps (compile, allocator, DataLoader start) are excluded from
the timing; their duration is reported as ``warmup_s`` (and the first step, which
compiles, as ``first_step_s``).

    python benchmarks/train_lm.py --out /tmp/sf-train-bench                    # H100
    python benchmarks/train_lm.py --preset tiny --device cpu --steps 3 --out /tmp/sfb
"""

from __future__ import annotations

import argparse
import json
import math
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
from models.kinds import train_model  # noqa: E402
from models.lm import DecoderLM, LMConfig  # noqa: E402
from models.runlog import throughput_after  # noqa: E402
from models.train_config import TrainConfig  # noqa: E402
from records.example_codec import encode_example  # noqa: E402
from records.spec import VarLenFeature  # noqa: E402
from records.writer import DatasetWriter  # noqa: E402

# name -> (precision, attention, compile); compile is forced off on CPU (no C++ toolchain
# time to spare in a smoke run).
CONFIGS = {
    "fp32": ("fp32", "math", False),
    "fp16": ("fp16", "auto", True),
    "bf16": ("bf16", "auto", True),
    # opt-in, not in the default set: cuDNN's fused attention in place of FlashAttention-2
    "bf16-cudnn": ("bf16", "cudnn", True),
}


def write_dataset(out: str, *, docs: int, vocab: int, block: int, seed: int = 0) -> str:
    """Writes ``docs`` random documents unless an identical dataset is already there."""
    uri = f"file://{os.path.abspath(out)}/records/bench-lm/v=1"
    config = {"docs": docs, "vocab": vocab, "block": block, "seed": seed}
    if reusable_dataset(uri, config):
        return uri
    rng = np.random.default_rng(seed)
    lo, hi = max(1, block // 8), 2 * block
    t0, n_tokens = time.perf_counter(), 0
    with DatasetWriter(uri=uri, dataset="bench-lm", version="1",
                       feature_spec={"input_ids": VarLenFeature("int64")},
                       max_records_per_shard=max(64, docs // 16), config=config) as writer:
        for _ in range(docs):
            doc = rng.integers(1, vocab, int(rng.integers(lo, hi + 1)))
            n_tokens += doc.size
            writer.write("train", encode_example({"input_ids": doc}))
    dt = time.perf_counter() - t0
    print(f"wrote {docs} documents ({n_tokens / 1e6:.1f}M tokens) in {dt:.1f}s to {uri}",
          file=sys.stderr)
    return uri


def bf16_matmul_peak(device: torch.device, n: int, iters: int = 30) -> float | None:
    """Best measured FLOP/s of (n x n) @ (n x n) bf16 matmuls; None off CUDA."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    best = 0.0
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            a @ b
        end.record()
        torch.cuda.synchronize()
        best = max(best, 2 * n**3 * iters / (start.elapsed_time(end) / 1e3))
    del a, b
    torch.cuda.empty_cache()
    return best


def run_config(name: str, args, dataset_uri: str, model_config: LMConfig,
               device: torch.device, peak: float | None) -> dict:
    precision, attention, compile_ = CONFIGS[name]
    compile_ = compile_ and device.type == "cuda"
    steps = args.warmup + (args.baseline_steps if name == "fp32" else args.steps)
    cfg = TrainConfig(
        steps=steps, batch_size=args.batch_size, lr=6e-4, min_lr=6e-5,
        warmup_steps=min(10, steps), device=device.type, precision=precision,
        compile=compile_, attention=attention, log_every=args.warmup, ckpt_every=0,
        num_workers=args.num_workers, peak_flops=peak, progress=False,
    )
    out_uri = f"file://{os.path.abspath(args.out)}/runs/{name}"
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    result = train_model("lm", dataset_uri=dataset_uri, out_uri=out_uri,
                         model_config=model_config, train_config=cfg)
    wall = time.perf_counter() - t0
    tokens_per_step = args.batch_size * model_config.block_size
    row = throughput_after(result.metrics_uri, warmup=args.warmup, items_per_step=tokens_per_step,
                           unit="tokens")
    row.update(
        precision=result.precision, attention=result.extras["attention"], compile=compile_,
        wall_s=wall, mfu=(row["tokens_per_s"] * args.flops_per_token / peak) if peak else None,
        max_memory_gib=(torch.cuda.max_memory_allocated(device) / 2**30
                        if device.type == "cuda" else None),
    )
    return row


def profile(name: str, args, dataset_uri: str, model_config: LMConfig,
            device: torch.device) -> dict:
    """Runs ``name`` for warmup + 7 steps under torch.profiler; prints the top kernels."""
    from torch.profiler import ProfilerActivity, schedule

    precision, attention, compile_ = CONFIGS[name]
    cfg = TrainConfig(
        steps=args.warmup + 7, batch_size=args.batch_size, device=device.type,
        precision=precision, compile=compile_ and device.type == "cuda", attention=attention,
        log_every=args.warmup, num_workers=args.num_workers, progress=False,
    )
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    with torch.profiler.profile(activities=activities,
                                schedule=schedule(wait=args.warmup, warmup=2, active=5)) as prof:
        train_model("lm", dataset_uri=dataset_uri,
                    out_uri=f"file://{os.path.abspath(args.out)}/prof", model_config=model_config,
                    train_config=cfg, on_step=lambda _: prof.step())
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=70),
          file=sys.stderr)
    return {}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/shardforge-train-bench", help="shards and run folders")
    p.add_argument("--preset", default="small", choices=["tiny", "small"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=200, help="timed steps, fp16 and bf16")
    p.add_argument("--baseline-steps", type=int, default=None,
                   help="timed steps of the fp32 baseline (default: --steps // 4, >= 1)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed first steps (default 10 on CUDA, 1 on CPU)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sequences per step (default 16 on CUDA, 4 on CPU)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="reader DataLoader workers (default 4 on CUDA, 0 on CPU)")
    p.add_argument("--docs", type=int, default=None,
                   help="documents to write (default: enough for the longest run, x1.2)")
    p.add_argument("--configs", default="fp32,fp16,bf16", help="comma list of fp32,fp16,bf16,bf16-cudnn")
    p.add_argument("--matmul-n", type=int, default=8192, help="bf16 peak: n^3 matmuls")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="use this bf16 peak instead of measuring it")
    p.add_argument("--profile", action="store_true",
                   help="instead: profile 5 steps of the first config, print the top kernels")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    args.batch_size = args.batch_size or (16 if cuda else 4)
    args.num_workers = args.num_workers if args.num_workers is not None else (4 if cuda else 0)
    if args.baseline_steps is None:
        args.baseline_steps = max(1, args.steps // 4)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(configs) - set(CONFIGS)
    if unknown or min(args.steps, args.baseline_steps, args.warmup) < 1:
        p.error(f"bad --configs {sorted(unknown)} or a non-positive step count")

    overrides = {"block_size": 128} if args.preset == "tiny" else {}
    model_config = LMConfig.preset(args.preset, **overrides)
    block = model_config.block_size
    if args.docs is None:
        longest = args.warmup + max(args.steps, args.baseline_steps)
        avg_len = (max(1, block // 8) + 2 * block) / 2 + 1
        args.docs = math.ceil(1.2 * longest * args.batch_size * block / avg_len) + 64
    dataset_uri = write_dataset(args.out, docs=args.docs, vocab=model_config.vocab_size,
                                block=block)

    with torch.device("meta"):
        args.flops_per_token = DecoderLM(model_config).estimate_flops_per_token()
    peak = args.peak_tflops * 1e12 if args.peak_tflops else bf16_matmul_peak(device,
                                                                           args.matmul_n)
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    print(f"{name}: {args.preset} preset, {args.flops_per_token / 1e9:.3f} GFLOP/token, "
          f"batch {args.batch_size}x{block}, bf16 matmul peak "
          f"{peak / 1e12 if peak else float('nan'):.0f} TFLOP/s", file=sys.stderr)

    if args.profile:
        return profile(configs[0], args, dataset_uri, model_config, device)
    rows = {}
    for c in configs:
        rows[c] = run_config(c, args, dataset_uri, model_config, device, peak)
        r = rows[c]
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"{c:>5}: {r['tokens_per_s']:>10,.0f} tokens/s  MFU {mfu:>6}  "
              f"input wait {r['input_wait']:.2%}  step {r['step_ms']:.1f} ms  "
              f"first step {r['first_step_s']:.1f}s  warmup {r['warmup_s']:.1f}s  "
              f"({r['attention']}, compile={r['compile']}, loss {r['final_loss']:.3f})",
              file=sys.stderr)
    base = rows.get("fp32")
    ratios = ({c: rows[c]["tokens_per_s"] / base["tokens_per_s"] for c in rows if c != "fp32"}
              if base else {})
    for c, x in ratios.items():
        print(f"{c} vs fp32 baseline: {x:.1f}x tokens/s", file=sys.stderr)
    result = {
        "device": name, "torch": torch.__version__, "preset": args.preset,
        "batch_size": args.batch_size, "block_size": block, "warmup_steps": args.warmup,
        "num_workers": args.num_workers, "flops_per_token": args.flops_per_token,
        "peak_bf16_flops": peak, "configs": rows, "speedup_vs_fp32": ratios,
    }
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
