"""What per-feature statistics cost an encode: the same encode with and without them.

Not a test. Uses :mod:`benchmarks.encode`'s posts-like rows (``--files`` Parquet files under
``--data``, generated once) and the posts feature spec (``--spec`` for another), then in one
run:

- **in process**: :func:`pipelines.encode.shards.route` over Arrow batches, without and with
  statistics (the extra transform and the counting), CPU time, median of ``--repeat`` passes;
- **engines**: the whole encode (analyze, transform, statistics, write, commit) on Beam
  (DirectRunner, ``--beam-workers``) and on Spark (``local[--spark-cores]``), ``--runs``
  times each way. The two ways alternate (with, without, without, with, …) so that a change
  in the machine's load hits both alike. Each run is timed twice: wall time, and CPU time
  (user + system) of this process and every process below it (Beam's workers, Spark's JVM
  and Python workers; from ``/proc``, so Linux only), which a busy machine disturbs far
  less than wall time. Each way's median and spread (min–max) are printed, and the cost is
  ``median(with) / median(without) - 1`` next to the median of the per-pair ratios;
- **share**: the CPU that statistics add in process (route with minus route without) as a
  share of the engine's whole encode CPU: the cost per row, which the engines' A/B above
  resolves only when the machine is quiet (a run's CPU varies by ±10% under load).

The statistics are switched off with ``run_encode(..., statistics=False)``
(:class:`~pipelines.encode.shards.ShardPlan`'s ``statistics``); everything else is the
same code. A run with statistics is checked to have written ``statistics.json`` and one
without to have none.

    python benchmarks/encode_statistics.py --rows 200000 --runs 5          # both engines
    python benchmarks/encode_statistics.py --rows 50000 --runs 3 --engines beam
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.encode import SPLITS, _load, generate, make_rows  # noqa: E402

SHARDS = {"train": 8, "eval": 2}


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def tree_cpu_seconds() -> float:
    """user + system CPU seconds of this process and its descendants, live or reaped."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in {os.getpid(), *_descendants(os.getpid())}:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:  # gone since it was listed: its time is in its parent's cutime
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def _median_spread(seconds: list[float]) -> str:
    return (f"median {statistics.median(seconds):7.2f} s  (min {min(seconds):.2f}, "
            f"max {max(seconds):.2f}, n={len(seconds)})")


def in_process(args, spec) -> float:
    """route() without and with statistics on Arrow batches; returns the CPU seconds that
    statistics add (median with minus median without)."""
    from features.statistics import SpecStatistics
    from pipelines.encode.shards import ShardPlan, route

    batches = make_rows(args.rows).to_batches(max_chunksize=args.batch)
    plan = ShardPlan(SPLITS, SHARDS)
    stats = SpecStatistics(spec, list(plan.shards))
    ways = {"route, no statistics": lambda b: route(b, spec, None, plan),
            "route + statistics": lambda b: route(b, spec, None, plan, stats)}
    for fn in ways.values():
        fn(batches[0])  # warm-up: the numba kernel compiles (or loads) here
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeat):
        for name, fn in ways.items():
            start = time.process_time()
            for batch in batches:
                fn(batch)
            times[name].append(time.process_time() - start)
    base = statistics.median(times["route, no statistics"])
    for name, seconds in times.items():
        rate = args.rows / statistics.median(seconds)
        print(f"  in process  {name:<24} {rate:>11,.0f} rows/CPU-s "
              f"({100 * statistics.median(seconds) / base:5.1f}% of route)  CPU {_median_spread(seconds)}",
              flush=True)
    return statistics.median(times["route + statistics"]) - base


