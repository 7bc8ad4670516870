"""Our LM trainer against the trainer a user would write first: a nanoGPT-style GPT-2 124M.

Not a test. Both train on the same token shards, with the same tokens per step, the same
steps and learning-rate schedule, bf16 autocast, TF32 and torch.compile, in one process:

  ours       models.kinds.train_model("lm"): the small preset (RoPE, RMSNorm, SwiGLU,
             flash SDPA, 124M at a 50304 vocabulary) through the records reader and the
             one trainer (DataLoader workers, packing, fused AdamW)
  nanogpt    written here in nanoGPT's shape (model.py + train.py): learned positions,
             LayerNorm with bias, GELU MLP, causal SDPA, tied embeddings, fused AdamW;
             the shards decoded once into one token array (nanoGPT's prepare.py), random
             windows cut on the GPU (its get_batch)

Reports tokens/s (steps after ``--warmup``; median and min..max of ``--repeats`` runs),
MFU against a measured bf16 matmul peak, and the validation loss of both on the same
eval windows after the same tokens. The data is the synthetic Markov corpus of
benchmarks/mixer_quality.py (learnable, so the losses mean something).

    python benchmarks/lm_vs_nanogpt.py                           # H100: ~6 min
    python benchmarks/lm_vs_nanogpt.py --tiny --device cpu       # CPU smoke run
    python benchmarks/lm_vs_nanogpt.py --ours auto,cudnn,cudnn:reduce-overhead  # ours, 3 ways
    python benchmarks/lm_vs_nanogpt.py --ours auto,auto:default:fp8    # FP8 matmuls beside
    python benchmarks/lm_vs_nanogpt.py --bandwidth    # fused kernels' GB/s against a copy
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.kernel_bandwidth import (  # noqa: E402
    copy_bandwidth_gbps,
    file_size,
    inductor_bandwidth_log,
    read_blocks,
    summarize,
)
from benchmarks.kernel_profile import kernel_families, print_top_kernels  # noqa: E402
from benchmarks.mixer_quality import EOS, write_synthetic  # noqa: E402
from benchmarks.train_lm import bf16_matmul_peak  # noqa: E402
from models.checkpoint import load_checkpoint  # noqa: E402
from models.kinds import train_model  # noqa: E402
from models.lm import DecoderLM, LMConfig  # noqa: E402
from models.lm_config import ATTENTION_BACKENDS  # noqa: E402
from models.runlog import throughput_after  # noqa: E402
from models.train_config import COMPILE_MODES, TrainConfig  # noqa: E402
from records.reader import RecordDataset  # noqa: E402
from records.spec import VarLenFeature  # noqa: E402

# --- the reference: nanoGPT's GPT in a few lines ---------------------------------------


class RefBlock(nn.Module):
    def __init__(self, C: int, nh: int) -> None:
        super().__init__()
        self.nh = nh
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class RefGPT(nn.Module):
    """GPT-2 as nanoGPT writes it (bias on, dropout 0, weights tied)."""

    def __init__(self, vocab: int, block: int, n_layer: int, n_head: int, n_embd: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(block, n_embd)
        self.h = nn.ModuleList(RefBlock(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        self.n_layer, self.n_head, self.n_embd, self.block = n_layer, n_head, n_embd, block

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(
            logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def flops_per_token(self) -> float:
        """nanoGPT's estimate: 6N + 12 L H Q T (N without position embeddings)."""
        n = sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()
        return 6 * n + 12 * self.n_layer * self.n_embd * self.block


def token_stream(uri: str, split: str) -> np.ndarray:
    """Every document of a split, each followed by EOS, as one array (nanoGPT's prepare)."""
    docs = []
    for batch in RecordDataset(uri, split, batch_size=256,
                               feature_spec={"input_ids": VarLenFeature("int64")}, shuffle=False):
        ids, lengths = batch["input_ids"], batch["input_ids_lengths"]
        for row, n in zip(ids.tolist(), lengths.tolist(), strict=True):
            docs.append(np.asarray(row[:n] + [EOS], dtype=np.int64))
    return np.concatenate(docs)


