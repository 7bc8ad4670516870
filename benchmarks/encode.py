"""Encode throughput: the feature transform alone, and analyze + encode on Beam and on Spark.

Not a test. Generates posts-like rows once (a key, a text of ~200 UTF-8 bytes, a topic, a
length) as ``--files`` Parquet files under ``--data`` (reused by later runs), then, in one
run and side by side, each engine next to a named peer doing the least work an engine does:

- **Beam** (DirectRunner, ``--beam-workers`` processes): peer = a trivial pipeline reading
  the rows, hashing each key and writing text; then analyze alone (``CombineGlobally`` of
  :class:`AnalyzeFn` over the train split) and the whole encode (analyze + transform + write
  + commit, :func:`pipelines.beam.encode.run_encode`).
- **Spark** (``local[--spark-cores]``): peer = plain Spark SQL reading the Parquet and
  writing it back; then :func:`pipelines.spark.encode.analyze` and the whole
  :func:`pipelines.spark.encode.run_encode`.

The default spec adds analyzers to the posts spec (a computed vocabulary, quantile buckets,
z-score statistics) so that analyze has work to do. Rates are input rows (examples, in the
document layout) per second of wall time; the load average is printed with each, since the
machine may be shared.

    python benchmarks/encode.py --rows 1000000              # both engines + transform alone
    python benchmarks/encode.py --rows 20000 --engines beam # a quick look
    python benchmarks/encode.py --transform-only --rows 200000 [--serialize]
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

WORDS = ["spark", "beam", "tensor", "关于", "RoPE", "shard", "the", "of", "lake", "vocab", "é"]
TOPICS = ["nlp", "cv", "data", "systems", "other"]
SPLITS, SHARDS = {"train": 0.9, "eval": 0.1}, {"train": 8, "eval": 2}
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


def _time(fn, batches, repeat: int) -> float:
    fn(batches[0])  # warm-up: caches (static artifacts, lookup arrays)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for batch in batches:
            fn(batch)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} {five:.1f} {fifteen:.1f}"


def _report(engine: str, what: str, rows: int, seconds: float) -> None:
    print(f"  {engine:<6} {what:<46} {rows / seconds:>11,.0f} rows/s  ({seconds:6.1f} s, {_load()})",
          flush=True)


def transform_only(args, spec) -> None:
    """In one process, no engine: analyze once, then the median of the transform passes."""
    from features.analyzers import analyze
    from features.transform import encode, transform

    table = make_rows(args.rows)
    batches = table.to_batches(max_chunksize=args.batch)
    start = time.perf_counter()
    artifacts = analyze(spec, batches, splits=SPLITS)
    _report("-", "analyze (in process, train split)", args.rows, time.perf_counter() - start)
    seconds = _time(lambda b: transform(b, spec, artifacts), batches, args.repeat)
    _report("-", "transform (Arrow → encoded columns)", args.rows, seconds)
    if args.serialize:
        seconds = _time(lambda b: encode(b, spec, artifacts), batches, max(1, args.repeat // 3))
        _report("-", "encode (transform + tf.Example bytes)", args.rows, seconds)


def bench_beam(args, spec, inputs: list[str], work: Path) -> None:
    import apache_beam as beam

    from core.lake import Lake
    from pipelines.beam.encode import _beam_path, run_encode
    from pipelines.beam.encode_fns import AnalyzeFn
    from pipelines.beam.launch import pipeline_options
    from pipelines.encode.shards import analysis_columns

    options = {"direct_num_workers": args.beam_workers,
               "direct_running_mode": "multi_processing" if args.beam_workers > 1 else "in_memory"}
    paths = [_beam_path(p) for p in inputs]

    def peer():
        import hashlib

        with beam.Pipeline(options=pipeline_options("DirectRunner", options)) as p:
            _ = (p | "Read" >> beam.io.ReadFromParquet(paths[0], columns=["doc_id", "text"])
                 | "Hash" >> beam.Map(lambda r: hashlib.sha256(r["doc_id"].encode()).hexdigest())
                 | "Write" >> beam.io.WriteToText(str(work / "beam-peer" / "part")))

    def analyze():
        with beam.Pipeline(options=pipeline_options("DirectRunner", options)) as p:
            _ = (p | "List" >> beam.Create(paths)
                 | "Read" >> beam.io.ReadAllFromParquetBatched(columns=analysis_columns(spec))
                 | "Analyze" >> beam.CombineGlobally(AnalyzeFn(spec, SPLITS))
                 | "Keep" >> beam.Map(lambda a: None))

    def encode():
        result = run_encode(lake=Lake(str(work / "beam-lake")), inputs=inputs, spec=spec,
                            dataset="bench", version="1", splits=SPLITS, shards=SHARDS,
                            options=options)
        if result.documents != args.rows:
            raise RuntimeError(f"beam encoded {result.documents} of {args.rows} rows")

    for what, fn in ((f"peer: read → hash → write ({args.beam_workers} workers)", peer),
                     ("analyze (CombineGlobally over train)", analyze),
                     ("encode (analyze + transform + write + commit)", encode)):
        start = time.perf_counter()
        fn()
        _report("beam", what, args.rows, time.perf_counter() - start)


def bench_spark(args, spec, inputs: list[str], work: Path) -> None:
    from core.config import load_config
    from core.lake import Lake
    from pipelines.spark.encode import analyze, run_encode
    from pipelines.spark.session import build_session

    lake = Lake(str(work / "spark-lake"))
    cfg = load_config(lake_root=lake.root)
    master = f"local[{args.spark_cores}]"
    spark = build_session(cfg.spark.model_copy(update={"master": master}), lake)
    try:
        def peer():
            spark.read.parquet(*inputs).write.mode("overwrite").parquet(str(work / "spark-peer"))

        def analyzed():
            analyze(spark.read.parquet(*inputs), spec, SPLITS)

        def encode():
            result = run_encode(spark, lake=lake, inputs=inputs, spec=spec, dataset="bench",
                                version="1", splits=SPLITS, shards=SHARDS)
            if result.documents != args.rows:
                raise RuntimeError(f"spark encoded {result.documents} of {args.rows} rows")

        peer()  # warm-up: the JVM's first job pays for class loading
        for what, fn in ((f"peer: Spark SQL read → write Parquet ({master})", peer),
                         ("analyze (mapInArrow accumulators, train)", analyzed),
                         ("encode (analyze + transform + write + commit)", encode)):
            start = time.perf_counter()
            fn()
            _report("spark", what, args.rows, time.perf_counter() - start)
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    from features.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transform-only", action="store_true",
                        help="time the in-process Arrow transform alone (no engines)")
    parser.add_argument("--serialize", action="store_true", help="also time tf.Example bytes")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--spec", help="feature spec YAML (default: posts + analyzers)")
    parser.add_argument("--engines", default="beam,spark", help="comma-separated: beam, spark")
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
          f"{platform.python_version()}; {args.rows:,} rows; spec {spec_path}; {_load()}")
    transform_only(args, spec)
    if args.transform_only:
        return 0
    inputs = generate(data / f"rows={args.rows}-files={args.files}", args.rows, args.files)
    work = Path(tempfile.mkdtemp(prefix="bench-encode-", dir=args.data))
    try:
        for engine in args.engines.split(","):
            {"beam": bench_beam, "spark": bench_spark}[engine.strip()](args, spec, inputs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
