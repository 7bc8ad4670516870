"""Encode throughput: tf.Example writers per core, and analyze + encode on Beam and Spark vs peers.

Not a test. Generates posts-like rows once (a key, a text of ~200 UTF-8 bytes, a topic, a
length) as ``--files`` Parquet files under ``--data`` (reused by later runs), then:

- **Writers** (one process, no engine): the posts spec's transformed batches serialized by
  the columnar writer (:mod:`records.columnar_wire`, numba and numpy paths), by the Arrow-join
  writer it replaced (``benchmarks/examples_arrow_join.py``), by protobuf per row
  (``encode_example``) and by TensorFlow (``tf.train.Example(...).SerializeToString()`` from
  the rows as Python lists: what a user with TF would write). Rows per second per core from
  the thread's CPU time (stable on a shared machine), median and spread of ``--repeat`` runs.
- **Engines**, ``--repeat`` rounds, each a peer then the encode on the same rows, so that a
  round shares the machine's load: Beam (DirectRunner, ``--beam-workers`` processes; peer =
  read → hash each key → write text) and Spark (``local[--spark-cores]``; peer = Spark SQL
  read → write Parquet); the encode is the whole job (analyze over the train split,
  transform, serialize, shuffle, write shards, commit). Each run reports wall rows/s and the
  CPU seconds of the whole process tree (JVM, Python workers) per million rows.
- ``--profile``: the Spark encode's stages (Spark's REST API: task time, JVM CPU, shuffle)
  and the Python worker's steps per row (CPU µs, in process), to say where the time goes.

The default spec adds analyzers to the posts spec (a computed vocabulary, quantile buckets,
z-score statistics) so that analyze has work to do.

    python benchmarks/encode.py --writers-only --rows 200000        # writers per core
    python benchmarks/encode.py --rows 1000000 --repeat 3 --profile # writers + both engines
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.encode_profile import (  # noqa: E402  (needs ROOT on the path)
    CpuMeter,
    python_steps,
    spark_skeleton,
    spark_stages,
)

WORDS = ["spark", "beam", "tensor", "关于", "RoPE", "shard", "the", "of", "lake", "vocab", "é"]
TOPICS = ["nlp", "cv", "data", "systems", "other"]
SPLITS, SHARDS = {"train": 0.9, "eval": 0.1}, {"train": 8, "eval": 2}
POSTS_SPEC = os.path.join(ROOT, "conf", "features", "posts.yaml")
ANALYZED_SPEC = """\
key: doc_id
on_error: raise
features:
  input_ids: {kind: text, source: text, tokenizer: bytes, max_tokens: 512, append_eos: false}
  topic: {kind: categorical, source: topic, computed_vocabulary: {min_frequency: 1}}
  length: {kind: numeric, source: length, dtype: int64}
  length_bucket: {kind: bucketized, source: length, num_buckets: 8}
  length_z: {kind: numeric, source: length, normalize: z_score}
"""


def make_rows(n: int, seed: int = 0):
    """posts-like rows as one pyarrow Table."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    words = np.array(WORDS, dtype=object)
    picks = rng.integers(0, len(WORDS), size=(n, 32))
    texts = [" ".join(row) for row in words[picks]]
    return pa.table({
        "doc_id": [f"doc-{i:09d}" for i in range(n)],
        "text": texts,
        "topic": pa.array(np.array(TOPICS, dtype=object)[rng.integers(0, len(TOPICS), n)]),
        "length": pa.array(np.array([len(t) for t in texts], dtype=np.int64)),
    })


def generate(folder: Path, rows: int, files: int) -> list[str]:
    """The rows as ``files`` Parquet files under ``folder``, written once (``_DONE`` marks it)."""
    import pyarrow.parquet as pq

    if not (folder / "_DONE").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        table = make_rows(rows)
        step = -(-rows // files)
        for i in range(files):  # one row group each: the unit both engines split work by
            pq.write_table(table.slice(i * step, step), folder / f"part-{i:05d}.parquet",
                           row_group_size=step)
        (folder / "_DONE").touch()
    return [f"{folder}/*.parquet"]


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} {five:.1f} {fifteen:.1f}"


