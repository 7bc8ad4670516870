"""Long context: training tokens/s and peak memory of each sequence mixer at equal params.

Not a test. Imports only models/ (a GPU image needs torch and numpy). For each mixer of
``--mixers`` (built through the registry, ``models.mixers``; one that fails to build is
skipped with a note) it takes a ~124M-parameter DecoderLM (the ``small`` preset with that
mixer; n_layer scaled so params match attention's within a few percent: a GAU layer is a
whole block, about half an attention+MLP block) and times forward + backward (no
optimizer step) under bf16 autocast at every T of ``--lengths``, with the batch chosen so
that every step holds ``--tokens`` tokens (B = tokens / T). With tokens per step fixed,
a mixer whose memory is linear in T shows a flat peak memory across T.

Compilation is regional (torchtitan style): each block and the head + loss are compiled
apart, so the blocks of a model share one compiled graph and a new T compiles one block,
not the whole model. ``attention`` runs with FlashAttention pinned. ``--checkpoint`` adds
a row ``attention+ckpt`` (activation checkpointing of every block) at T >=
``--checkpoint-from``. A configuration that runs out of memory is reported as "does not
fit". Each cell is the median of ``--repeats`` timed windows of ``--steps`` steps, after
``--warmup`` steps (the first compiles), with the spread (min, max) of the windows.

Prints a table (tokens/s, ratio vs attention at the same T, peak GiB), each mixer's
crossover length (the T from which it outruns attention, interpolated on log T between
the measured lengths), and one JSON line prefixed ``RESULT``.

    python benchmarks/long_context.py                                  # H100, all mixers
    python benchmarks/long_context.py --mixers attention,linear --lengths 1024,16384
    python benchmarks/long_context.py --device cpu --tiny              # smoke, seconds
    python benchmarks/long_context.py --profile --mixers attention,mamba2_torch --lengths 1024
                                              # where a step's GPU time goes, by kernel family
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import statistics
import sys
import time
from contextlib import nullcontext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

from benchmarks.bench_common import TINY_MIXER_OVERRIDES, count_params, matched_config  # noqa: E402
from benchmarks.kernel_profile import kernel_families, print_top_kernels  # noqa: E402
from models.attention import pinned  # noqa: E402
from models.lm import DecoderLM, LMConfig  # noqa: E402
from models.lm_config import MIXERS  # noqa: E402

SMALL = dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50304)  # GPT-2 small class
TINY = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=256, multiple_of=32)
# Per-mixer settings of this benchmark (printed with the results): FLASH's group size 256
# for GAU (its chunk states then take 4x less memory than at 64), a 1024-token window.
OVERRIDES = {"gau": {"chunk_size": 256}, "sliding_window": {"window": 1024}}
# Rows that are a mixer with a setting: mamba2's scan kernel, side by side (LMConfig.ssm_kernel;
# plain "mamba2" is "auto": a fused Triton kernel on CUDA when one is installed and agrees).
VARIANTS = {"mamba2_torch": ("mamba2", {"ssm_kernel": "torch"}),
            "mamba2_triton": ("mamba2", {"ssm_kernel": "triton"})}


def _set_compile_limits() -> None:
    """Every (mixer, T) compiles Block.forward once more: raise dynamo's per-code limit."""
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                 "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(256, getattr(torch._dynamo.config, name)))