def _engine_runner(engine: str, args, spec, inputs: list[str], work: Path):
    """``run(with_statistics, i) -> seconds`` for one engine (Spark: one session for all)."""
    from core.lake import Lake

    if engine == "beam":
        from pipelines.beam.encode import run_encode

        options = {"direct_num_workers": args.beam_workers,
                   "direct_running_mode": "multi_processing" if args.beam_workers > 1 else "in_memory"}

        def encode(lake, version, statistics_on):
            return run_encode(lake=lake, inputs=inputs, spec=spec, dataset="bench", version=version,
                              splits=SPLITS, shards=SHARDS, options=options,
                              statistics=statistics_on)
        stop = None
    else:
        from core.config import load_config
        from pipelines.spark.encode import run_encode
        from pipelines.spark.session import build_session

        lake0 = Lake(str(work / "spark-lake"))
        cfg = load_config(lake_root=lake0.root)
        spark = build_session(cfg.spark.model_copy(update={"master": f"local[{args.spark_cores}]"}),
                              lake0)
        spark.read.parquet(*inputs).count()  # warm-up: the JVM's first job loads its classes

        def encode(lake, version, statistics_on):
            return run_encode(spark, lake=lake, inputs=inputs, spec=spec, dataset="bench",
                              version=version, splits=SPLITS, shards=SHARDS,
                              statistics=statistics_on)
        stop = spark.stop

    def run(statistics_on: bool, i: int) -> tuple[float, float]:
        lake = Lake(str(work / f"{engine}-lake"))
        version = f"{'with' if statistics_on else 'without'}{i}"
        start, cpu = time.perf_counter(), tree_cpu_seconds()
        result = encode(lake, version, statistics_on)
        seconds, cpu = time.perf_counter() - start, tree_cpu_seconds() - cpu
        if result.documents != args.rows:
            raise RuntimeError(f"{engine} encoded {result.documents} of {args.rows} rows")
        if ("statistics" in result.artifacts) != statistics_on:
            raise RuntimeError(f"{engine}: statistics.json {'missing' if statistics_on else 'written'}")
        shutil.rmtree(lake.local_path(lake.records("bench", version)))
        return seconds, cpu

    return run, stop


def engines(args, spec, inputs: list[str], work: Path, added: float) -> None:
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        run, stop = _engine_runner(engine, args, spec, inputs, work)
        try:
            run(True, -1)  # warm-up: worker start, numba cache, page cache
            times: dict[tuple[bool, str], list[float]] = {}
            for i in range(args.runs):
                for way in ((True, False) if i % 2 == 0 else (False, True)):
                    wall, cpu = run(way, i)
                    times.setdefault((way, "wall"), []).append(wall)
                    times.setdefault((way, "CPU"), []).append(cpu)
                    print(f"  {engine:<6} run {i} {'with' if way else 'without'} statistics: "
                          f"{wall:.2f} s wall, {cpu:.2f} s CPU ({_load()})", flush=True)
        finally:
            if stop is not None:
                stop()
        for clock in ("wall", "CPU"):
            with_s, without_s = times[(True, clock)], times[(False, clock)]
            for way, label in ((without_s, "without statistics"), (with_s, "with statistics")):
                print(f"  {engine:<6} {clock:<4} {label:<19} {_median_spread(way)}")
            pairs = statistics.median(w / o for w, o in zip(with_s, without_s, strict=True))
            print(f"  {engine:<6} {clock:<4} statistics cost: "
                  f"{100 * (statistics.median(with_s) / statistics.median(without_s) - 1):+.1f}% "
                  f"(medians); median of per-pair ratios {100 * (pairs - 1):+.1f}%", flush=True)
        whole = statistics.median(times[(True, "CPU")])
        print(f"  {engine:<6} share: statistics add {added:.3f} CPU-s in process = "
              f"{100 * added / whole:.1f}% of the encode's {whole:.2f} CPU-s", flush=True)


def main(argv: list[str] | None = None) -> int:
    import platform

    from features.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5, help="encodes per way and engine")
    parser.add_argument("--repeat", type=int, default=7, help="in-process passes per way")
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--spec", default=os.path.join(ROOT, "conf", "features", "posts.yaml"))
    parser.add_argument("--engines", default="beam,spark", help="comma-separated: beam, spark")
    parser.add_argument("--files", type=int, default=8, help="Parquet files the rows are split into")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "shardforge-bench-encode"))
    parser.add_argument("--beam-workers", type=int, default=2)
    parser.add_argument("--spark-cores", type=int, default=2)
    args = parser.parse_args(argv)

    spec = load_spec(args.spec)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; {args.rows:,} rows; spec {args.spec}; {_load()}")
    added = in_process(args, spec)
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    inputs = generate(data / f"rows={args.rows}-files={args.files}", args.rows, args.files)
    work = Path(tempfile.mkdtemp(prefix="bench-statistics-", dir=args.data))
    try:
        engines(args, spec, inputs, work, added)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
