"""Reader throughput: records.RecordDataset vs tf.data vs the `tfrecord` package.

Not a test. Writes the same shards once with our writer (N examples of 128 int64
token ids + 3 scalars, uncompressed), then reads them into batched tensors with

  (a) our RecordDataset, one process, CRCs verified (1 and 2 decode threads), with its
      numba kernels (varints, SSE 4.2 CRCs; records/read_kernels.py) and, as on a GPU
      host without numba, on its numpy path (numba hidden from the import system),
  (b) tf.data: TFRecordDataset -> batch -> tf.io.parse_example (parallel map),
      converted to numpy (TF verifies CRCs too),
  (c) the `tfrecord` package's TFRecordDataset + torch DataLoader (no CRC check),
  (d) our RecordDataset in a DataLoader with 2 workers (steady state, persistent
      workers), as tokens/s against a GPU that consumes 1M tokens/s.

Each reader runs in its own subprocess: TensorFlow and the `tfrecord` package
register the same protobuf names and cannot share a process.

    python benchmarks/reader.py --examples 200000 --out /tmp/shardforge-bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # benchmarks.bench_common, when run as a script
    sys.path.insert(0, ROOT)
TOKENS = 128
GPU_TOKENS_PER_S = 1_000_000


def _dataset_uri(args) -> str:
    return f"file://{os.path.abspath(args.out)}/records/bench/v=1"


def write_dataset(args) -> str:
    """Writes the benchmark dataset unless an identical one is already there."""
    import numpy as np

    from benchmarks.bench_common import reusable_dataset
    from records.example_codec import encode_example
    from records.spec import FixedLenFeature
    from records.writer import DatasetWriter

    uri = _dataset_uri(args)
    config = {"examples": args.examples, "vocab": args.vocab, "seed": 0, "shards": args.shards}
    if reusable_dataset(uri, config):
        return uri
    spec = {"tokens": FixedLenFeature((TOKENS,), "int64"), "label": FixedLenFeature((), "int64"),
            "weight": FixedLenFeature((), "float32"), "length": FixedLenFeature((), "int64")}
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    per_shard = -(-args.examples // args.shards)
    with DatasetWriter(uri=uri, dataset="bench", version="1", feature_spec=spec,
                       max_records_per_shard=per_shard, config=config) as w:
        for lo in range(0, args.examples, 10_000):
            n = min(10_000, args.examples - lo)
            tokens = rng.integers(0, args.vocab, (n, TOKENS))
            labels = rng.integers(0, 10, n).tolist()
            weights = rng.random(n).tolist()
            for i in range(n):
                w.write("train", encode_example({"tokens": tokens[i], "label": labels[i],
                                                 "weight": weights[i], "length": TOKENS}))
    print(f"wrote {args.examples} examples in {time.perf_counter() - t0:.1f}s to {uri}",
          file=sys.stderr)
    return uri


def _shard_files(uri: str) -> list[str]:
    from records.manifest import load_manifest

    root = uri[len("file://"):]
    return [os.path.join(root, s.path) for s in load_manifest(uri).splits["train"].shards]


def _timed(passes: int, one_pass) -> dict:
    one_pass()  # warm-up: page cache, imports, allocator
    rates = []
    for _ in range(passes):
        t0 = time.perf_counter()
        n = one_pass()
        rates.append(n / (time.perf_counter() - t0))
    return {"examples_per_s": statistics.median(rates), "best": max(rates), "worst": min(rates),
            "passes": passes}


def run_ours(args, threads: int) -> dict:
    from records.reader import RecordDataset

    ds = RecordDataset(_dataset_uri(args), "train", batch_size=args.batch_size,
                       verify_crc=True, threads=threads)

    def one_pass():
        return sum(b["tokens"].shape[0] for b in ds)
    return _timed(args.repeats, one_pass)


class _NoNumba:
    """An import hook that makes numba look absent (records then takes its numpy paths)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numba", "llvmlite"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def run_ours_numpy(args, threads: int) -> dict:
    sys.meta_path.insert(0, _NoNumba())
    from records.wire import compiled_kernels

    if compiled_kernels() is not None:
        raise RuntimeError("numba was imported before the hook: not the numpy path")
    return run_ours(args, threads)


def run_ours_dataloader(args) -> dict:
    from torch.utils.data import DataLoader

    from records.reader import RecordDataset

    ds = RecordDataset(_dataset_uri(args), "train", batch_size=args.batch_size)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    t0 = time.perf_counter()
    first = sum(b["tokens"].shape[0] for b in loader)
    out = _timed(args.repeats, lambda: sum(b["tokens"].shape[0] for b in loader))
    out["first_pass_with_startup_s"] = time.perf_counter() - t0 - 0  # informative only
    out["first_pass_examples"] = first
    return out


def run_tfdata(args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    files = _shard_files(_dataset_uri(args))
    spec = {"tokens": tf.io.FixedLenFeature([TOKENS], tf.int64),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "weight": tf.io.FixedLenFeature([], tf.float32),
            "length": tf.io.FixedLenFeature([], tf.int64)}
    best = None
    for reads in (None, tf.data.AUTOTUNE):  # report TF's better configuration
        ds = (tf.data.TFRecordDataset(files, num_parallel_reads=reads)
              .batch(args.batch_size)
              .map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)
              .prefetch(tf.data.AUTOTUNE))

        def one_pass(ds=ds):
            n = 0
            for b in ds:
                arrays = {k: v.numpy() for k, v in b.items()}
                n += arrays["tokens"].shape[0]
            return n
        res = _timed(args.repeats, one_pass)
        res["num_parallel_reads"] = "AUTOTUNE" if reads else "1"
        if best is None or res["examples_per_s"] > best["examples_per_s"]:
            best = res
    return best


