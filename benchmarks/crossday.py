"""Dedup across days: the cost of one new day against re-cleaning the whole history.

Not a test. Writes (once per --days/--posts-per-day/--seed) a history of ``--days`` daily
feed-dump partitions of ``--posts-per-day`` post lines (``shardforge.sample_text``, each day
its own seed), then one more day of ``--day-posts`` lines: ``--recrawled`` of them copied
verbatim from random history lines (a "latest updates" page crawled again), ``--edited`` of
them a history line cut with "..." or with one character changed, the rest new posts.

On ``local[2]`` (the Spark session's start is not timed), in one session:

  full: every dt from an empty database, oldest first: ingest → explode → clean (within the
        dt, then linked with the dts before it) per dt, then one documents rebuild;
  incremental: the history already processed (the full run's state with the new day's
        partitions dropped and the documents rebuilt, not timed), the new day alone: ingest →
        explode → clean → documents rebuild. Run ``--rounds`` times between the full runs:
        F I I I F.

It checks that both end with the same documents (a checksum of doc_id, text, first/last
seen and copies over the whole table) and prints the median incremental/full ratio
(target ≤ 0.15) with the spread, and a JSON line.

    python benchmarks/crossday.py --days 20 --posts-per-day 100000 --day-posts 100000 \
        --lake /tmp/sfbench-xday
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import random
import shutil
import statistics
import time
from pathlib import Path

FIRST_DAY = _dt.date(2026, 10, 1)


def _day(i: int) -> str:
    return (FIRST_DAY + _dt.timedelta(days=i)).isoformat()


def _write_day(folder: Path, posts: int, seed: int) -> list[str]:
    """One day's feed dumps; returns the post lines written."""
    from shardforge.sample_text import write_feeds

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    write_feeds(lambda name, data: files.__setitem__(name, data), posts, random.Random(seed))
    lines = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        text = data.decode("utf-8", errors="replace").splitlines()
        lines += [line for line in text[3:] if len(line) > 24]  # posts, not pager footers
    return lines


def _page(lines: list[str]) -> bytes:
    return ("【博客】最新更新 | Latest updates\n\n最新文章\n" + "\n".join(lines) + "\n").encode()


def _generate(root: Path, args) -> dict:
    """History days and the new day under ``root/raw/feeds`` (reused when the settings match)."""
    marker = root / "_GENERATED.json"
    settings = {k: getattr(args, k) for k in ("days", "posts_per_day", "day_posts", "recrawled", "edited", "seed")}
    if marker.exists() and json.loads(marker.read_text())["settings"] == settings:
        return json.loads(marker.read_text())
    shutil.rmtree(root / "raw", ignore_errors=True)
    feeds = root / "raw" / "feeds"
    history: list[str] = []
    for i in range(args.days):
        history += _write_day(feeds / f"dt={_day(i)}", args.posts_per_day, args.seed + i)
    rng = random.Random(args.seed + 10_000)
    recrawled = int(args.day_posts * args.recrawled)
    edited = int(args.day_posts * args.edited)
    day = feeds / f"dt={_day(args.days)}"
    new = _write_day(day, args.day_posts - recrawled - edited, args.seed + args.days)
    copies = rng.sample(history, recrawled)
    changed = []
    for line in rng.sample(history, edited):
        if rng.random() < 0.5:  # the feed cut it shorter
            changed.append(line[:max(25, int(len(line) * rng.uniform(0.5, 0.9)))] + "...")
        else:  # a one-character edit in the middle
            mid = len(line) // 2
            changed.append(line[:mid] + ("，" if line[mid] != "，" else "。") + line[mid + 1:])
    extra = copies + changed
    rng.shuffle(extra)
    for n in range(0, len(extra), 25):
        (day / f"feed-recrawl-{n // 25:05d}.txt").write_bytes(_page(extra[n:n + 25]))
    meta = {"settings": settings, "history_lines": len(history), "day_lines": len(new) + len(extra),
            "recrawled": recrawled, "edited": edited}
    marker.write_text(json.dumps(meta))
    return meta