def _is_oom(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in text


def measure(cfg: LMConfig, T: int, args, device: torch.device, *, ckpt: bool,
            label: str = "") -> dict:
    """Forward + backward tokens/s and peak memory of ``cfg`` at sequence length T; with
    ``args.profile``, where one window's GPU time goes instead (:func:`profile_window`)."""
    cuda = device.type == "cuda"
    B = max(1, args.tokens // T)
    torch.manual_seed(0)
    model = DecoderLM(dataclasses.replace(cfg, block_size=T)).to(device)
    wrap = (lambda m: torch.compile(m, dynamic=False)) if args.compile else (lambda m: m)
    blocks = [wrap(b) for b in model.blocks]

    def head_loss(h, y):  # (B*T, C), (B*T,): one shape at every T, compiled once
        return F.cross_entropy(model.head(h).float(), y)

    head_loss = torch.compile(head_loss, dynamic=False) if args.compile else head_loss
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    x = torch.randint(0, cfg.vocab_size, (B, T), device=device)
    y = torch.randint(0, cfg.vocab_size, (B * T,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cuda else nullcontext()

    def step() -> None:
        with autocast:
            h = model.drop(model.tok_emb(x))  # (B, T, C)
            for block in blocks:
                h = (checkpoint(block, h, cos, sin, use_reentrant=False) if ckpt
                     else block(h, cos, sin))
            loss = head_loss(h.flatten(0, 1), y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    for _ in range(args.warmup - 1):
        step()
    sync()
    if args.profile:
        return profile_window(step, sync, args, device, f"{label} at T={T}, batch {B}")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        rates.append(args.steps * B * T / (time.perf_counter() - t0))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    return {"status": "ok", "batch": B, "tokens_per_s": statistics.median(rates),
            "spread": [min(rates), max(rates)], "peak_gib": peak, "first_step_s": first}


def profile_window(step, sync, args, device: torch.device, title: str) -> dict:
    """``args.steps`` steps under torch.profiler (after the warm-up): the top kernels to
    stderr, and GPU ms per step by kernel family in the returned cell."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        sync()
    wall_ms = (time.perf_counter() - t0) * 1000 / args.steps
    print_top_kernels(prof, f"{title}: top kernels over {args.steps} steps", cuda, rows=25)
    families = kernel_families(prof, args.steps)
    print(f"  {title}: GPU ms/step " + ", ".join(f"{k} {v:.2f}" for k, v in families.items())
          + f"; total {sum(families.values()):.2f}, wall {wall_ms:.2f} (profiled)",
          file=sys.stderr)
    return {"status": "ok", "profile": families, "gpu_ms_per_step": sum(families.values()),
            "wall_ms_per_step": wall_ms}


def run_cell(cfg: LMConfig, T: int, args, device: torch.device, *, ckpt: bool,
             label: str = "") -> dict:
    """:func:`measure`, with out-of-memory as "does not fit" and other failures as errors."""
    try:
        result = measure(cfg, T, args, device, ckpt=ckpt, label=label)
    except Exception as err:  # every failure becomes a cell of the table
        status = "does not fit" if _is_oom(err) else f"error: {type(err).__name__}: {err}"[:300]
        result = {"status": status}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def crossover(ratios: dict[int, float | None]) -> float | None:
    """The T (interpolated on log T) from which a ratio stays >= 1; None = never measured."""
    points = sorted((T, r) for T, r in ratios.items() if r is not None)
    if not points or points[-1][1] < 1:
        return None
    start = len(points) - 1  # the start of the last run of ratios >= 1
    while start > 0 and points[start - 1][1] >= 1:
        start -= 1
    if start == 0:
        return float(points[0][0])  # faster from the shortest length measured
    (t0, r0), (t1, r1) = points[start - 1], points[start]
    frac = (1 - r0) / (r1 - r0)  # ratios straddle 1 between t0 and t1
    return math.exp(math.log(t0) + frac * (math.log(t1) - math.log(t0)))


def _cell_text(cell: dict, ratio: float | None) -> str:
    if cell["status"] != "ok":
        return cell["status"] if len(cell["status"]) < 24 else "error"
    r = f" {ratio:4.2f}x" if ratio is not None else ""
    mem = f" {cell['peak_gib']:5.1f}G" if cell["peak_gib"] is not None else ""
    return f"{cell['tokens_per_s'] / 1e3:8.1f}k{r}{mem}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny models and lengths: a smoke run")
    p.add_argument("--mixers", default=",".join(MIXERS), help="comma list of mixer names")
    p.add_argument("--lengths", default=None, help="comma list of T (default 1024,...,65536)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per step (default 65536)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps, the first compiles (default 2; tiny 1)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed window")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed windows; the median counts (default 3; tiny 2)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile each block (default: on CUDA)")
    p.add_argument("--checkpoint", action="store_true",
                   help="add an attention row with activation checkpointing")
    p.add_argument("--checkpoint-from", type=int, default=65536, help="T of that row")
    p.add_argument("--profile", action="store_true",
                   help="instead of timing: profile one window of every cell, GPU ms/step "
                        "by kernel family (e.g. --mixers attention,mamba2_torch --lengths 1024)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.tiny and args.device == "cpu":
        torch.set_num_threads(1)  # tiny matrices: threads only contend
    args.compile = cuda if args.compile is None else args.compile
    lengths = args.lengths or ("64,128" if args.tiny else "1024,4096,16384,65536")
    lengths = [int(t) for t in lengths.split(",")]
    args.tokens = args.tokens or (256 if args.tiny else 65536)
    args.steps = args.steps or (1 if args.tiny else 3)
    args.warmup = args.warmup or (1 if args.tiny else 2)
    args.repeats = args.repeats or (2 if args.tiny else 3)
    mixers = [m.strip() for m in args.mixers.split(",") if m.strip()]
    unknown = [m for m in mixers if m not in MIXERS and m not in VARIANTS]
    if unknown or min(args.warmup, args.steps, args.repeats) < 1:
        p.error(f"unknown --mixers {unknown} (expected {MIXERS + tuple(VARIANTS)}) or a "
                f"non-positive count")
    if cuda:
        _set_compile_limits()
        torch.backends.cuda.matmul.allow_tf32 = True
    base, overrides = (TINY, TINY_MIXER_OVERRIDES) if args.tiny else (SMALL, OVERRIDES)
    target = count_params(LMConfig(**base))

    def resolve(row: str) -> tuple[str, dict]:  # a row's mixer, and what it sets beyond it
        row = row.removesuffix("+ckpt")
        name, setting = VARIANTS.get(row, (row, {}))
        return name, {**overrides.get(name, {}), **setting}

    configs, notes = {}, {}
    for mixer in mixers:
        try:
            name, fields = resolve(mixer)
            configs[mixer] = matched_config(name, base, target, **fields)
        except Exception as err:  # a mixer that cannot build is skipped
            notes[mixer] = f"skipped: {type(err).__name__}: {err}"
            print(f"{mixer}: {notes[mixer]}", file=sys.stderr)
    rows = {name: (cfg, False) for name, cfg in configs.items()}
    if args.checkpoint and "attention" in configs:
        rows["attention+ckpt"] = (configs["attention"], True)
    params = {name: count_params(cfg) for name, (cfg, _) in rows.items()}
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"{name}: {args.tokens} tokens/step, bf16={cuda}, compile={args.compile}, "
          f"lengths {lengths}", file=sys.stderr)
    for row, (cfg, _) in rows.items():
        print(f"  {row:<15} n_layer {cfg.n_layer:>2}  {params[row] / 1e6:7.2f}M params "
              f"({params[row] / target - 1:+.1%} vs attention)  {resolve(row)[1]}",
              file=sys.stderr)

    cells: dict[str, dict[int, dict]] = {row: {} for row in rows}
    sdpa = pinned(torch.nn.attention.SDPBackend.FLASH_ATTENTION) if cuda else nullcontext()
    with sdpa:
        for T in lengths:
            for row, (cfg, ckpt) in rows.items():
                if ckpt and args.checkpoint_from > T:
                    continue
                cells[row][T] = cell = run_cell(cfg, T, args, device, ckpt=ckpt, label=row)
                if args.profile:
                    continue
                extra = (f"{cell['tokens_per_s']:,.0f} tokens/s, first step "
                         f"{cell['first_step_s']:.1f}s" if cell["status"] == "ok"
                         else cell["status"])
                print(f"  T={T:>6} {row:<15} {extra}", file=sys.stderr, flush=True)
    if args.profile:
        result = {"device": name, "torch": torch.__version__, "tokens_per_step": args.tokens,
                  "steps": args.steps, "profile": {row: {str(T): c for T, c in cs.items()}
                                                   for row, cs in cells.items()}}
        print("RESULT " + json.dumps(result), flush=True)
        return result

    def rate(row: str, T: int) -> float | None:
        cell = cells.get(row, {}).get(T)
        return cell["tokens_per_s"] if cell and cell["status"] == "ok" else None

    ratios = {row: {T: (rate(row, T) / rate("attention", T)
                        if rate(row, T) and rate("attention", T) else None)
                    for T in cells[row]} for row in rows}
    crossovers = {row: crossover(ratios[row]) for row in rows if row != "attention"}
    print(f"\n{'mixer':<15}" + "".join(f"{'T=' + str(T):>26}" for T in lengths)
          + f"{'crossover T':>14}")
    print(f"{'':<15}" + "".join(f"{'tok/s  vs attn  peak':>26}" for _ in lengths))
    for row in rows:
        line = f"{row:<15}"
        for T in lengths:
            cell = cells[row].get(T)
            line += f"{_cell_text(cell, ratios[row].get(T)) if cell else '-':>26}"
        x = crossovers.get(row)
        line += f"{'' if row == 'attention' else (f'{x:,.0f}' if x else 'none'):>14}"
        print(line)
    for mixer, note in notes.items():
        print(f"{mixer:<15}{note}")
    result = {"device": name, "torch": torch.__version__, "tokens_per_step": args.tokens,
              "lengths": lengths, "compile": args.compile, "bf16": cuda,
              "steps": args.steps, "repeats": args.repeats,
              "params": params, "n_layer": {row: cfg.n_layer for row, (cfg, _) in rows.items()},
              "overrides": {m: resolve(m)[1] for m in configs},
              "cells": {row: {str(T): c for T, c in cs.items()} for row, cs in cells.items()},
              "ratio_vs_attention": {row: {str(T): r for T, r in rs.items()}
                                     for row, rs in ratios.items()},
              "crossover": crossovers, "skipped": notes}
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
