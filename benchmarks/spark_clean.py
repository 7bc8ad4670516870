"""Spark cleaning throughput: ingest → explode → clean → dedup vs a plain Spark SQL baseline.

Not a test. Writes feed dumps like the sample corpus's (``shardforge.sample_text``:
12–40 posts per dump, exact / truncation / near duplicates) under
``<lake>/raw/feeds/dt=…`` once, then on ``local[2]``:

  (a) ours: ``run_ingest_feeds`` → ``run_explode`` (HiveQL posexplode) → ``run_clean``
      (NFKC Arrow UDF, placeholders, truncation flag, lang, topic, sha256 doc_id,
      exact + truncation + MinHash near dedup, quarantine, job accounting), each job timed;
  (b) baseline (run before and after (a), the mean is used): ``spark.read.text`` of the same files → regexp_replace of placeholders
      and whitespace → xxhash64 doc_id → dropDuplicates → Parquet.

It prints posts/s and MB/s (raw bytes) for both, the share of each of our jobs, and
the ratio ours/baseline (throughput; target ≥ 0.5).

    python benchmarks/spark_clean.py --posts 1000000 --lake /tmp/shardforge-bench
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time

DT = "2026-11-01"


def _generate(lake, posts: int, seed: int) -> tuple[int, int]:
    """Write the feed dumps (once per --posts/--seed); returns (post lines, raw bytes)."""
    from shardforge.sample_text import write_feeds

    folder = lake.local_path(lake.raw("feeds", DT))
    marker = folder / "_GENERATED.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta["posts"] == posts and meta["seed"] == seed:
            return meta["lines"], meta["bytes"]
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0

    def write(name: str, data: bytes) -> None:
        nonlocal total
        (folder / name).write_bytes(data)
        total += len(data)

    lines, _ = write_feeds(write, posts, random.Random(seed))
    marker.write_text(json.dumps({"posts": posts, "seed": seed, "lines": lines, "bytes": total}))
    return lines, total


def _timed(label: str, fn, times: dict[str, float]):
    started = time.perf_counter()
    result = fn()
    times[label] = time.perf_counter() - started
    print(f"  {label:<14} {times[label]:8.1f} s", flush=True)
    return result


def _baseline(spark, lake, placeholders: list[str]) -> int:
    """Plain Spark SQL on the same files; returns the rows written."""
    import re

    from pyspark.sql import functions as F

    pattern = "|".join(re.escape(p) for p in placeholders)
    text = F.trim(F.regexp_replace(F.regexp_replace("value", pattern, " "), r"\s+", " "))
    out = lake.root + "/bench_baseline"
    (spark.read.option("pathGlobFilter", "*.txt").text(lake.raw("feeds", DT))
     .select(text.alias("text")).where(F.col("text") != "")
     .withColumn("doc_id", F.xxhash64("text"))
     .dropDuplicates(["doc_id"])
     .write.mode("overwrite").parquet(out))
    return spark.read.parquet(out).count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1_000_000, help="post lines to generate (default 1M)")
    parser.add_argument("--lake", default="/tmp/shardforge-bench", help="lake root (corpus reused)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--shuffle-partitions", default="8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="extra Spark conf for both runs (repeatable)")
    args = parser.parse_args()

    from pipelines.spark.clean import run_clean, run_explode
    from pipelines.spark.ingest import run_ingest_feeds
    from pipelines.spark.session import build_session
    from shardforge.config import load_config
    from shardforge.lake import Lake

    cfg = load_config(lake_root=args.lake)
    spark_cfg = cfg.spark.model_copy(update={
        "master": args.master,
        "conf": {**cfg.spark.conf, "spark.sql.shuffle.partitions": args.shuffle_partitions,
                 "spark.driver.memory": "4g", **dict(kv.split("=", 1) for kv in args.conf)}})
    lake = Lake(cfg.lake.root)
    started = time.perf_counter()
    lines, raw_bytes = _generate(lake, args.posts, args.seed)
    print(f"corpus: {lines} posts, {raw_bytes / 1e6:.1f} MB ({raw_bytes / lines:.0f} B/post incl. page lines)"
          f" under {lake.raw('feeds', DT)} [{time.perf_counter() - started:.0f} s]", flush=True)
    spark = build_session(spark_cfg, lake)
    db = spark_cfg.database
    # Other processes may share the CPUs: the baseline runs before and after ours (after a
    # warm-up), and its mean is what ours is compared with.
    _baseline(spark, lake, list(cfg.clean.placeholders))
    base: dict[str, float] = {}
    print("baseline (before):", flush=True)
    written = _timed("sql", lambda: _baseline(spark, lake, list(cfg.clean.placeholders)), base)
    ours: dict[str, float] = {}
    print(f"ours ({args.master}):", flush=True)
    _timed("ingest", lambda: run_ingest_feeds(spark, db=db, lake=lake, partitions=[DT]), ours)
    _timed("explode", lambda: run_explode(spark, db=db, dt=DT), ours)
    counts = _timed("clean+dedup", lambda: run_clean(spark, db=db, dt=DT, clean=cfg.clean), ours)
    print("baseline (after):", flush=True)
    _timed("sql again", lambda: _baseline(spark, lake, list(cfg.clean.placeholders)), base)
    spark.stop()

    total, base_total = sum(ours.values()), sum(base.values()) / len(base)
    result = {
        "posts": lines, "raw_mb": round(raw_bytes / 1e6, 1), "master": args.master,
        "ours_s": round(total, 1), "ours_posts_per_s": round(lines / total),
        "ours_mb_per_s": round(raw_bytes / 1e6 / total, 2),
        "share": {k: round(v / total, 3) for k, v in ours.items()},
        "clean_counts": counts.as_dict(),
        "baseline_s": round(base_total, 1), "baseline_runs_s": [round(v, 1) for v in base.values()], "baseline_posts_per_s": round(lines / base_total),
        "baseline_mb_per_s": round(raw_bytes / 1e6 / base_total, 2), "baseline_rows": written,
        "ratio_ours_over_baseline": round(base_total / total, 3),
    }
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