def _checksum(spark, db: str) -> dict:
    """Rows and an order-free checksum of the documents table."""
    from pyspark.sql import functions as F

    row = spark.table(f"{db}.documents").select(
        F.count("*").alias("n"),
        F.sum(F.xxhash64("doc_id", "text", "first_seen_dt", "last_seen_dt", "times_seen").cast("decimal(38,0)"))
        .alias("sum")).first()
    return {"documents": int(row["n"]), "checksum": str(row["sum"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--posts-per-day", type=int, default=100_000)
    parser.add_argument("--day-posts", type=int, default=100_000)
    parser.add_argument("--recrawled", type=float, default=0.30)
    parser.add_argument("--edited", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=3, help="incremental runs (default 3)")
    parser.add_argument("--lake", default="/tmp/sfbench-xday")
    parser.add_argument("--shuffle-partitions", default="8")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from core.config import load_config
    from core.lake import Lake
    from pipelines.spark.clean import run_clean, run_explode
    from pipelines.spark.documents import rebuild_documents
    from pipelines.spark.ingest import run_ingest_feeds
    from pipelines.spark.session import build_session

    root = Path(args.lake)
    started = time.perf_counter()
    meta = _generate(root, args)
    print(f"corpus: {meta['history_lines']} history lines in {args.days} days, a day of {meta['day_lines']} "
          f"({meta['recrawled']} re-crawled, {meta['edited']} cut or edited) [{time.perf_counter() - started:.0f} s]",
          flush=True)
    cfg = load_config(lake_root=str(root))
    spark_cfg = cfg.spark.model_copy(update={"conf": {
        **cfg.spark.conf, "spark.sql.shuffle.partitions": args.shuffle_partitions, "spark.driver.memory": "6g"}})
    lake = Lake(cfg.lake.root)
    spark = build_session(spark_cfg, lake)
    db = "bench_xday"
    new_day = _day(args.days)

    steps: dict[str, float] = {}

    def step(name: str, fn):
        started = time.perf_counter()
        fn()
        steps[name] = steps.get(name, 0.0) + time.perf_counter() - started

    def process(dts: list[str]) -> float:
        steps.clear()
        for dt in dts:
            step("ingest", lambda dt=dt: run_ingest_feeds(spark, db=db, lake=lake, partitions=[dt]))
            step("explode", lambda dt=dt: run_explode(spark, db=db, dt=dt))
            step("clean+link", lambda dt=dt: run_clean(spark, db=db, dt=dt, clean=cfg.clean))
        step("documents", lambda: rebuild_documents(spark, db=db))
        print("    " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()), flush=True)
        return sum(steps.values())

    def forget(dt: str) -> None:
        """Remove the new day from every table: the state the history alone leaves."""
        for table in ("raw_feeds", "posts", "clean_posts", "dedup_index", "duplicates"):
            spark.sql(f"ALTER TABLE {db}.{table} DROP IF EXISTS PARTITION (dt='{dt}')")
        spark.sql(f"ALTER TABLE {db}.dedup_links DROP IF EXISTS PARTITION (found_dt='{dt}')")
        rebuild_documents(spark, db=db)

    def full() -> tuple[float, dict]:
        spark.sql(f"DROP DATABASE IF EXISTS {db} CASCADE")
        spark.sql(f"CREATE DATABASE {db} LOCATION '{lake.database(db)}'")
        seconds = process([_day(i) for i in range(args.days + 1)])
        print(f"  full re-clean of {args.days + 1} dts: {seconds:.1f} s", flush=True)
        return seconds, _checksum(spark, db)

    full_s, incremental_s = [], []
    full_1, expected = full()
    full_s.append(full_1)
    for _ in range(args.rounds):
        forget(new_day)
        seconds = process([new_day])
        got = _checksum(spark, db)
        if got != expected:
            raise SystemExit(f"the incremental day changed the documents: {expected} then {got}")
        incremental_s.append(seconds)
        print(f"  incremental day {new_day}: {seconds:.1f} s ({seconds / full_1:.3f} of the full)", flush=True)
    full_2, again = full()
    full_s.append(full_2)
    if again != expected:
        raise SystemExit(f"a second full re-clean gave other documents: {expected} then {again}")
    spark.stop()

    full_mean = statistics.mean(full_s)
    ratios = [s / full_mean for s in incremental_s]
    result = {
        "days": args.days, "history_lines": meta["history_lines"], "day_lines": meta["day_lines"],
        "full_s": [round(s, 1) for s in full_s], "incremental_s": [round(s, 1) for s in incremental_s],
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_spread": [round(min(ratios), 3), round(max(ratios), 3)], **expected,
    }
    print(f"incremental / full: median {result['ratio_median']} (spread {result['ratio_spread']}); "
          f"target <= 0.15; same documents: {expected['documents']}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
