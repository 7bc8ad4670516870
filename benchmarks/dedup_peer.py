"""Near-duplicate dedup, ours against datatrove's MinHash dedup: throughput and pair quality.

Not a test. Two parts, side by side in one run:

(1) ``--posts N --lake DIR``: the corpus of ``benchmarks/spark_clean.py`` (feed dumps under
    ``<lake>/raw/feeds/dt=2026-11-01/``, made by its ``_generate`` if missing). Ours is
    ``python benchmarks/spark_clean.py --posts N --lake DIR --rounds R`` in a subprocess:
    ingest → explode → clean with exact + truncation + near dedup, its ``ours_posts_per_s``
    per round (round 1 cold). Datatrove gets the dumps' post lines as JSONL (2 files; the
    conversion is timed apart) and runs its 4 MinHash stages ``--repeats R`` times on
    LocalPipelineExecutor: signatures and filter with tasks=2, workers=2; buckets with
    tasks=14 (one per bucket, the stage requires it), workers=2; cluster with tasks=1 (ditto).
    Its posts/s = post lines / the 4 stages' time; kept = documents the filter wrote.
(2) ``--pairs N``: ``dedup_pairs.labelled_pairs``. Datatrove gets them as one corpus and
    merges a pair iff it removed either of its texts (sound: texts of different pairs are
    kept apart, and the datatrove clusters that span pairs are counted). Ours
    (:func:`ours_merged`) gets the ``a`` texts as one dt and the ``b`` texts as the next, and
    merges a pair iff both end in one document: the cross-dt path, with the same rules as
    within a dt.

Datatrove runs its default ``MinhashConfig()``: 5-word shingles, 14 buckets x 8 hashes, seed 1,
``HashConfig(precision=64, hash_fc="xxhash")``, default ``TextNormConfig``. Its words come from
the tokenizer of ``--datatrove-language``: ``cmn_Hani`` by default (spaCy + jieba: the corpus is
mostly Chinese, English words stay words), or ``eng``, datatrove's own default (spaCy English:
a run of Chinese is one word). It runs under ``--datatrove-python``, e.g. a separate venv::

    python3.11 -m venv /work/venv-datatrove
    /work/venv-datatrove/bin/pip install datatrove "xxhash<4" regex tokenizers spacy jieba orjson
    python benchmarks/dedup_peer.py --posts 200000 --lake /tmp/sfbench200k --pairs 2000 \\
        --datatrove-python /work/venv-datatrove/bin/python

Prints tables (rich) and, last, one JSON line with every number.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import random
import re
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKS = 2
INSTALL = ('python3.11 -m venv /work/venv-datatrove && /work/venv-datatrove/bin/pip install datatrove '
           '"xxhash<4" regex tokenizers spacy jieba orjson; then pass --datatrove-python /work/venv-datatrove/bin/python')


def ours_merged(pairs: Sequence, *, work: Path | None = None) -> list[bool]:
    """Ours' decision for each pair: ``True`` iff shardforge puts ``pairs[i].a`` and ``.b`` in one document.

    The ``a`` texts are one dt's crawl and the ``b`` texts the next dt's (25 posts a feed dump),
    so every pair goes through the cross-dt path (the dedup index, the links, the documents
    rebuild) on a local Spark session; the within-dt checks apply the same rules. A text
    the clean quarantines (outside the length bounds) merges nothing.
    """
    from core.config import load_config
    from core.lake import Lake
    from pipelines.spark.clean import run_clean, run_explode
    from pipelines.spark.documents import rebuild_documents
    from pipelines.spark.ingest import run_ingest_feeds
    from pipelines.spark.session import build_session

    root = Path(work or tempfile.mkdtemp(prefix="sf-pairs-"))
    cfg = load_config(lake_root=str(root))
    lake = Lake(cfg.lake.root)
    days = {"2026-11-01": [p.a for p in pairs], "2026-11-02": [p.b for p in pairs]}
    for dt, texts in days.items():
        folder = lake.local_path(lake.raw("feeds", dt))
        folder.mkdir(parents=True)
        for n in range(0, len(texts), 25):
            page = "\n".join(t.replace("\n", " ") for t in texts[n:n + 25])
            (folder / f"feed-{n // 25:05d}.txt").write_text(f"banner\n\nheading\n{page}\n", encoding="utf-8")
    spark = build_session(cfg.spark, lake)
    db = cfg.spark.database
    try:
        for dt in days:
            run_ingest_feeds(spark, db=db, lake=lake, partitions=[dt])
            run_explode(spark, db=db, dt=dt)
            run_clean(spark, db=db, dt=dt, clean=cfg.clean)
        rebuild_documents(spark, db=db)
        members = spark.sql(f"SELECT p.dt, p.feed_id, p.pos, m.doc_id FROM {db}.clean_posts p JOIN "
                            f"{db}.document_members m ON p.dt = m.dt AND p.doc_id = m.member_id").collect()
    finally:
        spark.stop()
    doc = {(r["dt"], int(r["feed_id"].rsplit("-", 1)[1]) * 25 + r["pos"]): r["doc_id"] for r in members}
    a_dt, b_dt = days
    return [doc.get((a_dt, i)) is not None and doc.get((a_dt, i)) == doc.get((b_dt, i)) for i in range(len(pairs))]


# --- datatrove side: runs in the datatrove interpreter (stdlib + datatrove only) -------------------

def _datatrove_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    for name in ("--input", "--work", "--language"):
        parser.add_argument(name, required=True)
    parser.add_argument("--detail", action="store_true", help="also return removed ids and clusters")
    args = parser.parse_args(argv)
    from importlib.metadata import version

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import minhash as mh
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    config, work = mh.MinhashConfig(), Path(args.work)
    sigs, buckets, remove = (str(work / name) for name in ("signatures", "buckets", "remove_ids"))

    def executor(name: str, pipeline: list, tasks: int) -> LocalPipelineExecutor:
        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(tasks, TASKS),
                                     logging_dir=str(work / "logs" / name))

    stages = {
        "signatures": executor("signatures", [JsonlReader(args.input), mh.MinhashDedupSignature(
            sigs, config=config, language=args.language)], TASKS),
        "buckets": executor("buckets", [mh.MinhashDedupBuckets(sigs, buckets, config=config)], config.num_buckets),
        "cluster": executor("cluster", [mh.MinhashDedupCluster(buckets, remove, config=config,
                                                               save_cluster_id=args.detail)], 1),
        "filter": executor("filter", [JsonlReader(args.input), mh.MinhashDedupFilter(
            remove, exclusion_writer=JsonlWriter(str(work / "removed"), compression=None),
            load_cluster_ids=args.detail), JsonlWriter(str(work / "kept"), compression=None)], TASKS),
    }
    stage_s = {}
    for name, stage in stages.items():
        started = time.perf_counter()
        stage.run()
        stage_s[name] = round(time.perf_counter() - started, 2)

    def docs(folder: str):
        for path in sorted((work / folder).glob("*.jsonl")):
            with open(path, encoding="utf-8") as lines:
                yield from (json.loads(line) for line in lines)

    result = {"datatrove": version("datatrove"), "language": args.language, "config": str(config),
              "stage_s": stage_s, "total_s": round(sum(stage_s.values()), 2),
              "kept": sum(1 for _ in docs("kept")), "removed": sum(1 for _ in docs("removed"))}
    if args.detail:
        result["removed_ids"] = [doc["id"] for doc in docs("removed")]
        result["clusters"] = {doc["id"]: doc["metadata"]["minhash_cluster_id"]
                              for folder in ("kept", "removed") for doc in docs(folder)
                              if doc["metadata"].get("minhash_cluster_id", -1) != -1}
    (work / "result.json").write_text(json.dumps(result))


# --- our side of the process --------------------------------------------------------------------------

def _datatrove_python(given: str | None) -> str:
    if given:
        return given
    if importlib.util.find_spec("datatrove") is not None:
        return sys.executable
    raise SystemExit(f"datatrove is not importable in {sys.executable}: {INSTALL}")


def run_datatrove(python: str, input_dir: Path, work: Path, language: str, *, detail: bool = False) -> dict:
    """One run of the 4 stages in a subprocess; returns its result.json plus the wall time."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cmd = [python, __file__, "_datatrove", "--input", str(input_dir), "--work", str(work),
           "--language", language, *(["--detail"] if detail else [])]
    started = time.perf_counter()
    with open(work.parent / f"{work.name}.log", "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        tail = (work.parent / f"{work.name}.log").read_text(errors="replace")[-4000:]
        raise SystemExit(f"datatrove run failed (exit {code}):\n{tail}")
    result = json.loads((work / "result.json").read_text())
    result["wall_s"] = round(time.perf_counter() - started, 2)
    shutil.rmtree(work)
    return result


def feeds_to_jsonl(feed_dir: Path, out_dir: Path) -> int:
    """Post lines of the feed dumps (as ingest parses them) → TASKS JSONL files; returns the posts."""
    from pipelines.spark.ingest import FOOTER_PATTERN

    footer, posts = re.compile(FOOTER_PATTERN), 0
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(open(out_dir / f"posts-{i}.jsonl", "w", encoding="utf-8")) for i in range(TASKS)]
        for k, path in enumerate(sorted(feed_dir.glob("*.txt"))):
            try:
                lines = path.read_bytes().decode("utf-8").replace("\r\n", "\n").split("\n")
            except UnicodeDecodeError:
                continue  # ingest quarantines it
            if len(lines) < 3 or lines[1].strip():
                continue
            body = [line for line in lines[3:] if line.strip()]
            if len(body) > 1 and footer.search(body[-1]):
                body.pop()
            outs[k % TASKS].writelines(json.dumps({"id": f"{path.stem}:{i}", "text": text}, ensure_ascii=False)
                                       + "\n" for i, text in enumerate(body))
            posts += len(body)
    return posts