def run_tfrecord_pkg(args) -> dict:
    import torch
    from tfrecord.torch.dataset import TFRecordDataset

    files = _shard_files(_dataset_uri(args))
    desc = {"tokens": "int", "label": "int", "weight": "float", "length": "int"}
    chain = torch.utils.data.ChainDataset([TFRecordDataset(f, None, desc) for f in files])
    loader = torch.utils.data.DataLoader(chain, batch_size=args.batch_size)
    return _timed(1, lambda: sum(b["tokens"].shape[0] for b in loader))


RUNNERS = {
    "ours_1_thread": lambda a: run_ours(a, 1),
    "ours_2_threads": lambda a: run_ours(a, 2),
    "ours_numpy_1_thread": lambda a: run_ours_numpy(a, 1),
    "ours_numpy_2_threads": lambda a: run_ours_numpy(a, 2),
    "tf_data": run_tfdata,
    "tfrecord_pkg": run_tfrecord_pkg,
    "ours_dataloader_2_workers": run_ours_dataloader,
}
LABELS = {
    "ours_1_thread": "ours RecordDataset, 1 process, 1 thread",
    "ours_2_threads": "ours RecordDataset, 1 process, 2 threads",
    "ours_numpy_1_thread": "ours, numpy path (no numba), 1 thread",
    "ours_numpy_2_threads": "ours, numpy path (no numba), 2 threads",
    "tf_data": "tf.data + parse_example (parallel)",
    "tfrecord_pkg": "tfrecord pkg + DataLoader (no CRC)",
    "ours_dataloader_2_workers": "ours + DataLoader(num_workers=2)",
}


def _machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.machine()} {model} x{os.cpu_count()} cpus, Python {platform.python_version()}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=200_000)
    p.add_argument("--out", default="/tmp/shardforge-bench")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--vocab", type=int, default=32_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1,
                   help="run every reader this many times, interleaved (noisy machines)")
    p.add_argument("--only", nargs="*", choices=list(RUNNERS), default=list(RUNNERS))
    p.add_argument("--run", choices=list(RUNNERS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run:
        print("RESULT " + json.dumps(RUNNERS[args.run](args)))
        return 0
    write_dataset(args)
    rounds: list[dict] = []
    for _ in range(args.rounds):  # interleaved: each round's ratios come from neighbouring runs
        results = {}
        for name in args.only:
            result = _run_one(name, args)
            if result is not None:
                results[name] = result
        _print_table(results, args)
        rounds.append(results)
    if args.rounds > 1:
        _print_rounds(rounds)
    return 0


def _run_one(name: str, args) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--run", name,
           *(f"--{k.replace('_', '-')}={v}" for k, v in
             (("examples", args.examples), ("out", args.out),
              ("batch_size", args.batch_size), ("shards", args.shards),
              ("vocab", args.vocab), ("repeats", args.repeats)))]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        print(f"{name} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(line[len("RESULT "):])


def _print_rounds(rounds: list[dict]) -> None:
    """Median over rounds of each reader's median, and of its ratio to tf.data per round."""
    print(f"over {len(rounds)} rounds (median of the rounds' medians; min-max of every pass):")
    for name in rounds[0]:
        runs = [r[name] for r in rounds if name in r]
        ratios = [r[name]["examples_per_s"] / r["tf_data"]["examples_per_s"]
                  for r in rounds if name in r and "tf_data" in r]
        line = (f"  {LABELS[name]:44s} {statistics.median(x['examples_per_s'] for x in runs):10,.0f}"
                f" ({min(x['worst'] for x in runs):,.0f}-{max(x['best'] for x in runs):,.0f})")
        if ratios and name != "tf_data":
            line += (f"  vs tf.data {statistics.median(ratios):.2f}x "
                     f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
        print(line)


def _print_table(results: dict, args) -> None:
    print(f"machine: {_machine()}")
    print(f"data: {args.examples} examples x ({TOKENS} int64 tokens < {args.vocab} + 3 scalars), "
          f"{args.shards} uncompressed shards, batch {args.batch_size}; median of "
          f"{args.repeats} passes after a warm-up")
    print(f"{'reader':44s} {'examples/s':>12s} {'tokens/s':>14s}")
    for name, r in results.items():
        eps = r["examples_per_s"]
        spread = f"{r['worst']:,.0f}-{r['best']:,.0f}" if "worst" in r else ""
        print(f"{LABELS[name]:44s} {eps:12,.0f} {eps * TOKENS:14,.0f}  {spread}")
    tf = results.get("tf_data", {}).get("examples_per_s")
    pkg = results.get("tfrecord_pkg", {}).get("examples_per_s")
    for name in ("ours_1_thread", "ours_2_threads", "ours_numpy_1_thread",
                 "ours_numpy_2_threads"):
        ours = results.get(name, {}).get("examples_per_s")
        if ours and tf:
            print(f"ratio {LABELS[name]} / tf.data: {ours / tf:.2f}")
        if ours and pkg:
            print(f"ratio {LABELS[name]} / tfrecord pkg: {ours / pkg:.2f}")
    dl = results.get("ours_dataloader_2_workers", {}).get("examples_per_s")
    if dl:
        print(f"DataLoader(2 workers): {dl * TOKENS:,.0f} tokens/s = "
              f"{dl * TOKENS / GPU_TOKENS_PER_S:.1f}x a GPU consuming 1M tokens/s")


if __name__ == "__main__":
    sys.exit(main())
