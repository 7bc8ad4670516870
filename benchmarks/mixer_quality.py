"""Quality of each sequence mixer at an equal budget: posts validation loss and MQAR accuracy.

Not a test. Imports only models/ and records/ (a GPU image needs torch, numpy, pyarrow,
fsspec, protobuf). Every mixer of ``--mixers`` gets the same steps, batch, learning-rate
schedule and data, at (nearly) equal parameters (n_layer scaled as in
``benchmarks/long_context.py``: a GAU layer is a whole block, so GAU gets ~2x layers):

posts  a language model trained through the one trainer (``models.kinds.train_model``,
       kind lm) on the train split of ``--dataset`` (a posts token dataset, e.g.
       ``file:///lake/records/posts/v=1``) and evaluated on its eval split (the first
       ``--eval-batches`` reader batches, the same windows for every mixer). Without
       ``--dataset`` it writes a synthetic token corpus (a sparse Markov chain over Zipfian
       tokens, with copied spans so that recall over the context pays) under ``--out``.
mqar   multi-query associative recall (Zoology, Arora et al. 2023): a sequence holds
       ``--pairs`` key-value pairs, then the keys again in random order at random places
       among filler tokens; the model must emit each key's value at the key's position.
       Fresh random batches every step; accuracy over the query positions of a fixed
       held-out set.

Prints a table (params, n_layer, posts val loss and its gap to attention, MQAR accuracy)
and one JSON line prefixed ``RESULT``.

    python benchmarks/mixer_quality.py --task posts --mixers attention,gau --dataset URI
    python benchmarks/mixer_quality.py --task mqar                     # H100, all mixers
    python benchmarks/mixer_quality.py --device cpu --tiny             # smoke, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.bench_common import (  # noqa: E402
    TINY_MIXER_OVERRIDES,
    count_params,
    matched_config,
    reusable_dataset,
)
from models.kinds import train_model  # noqa: E402
from models.lm import DecoderLM, LMConfig  # noqa: E402
from models.lm_config import MIXERS  # noqa: E402
from models.train_config import TrainConfig  # noqa: E402
from records.example_codec import encode_example  # noqa: E402
from records.spec import VarLenFeature  # noqa: E402
from records.writer import DatasetWriter  # noqa: E402

EOS = 2  # the tokenizers' end-of-document id (features: pad 0, bos 1, eos 2)
# posts: the small preset's widths (~124M with a 50304 vocabulary); mqar: a 2-layer model.
POSTS = dict(n_layer=12, n_head=12, n_embd=768, block_size=512)
MQAR = dict(n_layer=2, n_head=4, n_embd=128, block_size=256, multiple_of=64)
TINY = dict(n_layer=2, n_head=4, n_embd=64, block_size=64, multiple_of=32)
# Rows that are a mixer with other settings: --mixers takes these names as well.
VARIANTS = {"gau_softmax": ("gau", {"gau_attention": "softmax"})}


def mixer_settings(name: str, tiny: bool) -> tuple[str, dict]:
    """The mixer and config overrides of a --mixers name (a MIXERS name or a VARIANTS one)."""
    mixer, overrides = VARIANTS.get(name, (name, {}))
    return mixer, {**(TINY_MIXER_OVERRIDES.get(mixer, {}) if tiny else {}), **overrides}


# --- posts -----------------------------------------------------------------------------

def synthetic_docs(n: int, vocab: int, block: int, seed: int) -> list[np.ndarray]:
    """Token documents: a sparse Markov chain over Zipfian tokens, plus copied spans.

    The chain (each token's 4 likely followers) is the same for every seed: the splits
    differ in their documents, not in their language.
    """
    ids = np.arange(3, vocab)  # 0-2 are reserved (pad, bos, eos)
    zipf = 1.0 / np.arange(1, ids.size + 1)
    zipf /= zipf.sum()
    successors = np.random.default_rng(0).choice(ids, size=(vocab, 4), p=zipf)
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        length = int(rng.integers(block // 4, 2 * block))
        doc = np.empty(length, dtype=np.int64)
        doc[0] = rng.choice(ids, p=zipf)
        follow = rng.random(length) < 0.7
        picks, noise = rng.integers(0, 4, length), rng.choice(ids, size=length, p=zipf)
        for t in range(1, length):
            doc[t] = successors[doc[t - 1], picks[t]] if follow[t] else noise[t]
        if length >= 96 and rng.random() < 0.5:  # a span repeated later: recall pays
            span = int(rng.integers(16, 48))
            src = int(rng.integers(0, length // 2 - span))
            dst = int(rng.integers(length // 2, length - span))
            doc[dst : dst + span] = doc[src : src + span]
        docs.append(doc)
    return docs


def write_synthetic(out: str, *, vocab: int, block: int, docs: int, seed: int = 0) -> str:
    """Writes (or reuses) the synthetic corpus: ``docs`` train and docs/10 eval documents."""
    uri = f"file://{os.path.abspath(out)}/records/mixer-quality/v=1"
    config = {"vocab": vocab, "block": block, "docs": docs, "seed": seed, "chain": 2}
    if reusable_dataset(uri, config):
        return uri
    with DatasetWriter(uri=uri, dataset="mixer-quality", version="1",
                       feature_spec={"input_ids": VarLenFeature("int64")},
                       max_records_per_shard=max(64, docs // 8), config=config) as writer:
        for split, n, s in (("train", docs, seed), ("eval", max(8, docs // 10), seed + 1)):
            for doc in synthetic_docs(n, vocab, block, s):
                writer.write(split, encode_example({"input_ids": doc}))
    return uri


def posts_loss(cfg: LMConfig, args, dataset_uri: str) -> dict:
    """Trains ``cfg`` through the trainer; returns its eval loss and training time."""
    out = os.path.join(os.path.abspath(args.out), "runs", f"{cfg.mixers[0]}-{cfg.n_layer}")
    shutil.rmtree(out, ignore_errors=True)
    cuda = args.device == "cuda"
    train = TrainConfig(kind="lm", steps=args.steps, batch_size=args.batch_size,
                        block_size=cfg.block_size, lr=args.lr, min_lr=args.lr / 10,
                        warmup_steps=max(1, args.steps // 10), eos_id=EOS,
                        device=args.device, precision="bf16" if cuda else "fp32",
                        compile=args.compile, log_every=max(1, args.steps // 4),
                        eval_batches=args.eval_batches, num_workers=2 if cuda else 0,
                        progress=False, seed=0)
    t0 = time.perf_counter()
    result = train_model("lm", dataset_uri=dataset_uri, out_uri=f"file://{out}",
                         model_config=cfg, train_config=train)
    return {"val_loss": result.eval_metrics.get("loss"), "train_loss": result.final_loss,
            "eval_tokens": result.eval_metrics.get("tokens"),
            "seconds": time.perf_counter() - t0}


# --- MQAR ------------------------------------------------------------------------------

def mqar_batch(batch: int, T: int, pairs: int, vocab: int,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (B, T): pairs ``k v`` then the keys again among filler 0s.

    Keys come from ``[3, vocab/2)`` (distinct within a sequence), values from
    ``[vocab/2, vocab)``; a target is a query's value at the query's position, -100 elsewhere.
    """
    if 3 * pairs > T or pairs > vocab // 2 - 3:
        raise ValueError(f"{pairs} pairs do not fit T={T}, vocab={vocab}")
    keys = torch.rand(batch, vocab // 2 - 3, generator=gen).argsort(-1)[:, :pairs] + 3
    values = torch.randint(vocab // 2, vocab, (batch, pairs), generator=gen)
    x = torch.zeros(batch, T, dtype=torch.long)
    x[:, 0 : 2 * pairs : 2], x[:, 1 : 2 * pairs : 2] = keys, values
    where = torch.rand(batch, T - 2 * pairs, generator=gen).argsort(-1)[:, :pairs] + 2 * pairs
    order = torch.rand(batch, pairs, generator=gen).argsort(-1)
    x.scatter_(1, where, keys.gather(1, order))
    y = torch.full((batch, T), -100, dtype=torch.long)
    y.scatter_(1, where, values.gather(1, order))
    return x, y


def mqar_accuracy(cfg: LMConfig, args) -> dict:
    """Trains ``cfg`` on fresh MQAR batches; accuracy on a fixed held-out set."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = DecoderLM(cfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}], lr=args.mqar_lr,
                            betas=(0.9, 0.98))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    gen = torch.Generator().manual_seed(1)
    T, warm = cfg.block_size, max(1, args.mqar_steps // 10)
    t0 = time.perf_counter()
    for step in range(args.mqar_steps):
        lr = args.mqar_lr * min(1.0, (step + 1) / warm) * 0.5 * (
            1 + math.cos(math.pi * step / args.mqar_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = (t.to(device) for t in mqar_batch(args.mqar_batch, T, args.pairs, cfg.vocab_size,
                                                 gen))
        with autocast:
            _, loss = model(x, y, return_logits=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    held = torch.Generator().manual_seed(12345)
    correct = total = 0
    with torch.no_grad(), autocast:
        for _ in range(args.mqar_eval):
            x, y = (t.to(device) for t in mqar_batch(args.mqar_batch, T, args.pairs,
                                                     cfg.vocab_size, held))
            logits, _ = model(x)
            query = y != -100
            correct += int((logits.argmax(-1)[query] == y[query]).sum())
            total += int(query.sum())
    return {"accuracy": correct / total, "train_loss": float(loss.detach()),
            "seconds": time.perf_counter() - t0}


# --- main ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny models and budgets: a smoke run")
    p.add_argument("--task", default="both", choices=["posts", "mqar", "both"])
    p.add_argument("--mixers", default=",".join(MIXERS + tuple(VARIANTS)),
                   help="comma list of mixer names (and gau_softmax)")
    p.add_argument("--out", default="/tmp/shardforge-mixer-quality", help="runs, synthetic data")
    p.add_argument("--dataset", default=None, help="posts token dataset URI (default: synthetic)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="the dataset's vocabulary (default 50304; synthetic 4096; tiny 64)")
    p.add_argument("--block-size", type=int, default=None, help="posts T (default 512)")
    p.add_argument("--steps", type=int, default=None, help="posts optimizer steps (default 300)")
    p.add_argument("--batch-size", type=int, default=None, help="posts batch (default 16)")
    p.add_argument("--lr", type=float, default=None, help="posts peak lr (default 1e-3)")
    p.add_argument("--eval-batches", type=int, default=None, help="posts eval reader batches")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the posts models (slower start, faster steps)")
    p.add_argument("--mqar-len", type=int, default=None, help="MQAR T (default 64)")
    p.add_argument("--pairs", type=int, default=None, help="MQAR key-value pairs (default 8)")
    p.add_argument("--mqar-vocab", type=int, default=None, help="MQAR vocabulary (default 64: at 128 to 8,192 "
                        "2-layer attention sat on a plateau for 3,000 steps)")
    p.add_argument("--mqar-steps", type=int, default=None, help="MQAR steps (default 4000)")
    p.add_argument("--mqar-batch", type=int, default=None, help="MQAR batch (default 64)")
    p.add_argument("--mqar-lr", type=float, default=3e-3)
    p.add_argument("--mqar-eval", type=int, default=None, help="MQAR held-out batches (16)")
    args = p.parse_args(argv)
    tiny = args.tiny
    if args.tiny and args.device == "cpu":
        torch.set_num_threads(1)  # tiny matrices: threads only contend
    defaults = dict(block_size=(32, 512), steps=(6, 300), batch_size=(4, 16), lr=(3e-3, 1e-3),
                    eval_batches=(2, 16), mqar_len=(64, 64), pairs=(8, 8), mqar_vocab=(64, 64),
                    mqar_steps=(20, 4000), mqar_batch=(8, 64), mqar_eval=(2, 16))
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if tiny else full)
    mixers = [m.strip() for m in args.mixers.split(",") if m.strip()]
    unknown = [m for m in mixers if m not in MIXERS and m not in VARIANTS]
    if unknown:
        p.error(f"unknown --mixers {unknown} (expected one of {MIXERS + tuple(VARIANTS)})")
    rows: dict[str, dict] = {m: {} for m in mixers}

    if args.task in ("posts", "both"):
        vocab = args.vocab_size or (64 if tiny else 50304 if args.dataset else 4096)
        # enough documents (mean length ~ block) for every step's tokens, and some more
        docs = math.ceil(1.2 * args.steps * args.batch_size * args.block_size / (
            0.55 * args.block_size)) + 16
        uri = args.dataset or write_synthetic(args.out, vocab=vocab, block=args.block_size,
                                              docs=docs)
        base = {**(TINY if tiny else POSTS), "vocab_size": vocab, "block_size": args.block_size}
        target = count_params(LMConfig(**base))
        for m in mixers:
            try:
                mixer, overrides = mixer_settings(m, tiny)
                cfg = matched_config(mixer, base, target, **overrides)
                rows[m]["posts"] = {"params": count_params(cfg), "n_layer": cfg.n_layer,
                                    **posts_loss(cfg, args, uri)}
            except Exception as err:  # a mixer that fails is reported, the others still run
                rows[m]["posts"] = {"error": f"{type(err).__name__}: {err}"[:300]}
            print(f"posts {m}: {rows[m]['posts']}", file=sys.stderr, flush=True)

    if args.task in ("mqar", "both"):
        base = {**(TINY if tiny else MQAR), "vocab_size": args.mqar_vocab,
                "block_size": args.mqar_len}
        target = count_params(LMConfig(**base))
        for m in mixers:
            try:
                mixer, overrides = mixer_settings(m, tiny)
                cfg = matched_config(mixer, base, target, **overrides)
                rows[m]["mqar"] = {"params": count_params(cfg), "n_layer": cfg.n_layer,
                                   **mqar_accuracy(cfg, args)}
            except Exception as err:
                rows[m]["mqar"] = {"error": f"{type(err).__name__}: {err}"[:300]}
            print(f"mqar {m}: {rows[m]['mqar']}", file=sys.stderr, flush=True)

    ref = rows.get("attention", {}).get("posts", {}).get("val_loss")
    print(f"\n{'mixer':<15}{'params':>10}{'layers':>7}{'val loss':>10}{'vs attn':>9}"
          f"{'mqar params':>13}{'layers':>7}{'mqar acc':>10}")
    for m, row in rows.items():
        posts, mqar = row.get("posts", {}), row.get("mqar", {})
        loss, acc = posts.get("val_loss"), mqar.get("accuracy")
        gap = f"{loss / ref - 1:+.2%}" if loss is not None and ref else ""
        loss_text = f"{loss:.4f}" if loss is not None else ("error" if "error" in posts else "-")
        acc_text = f"{acc:.3f}" if acc is not None else ("error" if "error" in mqar else "-")
        p_params = f"{posts['params'] / 1e6:.2f}M" if "params" in posts else "-"
        m_params = f"{mqar['params'] / 1e6:.2f}M" if "params" in mqar else "-"
        print(f"{m:<15}{p_params:>10}{posts.get('n_layer', '-'):>7}{loss_text:>10}{gap:>9}"
              f"{m_params:>13}{mqar.get('n_layer', '-'):>7}{acc_text:>10}")
    result = {"device": args.device, "torch": torch.__version__, "task": args.task,
              "posts": {"dataset": args.dataset or "synthetic", "steps": args.steps,
                        "batch_size": args.batch_size, "block_size": args.block_size,
                        "lr": args.lr},
              "mqar": {"T": args.mqar_len, "pairs": args.pairs, "vocab": args.mqar_vocab,
                       "steps": args.mqar_steps, "batch": args.mqar_batch},
              "mixers": rows,
              "val_loss_vs_attention": {m: (r["posts"]["val_loss"] / ref - 1)
                                        for m, r in rows.items()
                                        if ref and r.get("posts", {}).get("val_loss")}}
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
