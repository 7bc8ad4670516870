"""How cost grows with the corpus: clean (with dedup) and encode at several corpus sizes.

Not a test. For each ``--sizes`` entry it writes a feed-dump corpus like the sample's
(``shardforge.sample_text.write_feeds``: exact, truncation and near duplicates) once under
``<work>/posts-<N>/raw/feeds/dt=2026-11-01``, then runs, ``--repeats`` times, each phase in
a fresh Spark JVM (a child process, so peak memory is the phase's own):

  clean:  ``stages.ingest`` + ``stages.clean`` (ingest → LATERAL VIEW explode → NFKC clean,
          exact / truncation / MinHash near dedup, the cross-dt index and links, the
          documents rebuild): what ``shardforge clean`` runs. Rate: input posts per second.
  encode: ``stages.encode(engine="spark")`` of the documents into TFRecord shards. Rate:
          documents per second.

Each child first runs the phase's **peer**, plain Spark of the same rows, in the same JVM
(clean: read the dumps as text, regexp clean-up, xxhash64 doc_id, dropDuplicates, Parquet;
encode: read the documents and write them back as Parquet), then the phase itself. The
session gets the settings ``submit --profile standalone|yarn`` would size from the input
(``shardforge.engine_sizing``; ``--unsized`` keeps the local defaults). Reported per size
and phase: median wall time (min–max over the repeats), posts/s and posts/s per core, the
ratio ours/peer (throughput), shuffle bytes written, and the peak JVM heap and Python RSS
of the executor (Spark's per-stage peak executor metrics; in ``local[N]`` the driver JVM is
the executor). The check: posts/s at the largest size may fall at most 20% below the
smallest size's (``--max-drop``), for the raw rate and for the peer-normalized ratio.

    python benchmarks/scaling.py --sizes 250000,500000,1000000,2000000 --repeats 3
    python benchmarks/scaling.py --sizes 250000,500000 --repeats 1 --json /tmp/scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DT = "2026-11-01"
PHASES = ("clean", "encode")
MiB = 1024 * 1024


def _corpus(work: Path, posts: int, seed: int) -> Path:
    """The lake of one size, its feed dumps written once (``_GENERATED.json`` marks them)."""
    from core.lake import Lake
    from shardforge.sample_text import write_feeds

    lake_dir = work / f"posts-{posts}"
    lake = Lake(str(lake_dir))
    folder = lake.local_path(lake.raw("feeds", DT))
    marker = folder / "_GENERATED.json"
    if marker.exists() and json.loads(marker.read_text()) == {"posts": posts, "seed": seed}:
        return lake_dir
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_feeds(lambda name, data: (folder / name).write_bytes(data), posts, random.Random(seed))
    marker.write_text(json.dumps({"posts": posts, "seed": seed}))
    print(f"  corpus {posts:,} posts written in {time.perf_counter() - started:.0f} s", flush=True)
    return lake_dir


# -- the child: one phase in one JVM --------------------------------------------------------


def _rest(url: str, path: str):
    import urllib.request

    with urllib.request.urlopen(f"{url}/api/v1/applications/{path}", timeout=30) as response:
        return json.load(response)


def _stage_metrics(spark, before: set[int]) -> dict:
    """Shuffle bytes and peak executor memory over the stages not in ``before``."""
    sc = spark.sparkContext
    stages = [s for s in _rest(sc.uiWebUrl, f"{sc.applicationId}/stages")
              if s["stageId"] not in before and s["status"] == "COMPLETE"]
    peaks = [s.get("peakExecutorMetrics") or {} for s in stages]
    return {"stages": len(stages),
            "shuffle_write_bytes": sum(s["shuffleWriteBytes"] for s in stages),
            "peak_heap_bytes": max((p.get("JVMHeapMemory", 0) for p in peaks), default=0),
            "peak_python_rss_bytes": max((p.get("ProcessTreePythonRSS", 0) for p in peaks), default=0)}


def _stage_ids(spark) -> set[int]:
    sc = spark.sparkContext
    return {s["stageId"] for s in _rest(sc.uiWebUrl, f"{sc.applicationId}/stages")}


def _peer_clean(spark, lake, cfg) -> None:
    import re

    from pyspark.sql import functions as F

    pattern = "|".join(re.escape(p) for p in cfg.clean.placeholders)
    text = F.trim(F.regexp_replace(F.regexp_replace("value", pattern, " "), r"\s+", " "))
    (spark.read.option("pathGlobFilter", "*.txt").text(lake.raw("feeds", DT))
     .select(text.alias("text")).where(F.col("text") != "")
     .withColumn("doc_id", F.xxhash64("text")).dropDuplicates(["doc_id"])
     .write.mode("overwrite").parquet(f"{lake.root}/peer_clean"))


def _peer_encode(spark, lake, cfg) -> None:
    (spark.read.parquet(f"{lake.table(cfg.spark.database, 'documents')}/first_seen_dt=*/*.parquet")
     .write.mode("overwrite").parquet(f"{lake.root}/peer_encode"))


def child(args) -> None:
    """Run one phase (after its peer) in this process's Spark; print a ``RESULT`` JSON line."""
    from core.config import load_config
    from core.lake import Lake
    from pipelines.spark.session import build_session, local_cores
    from shardforge import stages
    from shardforge.engine_sizing import Resources, job_inputs, measure, size_spark

    cfg = load_config(lake_root=args.lake)
    cfg = cfg.model_copy(update={"corpora": {"feeds": cfg.corpora["feeds"]}})
    lake = Lake(cfg.lake.root)
    cores = local_cores(args.master) or 1
    job = "explode_clean" if args.child == "clean" else "encode"
    uris = job_inputs(cfg, lake, "ingest" if args.child == "clean" else "encode")
    sized = size_spark(measure(lake, uris), Resources(1, cores, 1 << 20))
    conf = {**cfg.spark.conf, "spark.ui.enabled": "true", "spark.ui.port": "0",
            "spark.driver.memory": args.driver_memory,
            "spark.executor.processTreeMetrics.enabled": "true",
            "spark.executor.metrics.pollingInterval": "500ms"}
    if not args.unsized:
        conf = {**sized.conf(), **conf}
    spark = build_session(cfg.spark.model_copy(update={"master": args.master, "conf": conf}), lake)
    started = time.perf_counter()
    (_peer_clean if args.child == "clean" else _peer_encode)(spark, lake, cfg)
    peer_s = time.perf_counter() - started
    before = _stage_ids(spark)
    marks: list[tuple[float, str]] = []  # each step's start, from the stages' progress lines
    started = time.perf_counter()
    if args.child == "clean":
        marks.append((started, "ingest"))
        reports = [*stages.ingest(cfg, lake, spark), *stages.clean(
            cfg, lake, spark, run_id="scaling",
            progress=lambda line: marks.append((time.perf_counter(), line.split(":")[0])))]
        posts = next(r for r in reports if r.stage == "explode").rows_out
        out = next(r for r in reports if r.stage == "clean").rows_out
    else:
        report = stages.encode(cfg, lake, engine="spark", spark=spark)
        posts = out = report.rows_out
    ended = time.perf_counter()
    seconds = ended - started
    steps: dict[str, float] = {}
    for (at, step), (until, _) in zip(marks, [*marks[1:], (ended, "")][:len(marks)], strict=True):
        steps[step] = steps.get(step, 0.0) + until - at
    metrics = _stage_metrics(spark, before)
    spark.stop()
    db = cfg.spark.database
    tables = {t: measure(lake, [lake.table(db, t)]).bytes
              for t in ("raw_feeds", "clean_posts", "dedup_index", "documents")} if args.child == "clean" else {}
    print("RESULT " + json.dumps({
        "phase": args.child, "job": job, "posts": posts, "rows_out": out, "seconds": seconds,
        "peer_seconds": peer_s, "cores": cores, "input_bytes": sized.input.uncompressed_bytes,
        "shuffle_partitions": int(conf.get("spark.sql.shuffle.partitions", 0)),
        "load": os.getloadavg()[0], "steps_s": steps, "table_bytes": tables,
        "raw_bytes": sized.input.bytes if args.child == "clean" else 0, **metrics}), flush=True)