def _spread(values: list[float]) -> str:
    """``median (min–max)`` of rates, in thousands."""
    return (f"{statistics.median(values) / 1e3:9,.0f}k ({min(values) / 1e3:,.0f}–"
            f"{max(values) / 1e3:,.0f}k)")


def _values_of(encoded, spec) -> dict:
    """The Example values of a transformed batch, as ``features.transform.serialize`` builds them
    for numeric and text features (enough for the posts spec and the analyzed one)."""
    import numpy as np
    import pyarrow as pa

    from features.examples import Values

    out = {}
    for name in spec.encoded():
        column = encoded.column(name)
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            out[name] = Values("int64", column.values.to_numpy(), column.offsets.to_numpy())
        else:
            kind = "float32" if pa.types.is_floating(column.type) else "int64"
            out[name] = Values(kind, column.to_numpy(), np.arange(len(column) + 1))
    return out


def writers(args) -> None:
    """Rows/s per core of each tf.Example writer over the posts spec's transformed batches."""
    from benchmarks import examples_arrow_join
    from features.examples import serialize_examples
    from features.spec import load_spec
    from features.transform import transform_batch
    from records.columnar_wire import COMPILED, serialize_columns
    from records.example_codec import encode_example

    spec = load_spec(args.writers_spec or POSTS_SPEC)
    batches = [transform_batch(b, spec) for b in make_rows(args.rows).to_batches(args.batch)]
    values = [_values_of(b, spec) for b in batches]
    tokens = sum(len(b.column("input_ids").values) for b in batches) / args.rows
    print(f"writers: {args.rows:,} rows of {Path(args.writers_spec or POSTS_SPEC).name} "
          f"({tokens:.0f} tokens a row), batches of {args.batch:,}; CPU time of this thread")

    def arrow_join(v, n):
        return examples_arrow_join.serialize_examples(
            {k: examples_arrow_join.Values(x.kind, x.flat, x.offsets, x.present) for k, x in v.items()}, n)

    def per_row(v, n, serialize):
        columns = {k: (x.kind, x.flat.tolist(), x.offsets.tolist()) for k, x in v.items()}
        return [serialize({k: (kind, flat[o[i]:o[i + 1]]) for k, (kind, flat, o) in columns.items()})
                for i in range(n)]

    cases = [("columnar, numba (records.columnar_wire)", serialize_examples, None)] if COMPILED else []
    cases += [("columnar, numpy path (no numba)", lambda v, n: serialize_columns(
                  {k: x.column(k) for k, x in v.items()}, n, compiled=False), None),
              ("Arrow joins (before issue 19)", arrow_join, None),
              ("protobuf per row (encode_example)", lambda v, n: per_row(v, n, encode_example), 20_000)]
    try:
        cases.append(("TensorFlow tf.train.Example, per row", _tf_writer(), 20_000))
    except ImportError:
        print("  (tensorflow not installed: no TF row)")
    for what, fn, cap in cases:
        chosen = [(v, b.num_rows) for v, b in zip(values, batches, strict=True)]
        if cap:  # per-row writers: fewer rows, the rate is per row anyway
            chosen = chosen[:max(1, cap // args.batch)]
        rows = sum(n for _, n in chosen)
        fn(*chosen[0])  # warm-up: numba loads its cached kernels, TF its graph-free protos
        rates, walls = [], []
        for _ in range(args.repeat):
            cpu, wall = time.thread_time(), time.perf_counter()
            for v, n in chosen:
                fn(v, n)
            rates.append(rows / (time.thread_time() - cpu))
            walls.append(rows / (time.perf_counter() - wall))
        print(f"  {what:<42} {_spread(rates)} rows/s per core  (wall {_spread(walls)}; {_load()})",
              flush=True)


def _tf_writer():
    import tensorflow as tf

    lists = {"int64": ("int64_list", tf.train.Int64List), "float32": ("float_list", tf.train.FloatList),
             "bytes": ("bytes_list", tf.train.BytesList)}

    def write(v, n):
        columns = {k: (x.kind, x.flat.tolist(), x.offsets.tolist()) for k, x in v.items()}
        return [tf.train.Example(features=tf.train.Features(feature={
            k: tf.train.Feature(**{lists[kind][0]: lists[kind][1](value=flat[o[i]:o[i + 1]])})
            for k, (kind, flat, o) in columns.items()})).SerializeToString() for i in range(n)]
    return write


def _rounds(engine: str, args, steps) -> None:
    """``--repeat`` rounds of each step; prints wall rows/s, CPU s per 1M rows, and encode/peer."""
    results: dict[str, list[tuple[float, float]]] = {what: [] for what, _ in steps}
    for round_ in range(args.repeat):
        for what, fn in steps:
            with CpuMeter() as meter:
                wall = time.perf_counter()
                fn()
                wall = time.perf_counter() - wall
            parts = {k: v / args.rows * 1e6 for k, v in meter.parts.items()}
            cpu = sum(parts.values())
            results[what].append((args.rows / wall, cpu))
            print(f"  {engine:<6} round {round_ + 1}: {what:<44} {args.rows / wall:>10,.0f} rows/s "
                  f"{cpu:5.1f} CPU s/1M rows (" + ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
                  + f"; {_load()})", flush=True)
    peer = [r for r, _ in results[steps[0][0]]]
    for what, runs in results.items():
        rates, cpus = [r for r, _ in runs], [c for _, c in runs]
        ratio = [r / p for r, p in zip(rates, peer, strict=True)]
        print(f"  {engine:<6} {what:<44} {_spread(rates)} rows/s, CPU {statistics.median(cpus):6.1f} "
              f"s/1M rows, vs peer {statistics.median(ratio):.2f}x ({min(ratio):.2f}–{max(ratio):.2f})")


def bench_beam(args, spec, inputs: list[str], work: Path) -> None:
    import apache_beam as beam

    from core.lake import Lake
    from pipelines.beam.encode import _beam_path, run_encode
    from pipelines.beam.launch import pipeline_options

    options = {"direct_num_workers": args.beam_workers,
               "direct_running_mode": "multi_processing" if args.beam_workers > 1 else "in_memory"}
    paths = [_beam_path(p) for p in inputs]

    def peer():
        import hashlib

        with beam.Pipeline(options=pipeline_options("DirectRunner", options)) as p:
            _ = (p | "Read" >> beam.io.ReadFromParquet(paths[0], columns=["doc_id", "text"])
                 | "Hash" >> beam.Map(lambda r: hashlib.sha256(r["doc_id"].encode()).hexdigest())
                 | "Write" >> beam.io.WriteToText(str(work / "beam-peer" / "part")))

    def encode():
        result = run_encode(lake=Lake(str(work / "beam-lake")), inputs=inputs, spec=spec,
                            dataset="bench", version="1", splits=SPLITS, shards=SHARDS,
                            options=options, **_statistics_arg(args, run_encode))
        if result.documents != args.rows:
            raise RuntimeError(f"beam encoded {result.documents} of {args.rows} rows")

    _rounds("beam", args, [(f"peer: read → hash → write ({args.beam_workers} workers)", peer),
                           ("encode (analyze + transform + write + commit)", encode)])


def _statistics_arg(args, run_encode) -> dict:
    """``statistics=False`` where the engine's run_encode takes it and ``--no-statistics``."""
    import inspect

    takes = "statistics" in inspect.signature(run_encode).parameters
    return {"statistics": False} if args.no_statistics and takes else {}


def bench_spark(args, spec, inputs: list[str], work: Path) -> None:
    from core.config import load_config
    from core.lake import Lake
    from pipelines.spark.encode import run_encode
    from pipelines.spark.session import build_session

    # Spark's Python workers import benchmarks.encode_profile (the skeleton's steps) too.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    lake = Lake(str(work / "spark-lake"))
    cfg = load_config(lake_root=lake.root)
    master = f"local[{args.spark_cores}]"
    conf = {**cfg.spark.conf, "spark.ui.enabled": "true"} if args.profile else cfg.spark.conf
    spark = build_session(cfg.spark.model_copy(update={"master": master, "conf": conf}), lake)
    try:
        def peer():
            spark.read.parquet(*inputs).write.mode("overwrite").parquet(str(work / "spark-peer"))

        def encode():
            result = run_encode(spark, lake=lake, inputs=inputs, spec=spec, dataset="bench",
                                version="1", splits=SPLITS, shards=SHARDS,
                                **_statistics_arg(args, run_encode))
            if result.documents != args.rows:
                raise RuntimeError(f"spark encoded {result.documents} of {args.rows} rows")

        def skeleton():
            spark_skeleton(spark, inputs, spec, partitions=sum(SHARDS.values()) + 1)

        peer()  # warm-up: the JVM's first job pays for class loading, numba loads its kernels
        encode()
        steps = [(f"peer: Spark SQL read → write Parquet ({master})", peer),
                 ("encode (analyze + transform + write + commit)", encode)]
        if args.profile:
            steps.append(("skeleton: encode's plan, no feature work", skeleton))
        _rounds("spark", args, steps)
        if args.profile:
            spark_stages(spark)
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    from features.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers-only", action="store_true", help="time the writers alone")
    parser.add_argument("--writers-spec", help="spec of the writers' rows (default: the posts spec)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000, help="rows per writer call")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (rounds for engines)")
    parser.add_argument("--spec", help="engines' feature spec YAML (default: posts + analyzers)")
    parser.add_argument("--engines", default="beam,spark", help="comma-separated: beam, spark")
    parser.add_argument("--no-statistics", action="store_true",
                        help="engines skip the dataset statistics (to measure what they cost)")
    parser.add_argument("--profile", action="store_true",
                        help="Spark's stage metrics and the Python steps per row")
    parser.add_argument("--files", type=int, default=8, help="Parquet files the rows are split into")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "shardforge-bench-encode"))
    parser.add_argument("--beam-workers", type=int, default=2)
    parser.add_argument("--spark-cores", type=int, default=2)
    args = parser.parse_args(argv)

    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    spec_path = Path(args.spec) if args.spec else data / "analyzed.yaml"
    if not args.spec:
        spec_path.write_text(ANALYZED_SPEC, encoding="utf-8")
    spec = load_spec(spec_path)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; {args.rows:,} rows; {time.strftime('%Y-%m-%d %H:%M')}; "
          f"{_load()}")
    writers(args)
    if args.writers_only:
        return 0
    if args.profile:
        batches = make_rows(args.rows).to_batches(10_000)  # Spark's Arrow batch size
        print(f"  python steps of an encode task, CPU µs per row ({args.rows:,} rows, {_load()}):")
        for what, median, low, high in python_steps(batches, spec, splits=SPLITS, shards=SHARDS,
                                                    repeat=args.repeat):
            print(f"    {what:<40} {median:6.2f} ({low:.2f}–{high:.2f})")
    inputs = generate(data / f"rows={args.rows}-files={args.files}", args.rows, args.files)
    work = Path(tempfile.mkdtemp(prefix="bench-encode-", dir=args.data))
    print(f"engines: spec {spec_path}, {args.files} Parquet files")
    try:
        for engine in args.engines.split(","):
            {"beam": bench_beam, "spark": bench_spark}[engine.strip()](args, spec, inputs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
