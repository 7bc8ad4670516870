"""Spark cleaning throughput: ingest → explode → clean → dedup vs a plain Spark SQL baseline.

Not a test. Writes feed dumps like the sample corpus's (``shardforge.sample_text``:
12–40 posts per dump, exact / truncation / near duplicates) under
``<lake>/raw/feeds/dt=…`` once, then on ``local[2]``:

  (a) ours: ``run_ingest_feeds`` → ``run_explode`` (HiveQL posexplode) → ``run_clean``
      (NFKC Arrow UDF, placeholders, truncation flag, lang, topic, sha256 doc_id,
      exact + truncation + MinHash near dedup, quarantine, job accounting, the cross-dt
      dedup index and links) → ``rebuild_documents``, each job timed;
  (b) baseline: ``spark.read.text`` of the same files → regexp_replace of placeholders
      and whitespace → xxhash64 doc_id → dropDuplicates → Parquet.

The two sides alternate in one session, baseline first and last (B O | B O B O B …,
``--rounds`` runs of ours). Round 1 is cold: the first run of each side in the JVM (JIT compilation,
Python workers, metastore statements), ours against the baseline's first run. Every later
round is warm (a long-lived session, or a re-run of the dt, which must give the same
counts): ours against the mean of the baseline runs just before and after it. It prints
posts/s and MB/s (raw bytes) for both, the share of each of our jobs, the ratio
ours/baseline (throughput; target ≥ 0.5) per round, and the median warm ratio.

    python benchmarks/spark_clean.py --posts 1000000 --lake /tmp/shardforge-bench
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
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
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of ours between baseline runs; the first is cold (default 3)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="extra Spark conf for both runs (repeatable)")
    args = parser.parse_args()

    from core.config import load_config
    from core.lake import Lake
    from pipelines.spark.clean import run_clean, run_explode
    from pipelines.spark.documents import rebuild_documents
    from pipelines.spark.ingest import run_ingest_feeds
    from pipelines.spark.session import build_session

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
    placeholders = list(cfg.clean.placeholders)

    def baseline(label: str, times: dict[str, float]) -> int:
        return _timed(label, lambda: _baseline(spark, lake, placeholders), times)

    def ours(times: dict[str, float]):
        _timed("ingest", lambda: run_ingest_feeds(spark, db=db, lake=lake, partitions=[DT]), times)
        _timed("explode", lambda: run_explode(spark, db=db, dt=DT), times)
        counts = _timed("clean+dedup", lambda: run_clean(spark, db=db, dt=DT, clean=cfg.clean), times)
        # The cross-dt index and links are written by run_clean; the documents are rebuilt here.
        _timed("documents", lambda: rebuild_documents(spark, db=db), times)
        return counts

    # The two sides alternate, baseline first and last: B O | B O B O B …. Round 1 (the first
    # run of each side) is cold; each later round compares ours with the mean of the (warm)
    # baseline runs just before and after it, so drift in the machine's load hits both sides.
    base_runs: list[float] = []
    rounds: list[dict] = []
    counts = None
    for number in range(1, args.rounds + 1):
        print(f"round {number}, {'cold JVM' if number == 1 else 'warm'}:", flush=True)
        if len(base_runs) < number:  # round 1 starts cold; round 2 needs a warm "before"
            base_times: dict[str, float] = {}
            written = baseline("baseline", base_times)
            base_runs.append(base_times["baseline"])
        jobs: dict[str, float] = {}
        run_counts = ours(jobs)
        if counts is not None and run_counts.as_dict() != counts.as_dict():  # a re-run: same result
            raise SystemExit(f"re-run changed the counts: {counts.as_dict()} then {run_counts.as_dict()}")
        counts = run_counts
        if number > 1:
            base_times = {}
            baseline("baseline", base_times)
            base_runs.append(base_times["baseline"])
        # Cold: the baseline's first run; warm: the runs just before and after this one.
        base_s = base_runs[0] if number == 1 else (base_runs[-2] + base_runs[-1]) / 2
        ours_s = sum(jobs.values())
        rounds.append({
            "round": number, "cold": number == 1, "ours_s": round(ours_s, 1),
            "ours_posts_per_s": round(lines / ours_s), "ours_mb_per_s": round(raw_bytes / 1e6 / ours_s, 2),
            "share": {k: round(v / ours_s, 3) for k, v in jobs.items()},
            "jobs_s": {k: round(v, 1) for k, v in jobs.items()},
            "baseline_s": round(base_s, 1), "baseline_posts_per_s": round(lines / base_s),
            "baseline_mb_per_s": round(raw_bytes / 1e6 / base_s, 2),
            "ratio_ours_over_baseline": round(base_s / ours_s, 3),
        })
        print(f"  ratio (baseline {base_s:.1f} s / ours {ours_s:.1f} s): {base_s / ours_s:.3f}", flush=True)
    spark.stop()

    warm = [r["ratio_ours_over_baseline"] for r in rounds if not r["cold"]]
    result = {
        "posts": lines, "raw_mb": round(raw_bytes / 1e6, 1), "master": args.master,
        "clean_counts": counts.as_dict(), "baseline_rows": written,
        "baseline_runs_s": [round(v, 1) for v in base_runs], "rounds": rounds,
        "cold_ratio": rounds[0]["ratio_ours_over_baseline"],
        "warm_ratio_median": round(statistics.median(warm), 3) if warm else None,
    }
    print(f"cold ratio {result['cold_ratio']}; warm ratios {warm}, median {result['warm_ratio_median']}",
          flush=True)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
