"""Speculative decoding: Medusa / MTP drafts vs plain greedy decoding with a KV cache.

Not a test. Trains a byte-level DecoderLM (vocab 259: byte b -> id b + 3, eos 2) with
Medusa heads and MTP modules on a text corpus, then greedy-decodes ``--new-tokens``
tokens for ``--prompts`` held-out prompts, one sequence at a time, with and without
speculation. It checks that both give the same tokens and reports the mean number of
tokens emitted per decoding forward ("accepted per step") and the wall-clock speedup.

The corpus is ``--text-glob`` (UTF-8 files), or by default a deterministic synthetic
one (templated sentences and log lines). Training uses bf16 autocast and SDPA on CUDA;
decoding runs in fp32 by default (TF32 off) so that verifying k tokens at once and
decoding them one by one round alike and the outputs match exactly.

Then the static-buffer decoder (:mod:`models.static_decode`: compiled steps replayed as
CUDA graphs) decodes batches of ``--static-batches`` held-out prompts greedily and with
each draft, ``--repeats`` timed runs each (median, min..max), outputs checked identical.

    python benchmarks/speculative.py --out /tmp/spec                   # H100: ~3-4 min
    python benchmarks/speculative.py --device cpu --steps 20 --new-tokens 16 --prompts 2 \\
        --out /tmp/spec-smoke                                          # CPU smoke check

Prints one JSON line of results at the end and writes ``results.json`` and
``train_log.jsonl`` under ``--out`` (nothing elsewhere: compile caches go there too).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import random
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EOS, OFFSET, VOCAB = 2, 3, 259  # byte-level ids: 0 pad, 1 bos, 2 eos, byte b -> b + 3

PRESETS = {
    # ~11M parameters (+ heads); trains to a good fit on the synthetic corpus in ~3 minutes.
    "bench": dict(n_layer=6, n_head=6, n_embd=384, block_size=512, multiple_of=64),
    # CPU smoke runs: seconds per step.
    "tiny": dict(n_layer=2, n_head=4, n_embd=64, block_size=128, multiple_of=32),
}

_SUBJECTS = ["the engineer", "a small model", "the shard writer", "our reader", "the scheduler",
             "every worker", "the data lake", "this pipeline", "the trainer", "a spark job"]
_VERBS = ["writes", "reads", "validates", "compresses", "shuffles", "checks", "streams",
          "indexes", "quarantines", "deduplicates"]
_OBJECTS = ["the records", "a manifest", "sixteen shards", "the parquet files", "each checksum",
            "the training batch", "an index file", "the raw feeds", "every partition"]
_ENDINGS = ["before noon", "on every run", "without errors", "in the lake", "twice a day",
            "for the trainer", "after the ingest", "at the end of the job"]


def synthetic_corpus(n_bytes: int, seed: int) -> bytes:
    """Deterministic text: templated sentences and numbered log lines, ~n_bytes long."""
    rng = random.Random(seed)
    parts, size, line = [], 0, 0
    while size < n_bytes:
        if rng.random() < 0.6:
            s = " ".join(rng.choice(w) for w in (_SUBJECTS, _VERBS, _OBJECTS, _ENDINGS))
            text = s[0].upper() + s[1:] + ". "
        else:
            line += 1
            status = "ok" if rng.random() < 0.9 else "quarantined"
            text = (f"\nrecord {line:06d}: shard={line % 16:02d} rows={rng.randrange(1000, 9999)}"
                    f" status={status}\n")
        parts.append(text)
        size += len(text)
    return "".join(parts).encode()


def _ids(text: bytes):
    import torch

    return torch.frombuffer(bytearray(text), dtype=torch.uint8).long() + OFFSET  # (N,)


def load_corpus(args):
    """Token ids (LongTensor) for training and for held-out prompts."""
    import torch

    if args.text_glob:
        files = sorted(glob.glob(args.text_glob, recursive=True))
        if not files:
            raise SystemExit(f"--text-glob {args.text_glob!r} matched no files")
        docs = []
        for path in files:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8").encode()  # fails loudly on non-UTF-8 input
            if text:  # an empty file is no document (ingest quarantines those)
                docs += [_ids(text), torch.tensor([EOS])]
        ids = torch.cat(docs)
        cut = int(ids.numel() * 0.98)
        return ids[:cut], ids[cut:]
    return _ids(synthetic_corpus(args.corpus_bytes, seed=0)), _ids(synthetic_corpus(65536, 1))


def _import_models():
    """Imports the decoder modules; without the package __init__ if the trainer's deps
    (records/, fsspec) are missing on this host: the decoder needs only torch."""
    try:
        import models  # noqa: F401
    except ImportError as exc:
        print(f"note: importing models/ without its __init__ ({exc})", file=sys.stderr)
        pkg = types.ModuleType("models")
        pkg.__path__ = [os.path.join(ROOT, "models")]
        sys.modules["models"] = pkg
    from models.generate import generate_greedy, generate_speculative
    from models.lm import DecoderLM, LMConfig

    return DecoderLM, LMConfig, generate_greedy, generate_speculative


def static_decode(model, held_out, args, device, drafts) -> list[dict]:
    """Batched decoding on static buffers (CUDA graphs on CUDA): B rows at once.

    Per batch size: greedy and each draft's speculative decoding, ``--repeats`` timed
    runs each (median and min..max), outputs checked equal to static greedy's, and row 0
    of B=1 checked equal to the eager generate_greedy's.
    """
    import statistics

    import torch

    from models.static_decode import StaticDecoder

    rng = random.Random(args.seed + 1)
    sizes = [int(b) for b in args.static_batches.split(",") if b]
    K = max(args.medusa_heads, args.mtp_depth)
    dec = StaticDecoder(model, batch_size=max(sizes),
                        max_len=args.prompt_len + args.new_tokens + K + 2)

    def timed(fn):
        times, result = [], None
        for _ in range(args.repeats + 1):  # the first run captures/compiles: not timed
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return result, times[1:]

    rows = []
    for B in sizes:
        starts = [rng.randrange(0, held_out.numel() - args.prompt_len) for _ in range(B)]
        prompt = torch.stack([held_out[s : s + args.prompt_len] for s in starts]).to(device)
        ref, times = timed(lambda prompt=prompt: dec.greedy(prompt, args.new_tokens))
        methods = [("greedy", ref, times)]
        for draft in drafts:
            got, t = timed(lambda prompt=prompt, draft=draft: dec.speculative(
                prompt, args.new_tokens, draft=draft,
                mtp_window=args.mtp_window or 64))
            methods.append((draft, got, t))
        base = statistics.median(times)
        for name, got, t in methods:
            med = statistics.median(t)
            rows.append({
                "batch": B, "method": name,
                "tokens_per_s": round(B * args.new_tokens / med, 1),
                "tokens_per_s_min_max": [round(B * args.new_tokens / max(t), 1),
                                         round(B * args.new_tokens / min(t), 1)],
                "speedup_vs_static_greedy": round(base / med, 3),
                "mean_accepted_per_step": round(got.mean_accepted, 3),
                "identical": bool(torch.equal(got.tokens, ref.tokens)),
            })
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def _lr(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def train(model, corpus, args, device, log_file) -> dict:
    import torch

    data = corpus.to(device)
    T = model.config.block_size
    gen = torch.Generator(device=device).manual_seed(0)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), fused=device.type == "cuda",
    )
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    step_fn = torch.compile(model) if args.compile else model
    offsets = torch.arange(T + 1, device=device)
    model.train()
    t0, parts = time.perf_counter(), {}
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, args)
        starts = torch.randint(0, data.numel() - T - 1, (args.batch_size, 1), generator=gen,
                               device=device)
        batch = data[starts + offsets]  # (B, T + 1)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            _, loss = step_fn(batch[:, :-1], batch[:, 1:])
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            parts = {k: round(v, 4) for k, v in model.loss_parts().items()}
            record = {"step": step + 1, "s": round(time.perf_counter() - t0, 1), **parts}
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            print(json.dumps(record), file=sys.stderr)
    return {"train_s": round(time.perf_counter() - t0, 1), "final_loss_parts": parts}


def decode(model, prompts, args, device, generate_greedy, generate_speculative, draft) -> dict:
    import torch

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        results = [fn(p) for p in prompts]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return results, time.perf_counter() - t0

    def greedy(p):
        return generate_greedy(model, p, args.new_tokens)

    def spec(p):
        return generate_speculative(model, p, args.new_tokens, draft=draft,
                                    mtp_window=args.mtp_window)

    greedy(prompts[0]), spec(prompts[0])  # warm-up: kernels, allocator
    ref, t_greedy = timed(greedy)
    got, t_spec = timed(spec)
    mismatched = [i for i, (a, b) in enumerate(zip(ref, got, strict=True))
                  if not torch.equal(a.tokens, b.tokens)]
    accepted = [n for r in got for n in r.accepted]
    n_new = args.new_tokens * len(prompts)
    return {
        "draft": draft,
        "identical": not mismatched,
        "mismatched_prompts": mismatched,
        "mean_accepted_per_step": round(sum(accepted) / max(1, len(accepted)), 3),
        "greedy_s": round(t_greedy, 3),
        "speculative_s": round(t_spec, 3),
        "speedup": round(t_greedy / t_spec, 3),
        "greedy_tokens_per_s": round(n_new / t_greedy, 1),
        "speculative_tokens_per_s": round(n_new / t_spec, 1),
        "sample": bytes(max(0, min(255, t - OFFSET)) for t in got[0].tokens[0].tolist())
        .decode("utf-8", "replace")[-120:],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for results.json, logs and caches")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--preset", default="auto", choices=("auto", *PRESETS),
                   help="auto = bench on CUDA, tiny on CPU")
    p.add_argument("--medusa-heads", type=int, default=4)
    p.add_argument("--mtp-depth", type=int, default=3)
    p.add_argument("--medusa-weight", type=float, default=1.0, help="LMConfig.medusa_weight")
    p.add_argument("--mtp-lambda", type=float, default=0.3, help="LMConfig.mtp_lambda")
    p.add_argument("--draft", default="both", choices=("both", "medusa", "mtp"))
    p.add_argument("--text-glob", default=None, help="UTF-8 files; default: synthetic corpus")
    p.add_argument("--corpus-bytes", type=int, default=4_000_000)
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=None, help="default 32 on CUDA, 8 on CPU")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=48)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--decode-dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--mtp-window", type=int, default=None)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--static-batches", default="1,8,64",
                   help="batch sizes of the static-buffer (CUDA graph) decoder; '' = skip it")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per static row")
    args = p.parse_args(argv)

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    # Keep torch.compile's caches inside --out.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(out, "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(out, "triton"))
    sys.path.insert(0, ROOT)
    import torch

    DecoderLM, LMConfig, generate_greedy, generate_speculative = _import_models()
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    preset = args.preset if args.preset != "auto" else ("bench" if cuda else "tiny")
    args.batch_size = args.batch_size or (32 if cuda else 8)
    if args.precision == "auto":
        args.precision = "bf16" if cuda else "fp32"
    if args.prompt_len + args.new_tokens > PRESETS[preset]["block_size"]:
        raise SystemExit(f"--prompt-len + --new-tokens exceed block_size of preset {preset}")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # training; turned off for decoding
    else:
        torch.set_num_threads(1)  # tiny CPU runs gain nothing from threads on a shared box
    torch.manual_seed(args.seed)

    corpus, held_out = load_corpus(args)
    cfg = LMConfig(vocab_size=VOCAB, medusa_heads=args.medusa_heads, mtp_depth=args.mtp_depth,
                   medusa_weight=args.medusa_weight, mtp_lambda=args.mtp_lambda, **PRESETS[preset])
    model = DecoderLM(cfg).to(device)
    print(f"{preset}: {model.num_params() / 1e6:.2f}M params, {corpus.numel()} training tokens, "
          f"{device}, {args.precision}", file=sys.stderr)
    with open(os.path.join(out, "train_log.jsonl"), "w") as log_file:
        trained = train(model, corpus, args, device, log_file)

    model.eval()
    if args.decode_dtype != "fp32":
        model.to({"bf16": torch.bfloat16, "fp16": torch.float16}[args.decode_dtype])
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    rng = random.Random(args.seed)
    starts = [rng.randrange(0, held_out.numel() - args.prompt_len) for _ in range(args.prompts)]
    prompts = [held_out[s : s + args.prompt_len][None].to(device) for s in starts]
    drafts = [d for d in ("medusa", "mtp") if args.draft in (d, "both")]
    drafts = [d for d in drafts if (args.medusa_heads if d == "medusa" else args.mtp_depth) > 0]
    runs = [decode(model, prompts, args, device, generate_greedy, generate_speculative, d)
            for d in drafts]
    static = static_decode(model, held_out, args, device, drafts) if args.static_batches else []
    eager_greedy = runs[0]["greedy_tokens_per_s"] if runs else None
    for row in static:
        if row["batch"] == 1 and row["method"] == "greedy" and eager_greedy:
            row["speedup_vs_eager_greedy"] = round(row["tokens_per_s"] / eager_greedy, 2)

    result = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "preset": preset,
        "params_m": round(model.num_params() / 1e6, 2),
        "medusa_heads": args.medusa_heads,
        "mtp_depth": args.mtp_depth,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "decode_dtype": args.decode_dtype,
        "prompts": args.prompts,
        "new_tokens": args.new_tokens,
        "corpus": args.text_glob or f"synthetic:{args.corpus_bytes}",
        **trained,
        "runs": runs,
        "static": static,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))
    if not all(r["identical"] for r in runs + static):
        print("FAILED: speculative output differs from greedy output", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