def ours_throughput(lake: str, posts: int, rounds: int, seed: int) -> dict:
    """``benchmarks/spark_clean.py`` in a subprocess; its ours posts/s per round and counts."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "spark_clean.py"), "--posts", str(posts), "--lake", lake,
           "--rounds", str(rounds), "--seed", str(seed)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"spark_clean failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    result = json.loads(proc.stdout[proc.stdout.rindex("\n{") :])
    rounds = result["rounds"]
    return {"posts_per_s": [r["ours_posts_per_s"] for r in rounds], "kept": result["clean_counts"]["rows_out"],
            "clean_counts": result["clean_counts"], "spark_sql_posts_per_s": [r["baseline_posts_per_s"] for r in rounds]}


def _timed(times: dict, key: str, fn):
    started = time.perf_counter()
    result = fn()
    times[key] = round(time.perf_counter() - started, 1)
    return result


def _summary(rates: list[float]) -> dict:
    return {"median": round(statistics.median(rates)), "min": min(rates), "max": max(rates)}


def throughput(args, python: str, tmp: Path, times: dict) -> dict:
    from core.config import load_config
    from core.lake import Lake

    spark_clean = runpy.run_path(str(REPO / "benchmarks" / "spark_clean.py"))  # its _generate and DT
    lake = Lake(load_config(lake_root=args.lake).lake.root)
    lines, raw_bytes = _timed(times, "corpus_s", lambda: spark_clean["_generate"](lake, args.posts, args.seed))
    feeds = lake.local_path(lake.raw("feeds", spark_clean["DT"]))
    posts = _timed(times, "convert_s", lambda: feeds_to_jsonl(feeds, tmp / "posts"))
    if posts != lines:
        raise SystemExit(f"converted {posts} posts, the corpus has {lines}")
    print(f"corpus: {posts} posts, {raw_bytes / 1e6:.1f} MB; JSONL in {times['convert_s']} s", flush=True)
    out = {"posts": posts, "raw_mb": round(raw_bytes / 1e6, 1)}
    try:  # a failing ours (the tree is being edited) still leaves datatrove's numbers
        if not args.no_ours:
            out["ours"] = _timed(times, "ours_s", lambda: ours_throughput(args.lake, args.posts, args.repeats, args.seed))
            out["ours"].update(_summary(out["ours"]["posts_per_s"]))
            print(f"ours: {out['ours']['posts_per_s']} posts/s [{times['ours_s']} s]", flush=True)
    except RuntimeError as exc:
        out["ours_error"] = str(exc)
        print(exc, flush=True)
    runs, started = [], time.perf_counter()
    for repeat in range(args.repeats):
        runs.append(run_datatrove(python, tmp / "posts", tmp / f"dt-{repeat}", args.datatrove_language))
        print(f"datatrove run {repeat + 1}: {runs[-1]['stage_s']} kept {runs[-1]['kept']}", flush=True)
    times["datatrove_s"] = round(time.perf_counter() - started, 1)
    out["datatrove"] = {"runs": runs, "posts_per_s": [round(posts / r["total_s"]) for r in runs],
                        "kept": runs[-1]["kept"], "version": runs[-1]["datatrove"], "config": runs[-1]["config"]}
    out["datatrove"].update(_summary(out["datatrove"]["posts_per_s"]))
    if "ours" in out:
        out["ratio_ours_over_datatrove"] = round(out["ours"]["median"] / out["datatrove"]["median"], 3)
    return out


def quality(args, python: str, tmp: Path, times: dict) -> dict:
    sys.path.insert(0, str(REPO))
    from benchmarks.dedup_pairs import labelled_pairs, score

    pairs = _timed(times, "pairs_generate_s", lambda: labelled_pairs(args.pairs, args.pairs_seed))
    docs = [(f"{i}{side}", text) for i, p in enumerate(pairs) for side, text in (("a", p.a), ("b", p.b))]
    random.Random(args.pairs_seed).shuffle(docs)
    (tmp / "pairs").mkdir()
    for shard in range(TASKS):
        with open(tmp / "pairs" / f"pairs-{shard}.jsonl", "w", encoding="utf-8") as out:
            out.writelines(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in docs[shard::TASKS])
    run = _timed(times, "datatrove_pairs_s",
                 lambda: run_datatrove(python, tmp / "pairs", tmp / "dt-pairs", args.datatrove_language, detail=True))
    removed = set(run["removed_ids"])
    decisions = {"datatrove": [f"{i}a" in removed or f"{i}b" in removed for i in range(len(pairs))]}
    spans: dict[int, set[str]] = {}
    for doc, cluster in run["clusters"].items():
        spans.setdefault(cluster, set()).add(doc[:-1])
    try:
        decisions["ours"] = _timed(times, "ours_pairs_s", lambda: ours_merged(pairs))
    except NotImplementedError as exc:
        print(f"ours: not measured ({exc})", flush=True)
    return {"pairs": len(pairs), "seed": args.pairs_seed, "language": args.datatrove_language,
            "datatrove_stage_s": run["stage_s"], "cross_pair_clusters": sum(len(s) > 1 for s in spans.values()),
            "scores": {tool: score(pairs, merged) for tool, merged in decisions.items()}}


def _cells(s: dict) -> list[str]:
    return [f"{s['merged']}/{s['pairs']}", *("–" if s[k] is None else f"{s[k]:.3f}" for k in ("precision", "recall"))]


def _show(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console, tp = Console(), result.get("throughput")
    if tp:
        table = Table(title=f"Throughput, {tp['posts']} posts ({tp['raw_mb']} MB of feed dumps)")
        for column in ("tool", "posts/s median", "min–max", "kept", "runs"):
            table.add_column(column, justify="left" if column == "tool" else "right")
        for tool in ("ours", "datatrove"):
            if tool in tp:
                t = tp[tool]
                table.add_row(tool, f"{t['median']:,}", f"{t['min']:,}–{t['max']:,}", f"{t['kept']:,}",
                              str(len(t["posts_per_s"])))
        console.print(table)
        if "ratio_ours_over_datatrove" in tp:
            console.print(f"ratio ours/datatrove (median posts/s): {tp['ratio_ours_over_datatrove']}")
    q = result.get("quality")
    if q:
        tools = list(q["scores"])
        table = Table(title=f"{q['pairs']} labelled pairs: merged, precision, recall (merged in a"
                            f" non-duplicate category = false merges; datatrove clusters spanning"
                            f" pairs: {q['cross_pair_clusters']})")
        table.add_column("rows")
        for tool in tools:
            for column in ("merged", "P", "R"):
                table.add_column(f"{tool} {column}", justify="right")
        for row in q["scores"][tools[0]]:
            table.add_row(row, *(cell for tool in tools for cell in _cells(q["scores"][tool][row])))
        console.print(table)


def main() -> None:
    if sys.argv[1:2] == ["_datatrove"]:
        return _datatrove_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1_000_000, help="corpus post lines; 0 skips part 1")
    parser.add_argument("--lake", default="/tmp/shardforge-bench", help="lake root (corpus reused)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (spark_clean's --seed)")
    parser.add_argument("--repeats", type=int, default=3, help="datatrove runs; ours' --rounds (default 3)")
    parser.add_argument("--no-ours", action="store_true", help="skip the spark_clean subprocess")
    parser.add_argument("--pairs", type=int, default=2000, help="labelled pairs (multiple of 8); 0 skips part 2")
    parser.add_argument("--pairs-seed", type=int, default=0)
    parser.add_argument("--datatrove-python", help="interpreter with datatrove (default: this one)")
    parser.add_argument("--datatrove-language", default="cmn_Hani", help="its word tokenizer (cmn_Hani, eng)")
    args = parser.parse_args()
    python, times, result = _datatrove_python(args.datatrove_python), {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="dedup-peer-"))
    try:
        if args.posts:
            result["throughput"] = throughput(args, python, tmp, times)
        if args.pairs:
            result["quality"] = quality(args, python, tmp, times)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["times_s"] = times
    _show(result)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