def lr_at(step: int, args) -> float:
    """Our trainer's schedule: linear warmup, cosine to min_lr at the last step."""
    if step < args.lr_warmup:
        return args.lr * (step + 1) / args.lr_warmup
    progress = (step - args.lr_warmup) / max(1, args.total_steps - args.lr_warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * progress))


def train_reference(train_tokens: np.ndarray, args, device: torch.device,
                    on_step=None) -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    model = RefGPT(args.vocab, args.block, **args.shape).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}], lr=args.lr,
                            betas=(0.9, 0.95), fused=device.type == "cuda")
    step_model = torch.compile(model) if args.compile else model
    data = torch.from_numpy(train_tokens).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    offsets = torch.arange(args.block + 1, device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    marks = []
    for step in range(args.total_steps):
        if step == args.warmup:
            marks.append(_now(device))
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        starts = torch.randint(0, data.numel() - args.block - 1, (args.batch_size, 1),
                               generator=gen, device=device)
        batch = data[starts + offsets]  # (B, T + 1), nanoGPT's get_batch
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            _, loss = step_model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step(step)
    marks.append(_now(device))
    timed = args.total_steps - args.warmup
    tokens_per_s = timed * args.batch_size * args.block / (marks[1] - marks[0])
    return model, {"tokens_per_s": tokens_per_s, "final_loss": loss.item()}


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def train_ours(uri: str, args, device: torch.device, run: int, variant: str = "ours",
               on_step=None) -> tuple[nn.Module, dict]:
    attention, compile_mode, precision = args.variants[variant]
    precision = precision or ("bf16" if device.type == "cuda" else "fp32")
    cfg = TrainConfig(
        attention=attention, compile_mode=compile_mode, steps=args.total_steps,
        batch_size=args.batch_size, block_size=args.block, lr=args.lr, min_lr=args.min_lr,
        warmup_steps=args.lr_warmup, weight_decay=0.1, grad_clip=1.0,
        eos_id=EOS, device=device.type, precision=precision,
        compile=args.compile, log_every=args.warmup, ckpt_every=0, eval_every=0,
        num_workers=args.num_workers, progress=False, seed=1)
    out = f"file://{os.path.abspath(args.out)}/runs/{variant}-{run}"
    result = train_model("lm", dataset_uri=uri, out_uri=out, model_config=args.ours,
                         train_config=cfg, on_step=on_step)
    row = throughput_after(result.metrics_uri, warmup=args.warmup,
                           items_per_step=args.batch_size * args.block, unit="tokens")
    model = DecoderLM(args.ours).to(device)
    model.load_state_dict(load_checkpoint(result.checkpoint_uri)["model"])
    return model, {"tokens_per_s": row["tokens_per_s"], "final_loss": row["final_loss"],
                   "input_wait": row["input_wait"]}


def train_named(name: str, uri: str, train_tokens: np.ndarray, args, device: torch.device,
                run: int, on_step=None) -> tuple[nn.Module, dict]:
    """One trainer of :func:`trainer_names`: the reference ("nanogpt") or a variant of ours."""
    if name == "nanogpt":
        return train_reference(train_tokens, args, device, on_step=on_step)
    return train_ours(uri, args, device, run, name, on_step=on_step)


@torch.no_grad()
def val_loss(model: nn.Module, eval_tokens: np.ndarray, args, device: torch.device) -> float:
    """Mean next-token loss over consecutive (T + 1)-windows of the eval stream."""
    model.eval()
    n = min(args.eval_windows, (eval_tokens.size - 1) // args.block)
    windows = torch.from_numpy(eval_tokens[: n * args.block + 1])
    total = 0.0
    for i in range(0, n, 8):
        idx = torch.stack([windows[j * args.block : (j + 1) * args.block + 1]
                           for j in range(i, min(n, i + 8))]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, _ = model(idx[:, :-1])
        total += float(F.cross_entropy(logits.float().flatten(0, 1), idx[:, 1:].flatten(),
                                       reduction="sum"))
    return total / (n * args.block)


def profile_all(uri: str, train_tokens: np.ndarray, args, device: torch.device) -> dict:
    """Every trainer for warmup + 2 + 5 + 1 steps under torch.profiler (5 active steps each):
    the top kernels of each, and GPU ms per step by kernel family side by side.

    The active window ends one step before the last: our trainer evaluates and saves its
    checkpoint inside its last step (2026-12-07, a window that held it measured ours at 683
    GPU ms a step, eager eval and checkpoint copies included, against 79 for the reference).
    """
    from torch.profiler import ProfilerActivity, schedule

    active = 5
    args.total_steps = args.warmup + 2 + active + 1
    families = {}
    for name in trainer_names(args):
        torch._dynamo.reset()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                               if device.type == "cuda" else [])
        with torch.profiler.profile(
                activities=activities,
                schedule=schedule(wait=args.warmup, warmup=2, active=active,
                                  repeat=1)) as prof:
            def next_step(_, prof=prof) -> None:
                # Both sides wait for the step's kernels before the window moves on: the
                # reference never syncs on its own, and its 5-step window held part of a
                # sixth step's kernels (its lm-head kernels ran 6 times) — ours syncs each step.
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                prof.step()

            train_named(name, uri, train_tokens, args, device, 0, on_step=next_step)
        print_top_kernels(prof, f"{name}: top kernels over {active} steps",
                          device.type == "cuda")
        families[name] = kernel_families(prof, active)
    names = list(families)  # our variants, then the reference
    print(f"{'GPU ms / step':<20}" + "".join(f"{n:>14}" for n in names), file=sys.stderr)
    total = {n: sum(f.values()) for n, f in families.items()}
    for fam in sorted(set().union(*families.values())):
        print(f"{fam:<20}" + "".join(f"{families[n].get(fam, 0.0):>14.2f}" for n in names),
              file=sys.stderr)
    print(f"{'total':<20}" + "".join(f"{total[n]:>14.2f}" for n in names), file=sys.stderr)
    result = {"profile": families, "gpu_ms_per_step": total}
    print("RESULT " + json.dumps(result), flush=True)
    return result


def bandwidth_all(uri: str, train_tokens: np.ndarray, args, device: torch.device) -> dict:
    """Every trainer for four steps with Inductor timing each fused (Triton) kernel alone:
    per trainer, one step's fused kernels — ms, GB moved, GB/s — against a measured copy.

    The step read is the third (index 2): compiled and settled, and before the last, in which
    our trainer evaluates (other graphs). The run's losses are meaningless (see
    ``benchmarks.kernel_bandwidth``); only the kernel timings are kept.
    """
    if device.type != "cuda" or not args.compile:
        raise SystemExit("--bandwidth times the Triton kernels torch.compile generates for a "
                         f"CUDA device: it cannot run with --device {device.type}"
                         + ("" if args.compile else " and --no-compile"))
    copy_gbps = copy_bandwidth_gbps(device)
    args.total_steps = 4
    os.makedirs(args.out, exist_ok=True)
    result: dict = {"copy_gbps": copy_gbps}
    for name in trainer_names(args):
        log_path = os.path.join(args.out, f"bandwidth-{name}.log")
        window: dict[int, int] = {}

        def mark(step, log_path=log_path, window=window) -> None:
            # our trainer passes its step record, the reference its step index; the blocks are
            # written by the host as each graph is called, so no device sync is needed
            index = step["step"] - 1 if isinstance(step, dict) else step
            window[index] = file_size(log_path)

        with inductor_bandwidth_log(log_path):
            train_named(name, uri, train_tokens, args, device, 0, on_step=mark)
        blocks = read_blocks(log_path, start=window[1], end=window[2])
        kernels = [k for block in blocks for k in block]
        if not kernels:
            raise SystemExit(f"{name}: no Triton kernel timings in {log_path} for step 3")
        result[name] = summarize(kernels, copy_gbps)
    copy = f"{copy_gbps:,.0f} GB/s" if copy_gbps else "n/a"
    print(f"fused (Triton) kernels of one step, each timed alone; device copy {copy}",
          file=sys.stderr)
    for name in trainer_names(args):
        r = result[name]
        of_copy = f"{r['of_copy']:.0%}" if r["of_copy"] else "n/a"
        print(f"{name:>26}: {r['kernels']:>4} kernels {r['ms']:>8.2f} ms {r['gb']:>8.2f} GB "
              f"{r['gbps']:>8,.0f} GB/s ({of_copy} of the copy)", file=sys.stderr)
        for k in r["slowest"][:5]:
            print(f"{'':>28}{k['ms']:>7.3f} ms {k['gbps']:>7,.0f} GB/s  {k['name'][:70]}",
                  file=sys.stderr)
    print("RESULT " + json.dumps(result), flush=True)
    return result


def parse_variants(value: str) -> dict[str, tuple[str, str, str]]:
    """``--ours``: comma-separated ATTENTION[:COMPILE_MODE[:PRECISION]] entries, as {trainer
    name: (attention, compile_mode, precision)}; precision "" is the benchmark's (bf16 on CUDA,
    fp32 on the CPU). "auto" is "ours", "cudnn:reduce-overhead" "ours-cudnn-reduce-overhead",
    "auto:default:fp8" "ours-fp8"."""
    variants = {}
    for spec in filter(None, value.split(",")):
        attention, _, rest = spec.partition(":")
        mode, _, precision = rest.partition(":")
        mode = mode or "default"
        if (attention not in ATTENTION_BACKENDS or mode not in COMPILE_MODES
                or precision not in ("", *VARIANT_PRECISIONS)):
            raise argparse.ArgumentTypeError(
                f"{spec!r}: want ATTENTION[:COMPILE_MODE[:PRECISION]], ATTENTION one of "
                f"{ATTENTION_BACKENDS}, COMPILE_MODE one of {COMPILE_MODES}, PRECISION one of "
                f"{VARIANT_PRECISIONS}")
        name = "-".join(["ours", *(p for p in (attention, mode, precision)
                                   if p not in ("auto", "default", ""))])
        variants[name] = (attention, mode, precision)
    return variants


VARIANT_PRECISIONS = ("bf16", "fp8")  # the reference trains in bf16: fp8 is ours alone


def trainer_names(args) -> list[str]:
    """Ours once per ``--ours`` variant, then "nanogpt"."""
    return [*args.variants, "nanogpt"]


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/sf-lm-vs-nanogpt")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny shapes and steps: a smoke run")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 200)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 10)")
    p.add_argument("--batch-size", type=int, default=None, help="default 16 (x 1024 tokens)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each trainer")
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--eval-windows", type=int, default=64)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--ours", dest="variants", default="auto", type=parse_variants,
                   help="comma-separated variants of our trainer to run side by side, each "
                        "ATTENTION[:COMPILE_MODE[:PRECISION]], e.g. "
                        "auto,cudnn:reduce-overhead,auto:default:fp8 (auto: the trainer's "
                        "default kernel; cudnn: cuDNN's fused attention; reduce-overhead: the "
                        "step replayed as CUDA graphs; fp8: FP8 matmuls, models/fp8.py)")
    p.add_argument("--profile", action="store_true",
                   help="instead: profile 5 steps of each trainer, GPU time by kernel family")
    p.add_argument("--bandwidth", action="store_true",
                   help="instead: time each fused kernel of one step alone, GB/s against a copy")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    args.compile = cuda if args.compile is None else args.compile
    args.steps = args.steps or (3 if args.tiny else 200)
    args.warmup = args.warmup or (1 if args.tiny else 10)
    args.batch_size = args.batch_size or (2 if args.tiny else 16)
    args.num_workers = args.num_workers if args.num_workers is not None else (4 if cuda else 0)
    args.total_steps = args.warmup + args.steps
    args.lr_warmup, args.min_lr = min(10, args.total_steps), args.lr / 10
    if args.tiny:
        args.shape, args.vocab, args.block = dict(n_layer=2, n_head=4, n_embd=64), 512, 64
        args.ours = LMConfig.preset("tiny", vocab_size=512, block_size=64)
    else:
        args.shape, args.vocab, args.block = dict(n_layer=12, n_head=12, n_embd=768), 50304, 1024
        args.ours = LMConfig.preset("small")
    tokens = args.total_steps * args.batch_size * args.block
    uri = write_synthetic(args.out, vocab=args.vocab, block=args.block,
                          docs=math.ceil(1.3 * tokens / args.block) + 16)
    train_tokens, eval_tokens = token_stream(uri, "train"), token_stream(uri, "eval")
    if args.profile:
        return profile_all(uri, train_tokens, args, device)
    if args.bandwidth:
        return bandwidth_all(uri, train_tokens, args, device)
    peak = bf16_matmul_peak(device, 8192)
    with torch.device("meta"):
        ours_flops = DecoderLM(args.ours).estimate_flops_per_token()
        ref_flops = RefGPT(args.vocab, args.block, **args.shape).flops_per_token()

    names = trainer_names(args)
    rows: dict[str, list[dict]] = {name: [] for name in names}
    for run in range(args.repeats):  # interleaved, so drift hits every trainer alike
        for name in names:
            torch._dynamo.reset()
            model, row = train_named(name, uri, train_tokens, args, device, run)
            row["val_loss"] = val_loss(model, eval_tokens, args, device)
            rows[name].append(row)
            del model
            if cuda:
                torch.cuda.empty_cache()
        print(json.dumps({"run": run, **{name: rows[name][-1] for name in names}}),
              file=sys.stderr)
    result = {"device": torch.cuda.get_device_name(device) if cuda else "cpu",
              "torch": torch.__version__, "batch": [args.batch_size, args.block],
              "steps": args.steps, "warmup": args.warmup, "peak_bf16_flops": peak}
    ref_tps = statistics.median(r["tokens_per_s"] for r in rows["nanogpt"])
    for name in names:
        flops = ref_flops if name == "nanogpt" else ours_flops
        tps = summary([r["tokens_per_s"] for r in rows[name]])
        # per run against the reference of the same run: the spread of the ratio
        ratios = [o["tokens_per_s"] / r["tokens_per_s"]
                  for o, r in zip(rows[name], rows["nanogpt"], strict=True)]
        result[name] = {"tokens_per_s": tps, "flops_per_token": flops,
                        "mfu": tps["median"] * flops / peak if peak else None,
                        "val_loss": summary([r["val_loss"] for r in rows[name]]),
                        "ratio_to_nanogpt": {**summary(ratios),
                                             "of_medians": tps["median"] / ref_tps}}
    result["tokens_per_s_ratio"] = result[names[0]]["ratio_to_nanogpt"]["of_medians"]
    for name in names:
        r = result[name]
        mfu = f"{r['mfu']:.1%}" if r["mfu"] else "n/a"
        ratio = r["ratio_to_nanogpt"]
        print(f"{name:>26}: {r['tokens_per_s']['median']:>10,.0f} tokens/s "
              f"[{r['tokens_per_s']['min']:,.0f}..{r['tokens_per_s']['max']:,.0f}]  MFU {mfu}  "
              f"val loss {r['val_loss']['median']:.4f}  x nanoGPT-style "
              f"{ratio['of_medians']:.3f} [{ratio['min']:.3f}..{ratio['max']:.3f}]",
              file=sys.stderr)
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