# -- the parent: sizes x repeats, then the table -----------------------------------------------


def _run_child(phase: str, lake_dir: Path, args) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), "--child", phase, "--lake", str(lake_dir),
            "--master", args.master, "--driver-memory", args.driver_memory]
    argv += ["--unsized"] if args.unsized else []
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{phase} at {lake_dir} failed (rc {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def summarize(runs: list[dict]) -> dict:
    """Median and spread of one (size, phase) over its repeats."""
    seconds = [r["seconds"] for r in runs]
    median = statistics.median(seconds)
    first = runs[0]
    peer = statistics.median(r["peer_seconds"] for r in runs)
    return {
        "posts": first["posts"], "rows_out": first["rows_out"], "cores": first["cores"],
        "seconds": round(median, 1), "seconds_min": round(min(seconds), 1),
        "seconds_max": round(max(seconds), 1), "repeats": len(runs),
        "posts_per_s": round(first["posts"] / median),
        "posts_per_s_per_core": round(first["posts"] / median / first["cores"]),
        "peer_seconds": round(peer, 1), "ratio_ours_over_peer": round(peer / median, 3),
        "shuffle_bytes": max(r["shuffle_write_bytes"] for r in runs),
        "shuffle_mib": round(max(r["shuffle_write_bytes"] for r in runs) / MiB, 1),
        "peak_heap_mib": round(max(r["peak_heap_bytes"] for r in runs) / MiB),
        "peak_python_rss_mib": round(max(r["peak_python_rss_bytes"] for r in runs) / MiB),
        "input_mib": round(first["input_bytes"] / MiB, 1),
        "raw_bytes": first.get("raw_bytes", 0),
        "steps_s": {step: round(statistics.median(r["steps_s"].get(step, 0.0) for r in runs), 1)
                    for step in first.get("steps_s", {})},
        "table_bytes": first.get("table_bytes", {}),
        "shuffle_partitions": first["shuffle_partitions"],
        "load": [round(r["load"], 1) for r in runs],
    }


def check(table: dict[int, dict[str, dict]], max_drop: float) -> list[str]:
    """The scaling verdict per phase: smallest against largest size, raw rate and peer ratio."""
    sizes = sorted(table)
    lines = []
    for phase in PHASES:
        small, big = table[sizes[0]][phase], table[sizes[-1]][phase]
        for key, what in (("posts_per_s", "posts/s"), ("ratio_ours_over_peer", "ratio to peer")):
            kept = big[key] / small[key]
            verdict = "ok" if kept >= 1 - max_drop else f"FALLS more than {max_drop:.0%}"
            lines.append(f"{phase}: {what} at {sizes[-1]:,} is {kept:.2f}x the {sizes[0]:,} value: {verdict}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="250000,500000,1000000,2000000",
                        help="corpus sizes in post lines, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size and phase (median)")
    parser.add_argument("--work", default="/tmp/shardforge-scaling", help="corpora and lakes (reused)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="4g", help="the local driver (= executor) heap")
    parser.add_argument("--unsized", action="store_true", help="local defaults, not input-sized conf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-drop", type=float, default=0.2)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--project", metavar="FILE",
                        help="no runs: project the results FILE (--json) onto YARN (docs/SCALING.md)")
    parser.add_argument("--posts-per-day", type=int, default=1_000_000_000)
    parser.add_argument("--window-h", type=float, default=4.0)
    parser.add_argument("--executor-cores", type=int, default=4)
    parser.add_argument("--efficiency", type=float, default=0.7)
    parser.add_argument("--history-days", type=int, default=365)
    parser.add_argument("--child", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.project:
        from benchmarks.scaling_projection import Assumptions, measured_from, project, render

        plan = project(measured_from(json.loads(Path(args.project).read_text())), Assumptions(
            args.posts_per_day, args.window_h, args.executor_cores, args.efficiency,
            args.history_days))
        print(render(plan))
        print(json.dumps(plan, indent=1))
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    print(f"{platform.node()}: {os.cpu_count()} cores, {args.master}, Python "
          f"{platform.python_version()}, load {os.getloadavg()[0]:.1f}", flush=True)
    table: dict[int, dict[str, dict]] = {}
    for size in sizes:
        lake_dir = _corpus(Path(args.work), size, args.seed)
        runs: dict[str, list[dict]] = {p: [] for p in PHASES}
        for repeat in range(args.repeats):
            for phase in PHASES:  # encode reads what this repeat's clean wrote
                runs[phase].append(_run_child(phase, lake_dir, args))
                r = runs[phase][-1]
                print(f"  {size:>9,} {phase:<6} #{repeat + 1}: {r['seconds']:7.1f} s "
                      f"({r['posts'] / r['seconds']:,.0f}/s), peer {r['peer_seconds']:.1f} s, "
                      f"load {r['load']:.1f}", flush=True)
        if len({r["rows_out"] for r in runs["clean"]}) != 1:
            raise SystemExit(f"the repeats of clean at {size} kept different rows")
        table[size] = {phase: summarize(runs[phase]) for phase in PHASES}
        if args.json:  # after every size, so a run stopped early still leaves the sizes done
            Path(args.json).write_text(json.dumps(_result(table, args), indent=1))
    print(f"\n{'posts':>10} {'phase':<6} {'median s':>9} {'spread':>13} {'posts/s':>9} {'/core':>7} "
          f"{'peer s':>7} {'ratio':>6} {'shuffle':>9} {'heap':>7} {'py RSS':>7}")
    for size in sizes:
        for phase in PHASES:
            s = table[size][phase]
            print(f"{size:>10,} {phase:<6} {s['seconds']:>9.1f} {s['seconds_min']:>6.1f}–"
                  f"{s['seconds_max']:<6.1f} {s['posts_per_s']:>9,} {s['posts_per_s_per_core']:>7,} "
                  f"{s['peer_seconds']:>7.1f} {s['ratio_ours_over_peer']:>6.3f} "
                  f"{s['shuffle_mib']:>7.1f}Mi {s['peak_heap_mib']:>5}Mi {s['peak_python_rss_mib']:>5}Mi")
    result = _result(table, args)
    for line in result["check"]:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


def _result(table: dict[int, dict[str, dict]], args) -> dict:
    """The JSON of the sizes measured so far, with the growth check when there are two."""
    sizes = sorted(table)
    return {"sizes": sizes, "master": args.master, "repeats": args.repeats,
            "sized": not args.unsized, "results": {str(k): v for k, v in table.items()},
            "check": check(table, args.max_drop) if len(sizes) > 1 else []}


if __name__ == "__main__":
    main()
