"""Where RoPE goes in the decoder's attention, on CUDA: one block, or the whole trainer.

Not a test. The attention is written three ways, side by side in one process:

  ours:      RoPE on q and k at once over the (B, T, 2, nh, hs) view of the QKV output
             (``models.lm.CausalSelfAttention`` as it is);
  separate:  RoPE on q and on k apart (the peer: what the model did before);
  no-rope:   no rotation at all (a floor: what RoPE costs in all; block mode only).

Block mode (default) times one compiled ``models.lm.Block`` of the ``small`` preset at
16x1024 tokens under bf16 autocast, forward + backward, with FlashAttention and with cuDNN
attention. The GPU idles at a low clock, so it first runs matmuls for a few seconds, and
every variant is timed in two interleaved passes (the better median counts): a variant
timed first otherwise looks slower than it is.

Trainer mode (``--trainer``) runs ``benchmarks/train_lm.py`` with the arguments after
``--`` twice, ours then separate, and prints their tokens/s ratio.

    python benchmarks/lm_block.py
    python benchmarks/lm_block.py --trainer -- --out /tmp/sfb --configs bf16 --batch-size 32 --steps 60
"""

from __future__ import annotations

import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend  # noqa: E402

import models.lm as lm  # noqa: E402
from models.attention import pinned  # noqa: E402


def _separate(self, x, cos, sin, cache=None, layer=0, mask=None):
    B, T, C = x.shape
    hs = C // self.n_head
    q, k, v = self.qkv(x).split(C, dim=2)
    cos, sin = cos[:, None, :], sin[:, None, :]
    q = lm.apply_rope(q.view(B, T, self.n_head, hs), cos, sin).transpose(1, 2)
    k = lm.apply_rope(k.view(B, T, self.n_head, hs), cos, sin).transpose(1, 2)
    v = v.view(B, T, self.n_head, hs).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


def _no_rope(self, x, cos, sin, cache=None, layer=0, mask=None):
    B, T, C = x.shape
    q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


VARIANTS = {"ours": lm.CausalSelfAttention.forward, "separate": _separate, "no-rope": _no_rope}


def median_ms(fn, iters: int = 30) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_block(forward, backend: SDPBackend, batch: int, seq: int) -> float:
    """Median ms of one compiled block's forward + backward with ``forward`` as attention."""
    original = lm.CausalSelfAttention.forward
    lm.CausalSelfAttention.forward = forward
    try:
        torch._dynamo.reset()
        torch.manual_seed(0)
        cfg = lm.LMConfig.preset("small")
        block = torch.compile(lm.Block(cfg).cuda())
        cos, sin = (t.cuda() for t in lm.rope_cache(seq, cfg.head_size))
        x = torch.randn(batch, seq, cfg.n_embd, device="cuda", requires_grad=True)
        grad = torch.randn(batch, seq, cfg.n_embd, device="cuda", dtype=torch.bfloat16)

        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16), pinned(backend):
                y = block(x, cos, sin)
            y.backward(grad)

        return median_ms(step)
    finally:
        lm.CausalSelfAttention.forward = original


def warm_up_gpu(seconds: float = 3.0) -> None:
    """Runs bf16 matmuls for ``seconds``: an idle GPU's clock ramps up under load."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()


def block_mode() -> None:
    batch, seq = 16, 1024
    print(f"{torch.cuda.get_device_name()}: one small-preset block, {batch}x{seq} tokens, bf16, compiled")
    warm_up_gpu()
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
    rows: dict[str, float] = {}
    for timing_pass in (1, 2):
        for label, backend in backends.items():
            for name, forward in VARIANTS.items():
                key = f"{name}/{label}"
                ms = time_block(forward, backend, batch, seq)
                rows[key] = min(ms, rows.get(key, ms))
                print(f"  pass {timing_pass} {key:<16} {ms:7.3f} ms", flush=True)
    peer = rows["separate/flash"]
    for key, ms in rows.items():
        print(f"{key:<16} {ms:7.3f} ms   {peer / ms:5.2f}x vs separate/flash")


def trainer_mode(train_args: list[str]) -> None:
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import train_lm

    tokens_per_s = {}
    for name in ("ours", "separate"):
        lm.CausalSelfAttention.forward = VARIANTS[name]
        print(f"== attention: {name}", flush=True)
        result = train_lm.main(train_args)
        tokens_per_s[name] = {c: r["tokens_per_s"] for c, r in result["configs"].items()}
    for config, ours in tokens_per_s["ours"].items():
        print(f"{config}: ours {ours:,.0f} tokens/s, separate {tokens_per_s['separate'][config]:,.0f}"
              f" -> {ours / tokens_per_s['separate'][config]:.3f}x")


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    if sys.argv[1:2] == ["--trainer"]:
        trainer_mode(sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:])
    else:
        block_mode()


if __name__ == "__main__":
    main()
