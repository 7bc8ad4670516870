"""The ``shardforge`` command: one subcommand per stage, and ``run`` for the whole path.

Exit codes: 0 success; 1 a stage failed on data or an engine (message names the
file/row/stage); 2 bad arguments, a broken config or a missing engine — always
one line, never a traceback (set ``SHARDFORGE_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

__all__ = ["main"]

# The commands that write the lake take its lock (core.lake_lock); the others only read.
WRITERS = frozenset({"sample", "ingest", "clean", "images", "encode", "train", "tokens", "validate",
                     "run", "submit", "generate"})
USAGE_ERROR = 2
STAGE_ERROR = 1
console = Console(stderr=True, soft_wrap=True)  # one message, one line, whatever the width


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message} (see --help)")


class _UsageError(Exception):
    pass


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="config YAML (default: the embedded conf/sample.yaml)")
    common.add_argument("--lake", metavar="URI", help="lake root: a path, file://… or hdfs://… (overrides lake.root)")
    common.add_argument("--wait", action="store_true",
                        help="a command that writes the lake waits for another writer to finish "
                             "(default: exit 2 naming it)")
    return common


def build_parser() -> argparse.ArgumentParser:
    from shardforge.sample_images import MIN_IMAGES
    from shardforge.sample_text import MIN_POSTS
    from shardforge.spark_jobs import JOBS as SPARK_JOBS  # argparse, json and sys only: no pyspark

    common = _common()
    parser = _Parser(prog="shardforge", description="Raw corpora → Spark/Beam cleaning → TFRecord shards → PyTorch.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="the engines' own logs too (Spark's log4j, Beam, Great Expectations)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sample = sub.add_parser("sample", parents=[common], help="write the seeded sample corpus under raw/")
    sample.add_argument("--posts", type=_at_least(MIN_POSTS),
                        help=f"post lines to write, >= {MIN_POSTS} (default: sample.posts)")
    sample.add_argument("--images", type=_at_least(MIN_IMAGES),
                        help=f"images to write, >= {MIN_IMAGES} (default: sample.images)")
    sample.add_argument("--seed", type=int, help="random seed (default: sample.seed)")
    sample.add_argument("--force", action="store_true", help="write even if raw/ already holds data")
    sub.add_parser("ingest", parents=[common], help="Spark: raw feed dumps → Hive raw_feeds + quarantine")
    sub.add_parser("clean", parents=[common], help="Spark: LATERAL VIEW posexplode → posts → clean_posts")
    sub.add_parser("images", parents=[common], help="Beam: image corpus → clean_images + quarantine")
    encode = sub.add_parser("encode", parents=[common],
                            help="Beam or Spark: analyze + encode clean rows → tf.Example TFRecord shards")
    encode.add_argument("--engine", choices=["beam", "spark"], default="beam",
                        help="beam: beam.runner of the config (default); spark: spark.master")
    encode.add_argument("--dataset", choices=["posts", "images"], default="posts",
                        help="posts: clean_posts → dataset (default); images: clean_images → image_dataset")
    train = sub.add_parser("train", parents=[common], help="PyTorch: train a configured model on the shards")
    train.add_argument("model", nargs="?", default="lm", help="a key of `models:` in the config (default: lm)")
    train.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    train.add_argument("--resume", nargs="?", const="latest", metavar="RUN_ID",
                       help="continue a run from its checkpoint (default: the model's latest run)")
    tokens = sub.add_parser("tokens", parents=[common],
                            help="VQ-VAE or VQGAN: the image dataset's code indices as a token dataset")
    tokens.add_argument("model", help="a vqvae or vqgan model of `models:` in the config")
    tokens.add_argument("--run-id", help="the trained run (default: the model's latest)")
    tokens.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    generate = sub.add_parser("generate", parents=[common],
                              help="VQGAN stage two: sample code grids with an LM prior, decode them")
    generate.add_argument("model", help="a vqvae or vqgan model of `models:` whose codes `tokens` exported")
    generate.add_argument("--prior", required=True,
                          help="the code LM: a model entry (its latest run), a checkpoint or run folder")
    generate.add_argument("--run-id", help="the VQ model's run (default: its latest)")
    generate.add_argument("--n", type=_at_least(1), default=16, help="images to sample (default 16)")
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-k", type=_at_least(0), default=0, help="0 = every code")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    validate = sub.add_parser("validate", parents=[common],
                              help="Great Expectations gates on clean_posts, clean_images and the dataset")
    validate.add_argument("--only", choices=["clean", "images", "dataset"], help="run one gate")
    report = sub.add_parser("report", parents=[common],
                            help="print a run's summary and write its report.html (latest run by default)")
    report.add_argument("--run-id", help="the run to show")
    run = sub.add_parser("run", parents=[common], help="the whole path: sample (if needed) → … → train → report")
    run.add_argument("--device", choices=["cpu", "cuda"], help="training device (default: cuda when available)")
    submit = sub.add_parser("submit", parents=[common], help="run a Spark job through a real spark-submit")
    submit.add_argument("engine", choices=["spark"], help="the engine to submit to")
    submit.add_argument("job", choices=list(SPARK_JOBS), help="the job to run")
    submit.add_argument("--profile", choices=["local", "yarn", "standalone"], default="local",
                        help="local: spark.master; yarn: cluster mode with spark.yarn settings; "
                             "standalone: spark.standalone.master, client mode")
    submit.add_argument("--dt", action="append", type=_dt,
                        help="a dt partition YYYY-MM-DD (repeatable; default: all)")
    submit.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    cluster = sub.add_parser("spark-cluster", help="a Spark standalone cluster on this machine (127.0.0.1)")
    csub = cluster.add_subparsers(dest="cluster_command", required=True, parser_class=_Parser)
    cstart = csub.add_parser("start", parents=[common], help="start a master and N workers (JVMs of pyspark's jars)")
    cstart.add_argument("--workers", type=_positive, help="workers to start (default: spark.standalone.workers)")
    csub.add_parser("stop", parents=[common], help="stop the workers, their executors and the master")
    csub.add_parser("status", parents=[common], help="master, workers, apps (exit 1 unless all are up)")
    dedup = sub.add_parser("dedup", help="the dedup audit: why a post was dropped or kept")
    dsub = dedup.add_subparsers(dest="dedup_command", required=True, parser_class=_Parser)
    explain = dsub.add_parser("explain", parents=[common], help="every copy of a post and the document it ended in")
    explain.add_argument("query", help="a doc_id or member_id (6-16 hex digits, a prefix) or the opening of a post")
    explain.add_argument("--limit", type=_positive, default=10, help="copies to explain (default: 10)")
    lake_cmd = sub.add_parser("lake", help="the lake itself: what killed runs left behind")
    lsub = lake_cmd.add_subparsers(dest="lake_command", required=True, parser_class=_Parser)
    fsck = lsub.add_parser("fsck", parents=[common],
                           help="report leftover staging, uncommitted datasets and metastore/file "
                                "mismatches (exit 1 if any)")
    fsck.add_argument("--repair", action="store_true",
                      help="fix what was found (takes the lake's lock)")
    fsck.add_argument("--no-metastore", action="store_true",
                      help="files only: do not start Spark to compare partitions with the metastore")
    records = sub.add_parser("records", help="inspect or verify TFRecord files and datasets")
    rsub = records.add_subparsers(dest="records_command", required=True, parser_class=_Parser)
    inspect = rsub.add_parser("inspect", help="manifest, schema, counts and the first examples")
    inspect.add_argument("path", help="a dataset version folder or a single .tfrecord file")
    inspect.add_argument("--json", action="store_true", help="print decoded examples as JSON lines")
    inspect.add_argument("--limit", type=_at_least(0), default=5, help="examples to print (default: 5)")
    verify = rsub.add_parser("verify", help="check every CRC and the manifest's counts and checksums")
    verify.add_argument("path", help="a dataset version folder or a single .tfrecord file")
    return parser


def _at_least(minimum: int):
    """An argparse type: an int >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


_positive = _at_least(1)


def _dt(text: str) -> str:
    """An argparse type: a real calendar date written YYYY-MM-DD (a partition name, nothing else)."""
    import datetime as _dt_module

    try:
        if len(text) != 10:
            raise ValueError
        _dt_module.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None
    return text


def _progress(message: str) -> None:
    console.print(f"[bold cyan]›[/bold cyan] {escape(message)}")


def _spark(cfg, lake):
    from pipelines.spark.session import build_session
    from shardforge.spark_progress import SparkProgress

    _progress(f"starting Spark ({cfg.spark.master}, Hive metastore in {lake.system()})")
    spark = build_session(cfg.spark, lake)
    SparkProgress(spark, _progress).start()  # a daemon: it ends with the process
    return spark


@contextlib.contextmanager
def _train_bar(model: str, steps: int):
    """A progress bar for one training stage; yields its ``on_step`` callback."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} {task.fields[loss]}"), TimeRemainingColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task(f"train {model}", total=steps or None, loss="")
        yield lambda m: bar.update(task, completed=m.get("step", 0),
                                   loss=f"loss {m['loss']:.3f}" if "loss" in m else "")


def _run_all(cfg, lake, args) -> dict:
    """``shardforge run``: the sample (when raw/ is empty), then every declared stage in order."""
    from shardforge import stages
    from shardforge.pipeline import declared_stages, run_stages

    ctx = stages.StageContext(cfg, lake, stages.new_run_id(), progress=_progress, device=args.device,
                              spark_factory=lambda: _spark(cfg, lake), train_bar=_train_bar)
    ctx.reports.append(stages.sample(cfg, lake))
    missing = stages.missing_corpora(cfg, lake)
    for name, why in missing.items():
        _progress(f"corpus {name!r} is configured but not in the lake: {why}")
    if "feeds" in missing:
        raise RuntimeError(f"nothing to do: the feeds corpus is missing ({missing['feeds']})")
    ctx.extra.update(missing_corpora=missing, not_processed={
        n: "cleaning of this corpus is not built (feeds, articles and the image corpus are)"
        for n in cfg.corpora if n not in ("feeds", "articles", cfg.images.corpus) and n not in missing})
    # Each gate stops the run (exit 1, naming expectation and column) before bad data moves on.
    for _ in run_stages(declared_stages(cfg), ctx):
        pass
    return {"run_id": ctx.run_id, "lake": lake.root, "stages": [r.as_dict() for r in ctx.reports],
            **ctx.extra}


def _write_report(cfg, lake, summary: dict) -> str:
    from shardforge.run_report import write_run_report
    from shardforge.stages import StageReport

    extra = {k: v for k, v in summary.items() if k not in ("run_id", "lake", "stages")}
    return write_run_report(cfg, lake, summary["run_id"],
                            [StageReport(**s) for s in summary["stages"]], extra)["report_uri"]


def _quiet_engines(verbose: bool) -> None:
    """Engine logs: errors only unless ``-v`` (Spark reads SHARDFORGE_VERBOSE when it starts)."""
    import logging

    if verbose:
        os.environ["SHARDFORGE_VERBOSE"] = "1"
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        return
    for name in ("apache_beam", "great_expectations", "py4j", "urllib3", "numba"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _summary_console() -> Console:
    """Where the summary table goes: the terminal's width, or wide enough not to wrap in a pipe."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _dispatch(args) -> int:
    _quiet_engines(args.verbose)
    if args.command == "records":
        from records.inspect import inspect, verify

        if args.records_command == "inspect":
            return inspect(args.path, limit=args.limit, as_json=args.json, out=sys.stdout)
        return verify(args.path, out=sys.stdout)

    from core.config import load_config
    from core.lake import Lake

    cfg = load_config(args.config, lake_root=args.lake)
    lake = Lake(cfg.lake.root)
    # torchrun starts one CLI per rank: rank 0 holds the lock for all of them.
    writes = args.command in WRITERS or (args.command == "lake" and args.repair)
    if writes and int(os.environ.get("RANK", "0")) == 0:
        from core.lake_lock import LakeLock
        from shardforge.lake_fsck import sweep_leftovers

        with LakeLock(lake, f"shardforge {args.command}", wait=args.wait,
                      on_wait=lambda h: _progress(f"waiting for the lake's writer, {h.describe()}"),
                      on_stale=lambda h: _progress(f"taking over a stale lake lock ({h.describe()})")):
            for uri in sweep_leftovers(lake):  # a killed commit's: nobody else writes now
                _progress(f"swept {uri}, left by an interrupted commit")
            code = _command(args, cfg, lake)
            from records.faults import fault_point

            fault_point(f"after:{args.command}")  # kill -9 tests only: done, lock still held
            return code
    return _command(args, cfg, lake)


def _fsck(args, cfg, lake) -> int:
    from shardforge.lake_fsck import repair, scan_files, scan_metastore

    findings = scan_files(lake)
    spark = None
    if not args.no_metastore and lake.fs.exists(lake.fs_path(lake.database(cfg.spark.database))):
        spark = _spark(cfg, lake)
        findings += scan_metastore(lake, spark, cfg.spark.database)
    for finding in findings:
        print(finding.line())
    if not findings:
        _progress(f"lake fsck: {lake.root} is clean")
        return 0
    if not args.repair:
        _progress(f"lake fsck: {len(findings)} finding(s); --repair fixes them")
        return STAGE_ERROR
    for line in repair(lake, findings, spark):
        print(line)
    _progress(f"lake fsck: repaired {len(findings)} finding(s)")
    return 0


def _command(args, cfg, lake) -> int:
    from shardforge import stages
    from shardforge.summary import latest_summary, print_summary

    if args.command == "sample":
        overrides = {k: getattr(args, k) for k in ("posts", "images", "seed") if getattr(args, k) is not None}
        if overrides:
            cfg = cfg.model_copy(update={"sample": cfg.sample.model_copy(update=overrides)})
        report = stages.sample(cfg, lake, force=args.force)
        if "skipped" in report.details:
            _progress(f"sample: skipped, {report.details['skipped']} (--force writes anyway)")
        else:
            d = report.details
            _progress(f"sample: {d['posts']} posts, {d['articles']} articles, {d['images']} images, "
                      f"{len(d['dirty'])} deliberately dirty inputs → {lake.root}/raw/<corpus>/dt={cfg.sample.dt}")
    elif args.command == "ingest":
        for report in stages.ingest(cfg, lake, _spark(cfg, lake), progress=_progress):
            _progress(f"{report.stage}: {report.rows_in} {report.details['unit']} in, {report.rows_out} rows, "
                      f"{report.quarantined} quarantined")
    elif args.command == "clean":
        for report in stages.clean(cfg, lake, _spark(cfg, lake), run_id=stages.new_run_id(), progress=_progress):
            _progress(f"{report.stage}: {report.rows_in} in, {report.rows_out} out, "
                      f"{report.quarantined} quarantined, {report.duplicates_dropped} duplicates")
    elif args.command == "images":
        report = stages.images(cfg, lake, progress=_progress)
        _progress(f"images: {report.rows_in} in, {report.rows_out} out, {report.quarantined} quarantined, "
                  f"{report.duplicates_dropped} duplicates")
    elif args.command == "encode":
        spark = _spark(cfg, lake) if args.engine == "spark" else None
        report = stages.encode(cfg, lake, engine=args.engine, spark=spark, dataset=args.dataset,
                               progress=_progress)
        _progress(f"{report.stage}: {report.rows_in} rows → {report.details['records']} "
                  f"({report.quarantined} quarantined) at {report.outputs[0]}")
    elif args.command == "train":
        from shardforge import training

        run_id = stages.new_run_id()
        if args.resume is not None:
            run_id = (training.latest_model_run(lake, args.model) if args.resume == "latest"
                      else args.resume)
            _progress(f"train: resuming {args.model} run {run_id}")
        steps = int(cfg.models[args.model].train.get("steps", 0)) if args.model in cfg.models else 0
        with _train_bar(args.model, steps) as on_step:
            report = training.train(cfg, lake, args.model, run_id=run_id, device=args.device,
                                    on_step=on_step, resume=args.resume is not None)
        _progress(f"train: loss {report.details['first_loss']:.3f} → {report.details['final_loss']:.3f}, "
                  f"checkpoint {report.outputs[0]}")
        if report.details.get("init_from"):
            frozen = " (backbone frozen: Medusa-1)" if report.details.get("freeze_backbone") else ""
            _progress(f"train: {args.model} started from {report.details['init_from']}{frozen}")
    elif args.command == "tokens":
        from shardforge import training

        run_id = args.run_id or training.latest_model_run(lake, args.model)
        report = training.export_tokens(cfg, lake, args.model, run_id=run_id, device=args.device)
        _progress(f"tokens: {report.details['records']} token sequences → {report.outputs[0]}")
    elif args.command == "generate":
        from shardforge import training
        from shardforge.generate import generate_images

        if not args.temperature > 0:
            raise _UsageError(f"generate: --temperature must be > 0, got {args.temperature}")
        run_id = args.run_id or training.latest_model_run(lake, args.model)
        report = generate_images(cfg, lake, args.model, prior=args.prior, run_id=run_id, n=args.n,
                                 temperature=args.temperature, top_k=args.top_k, seed=args.seed,
                                 device=args.device)
        _progress(f"generate: {args.n} images ({report.details['distinct_codes']} distinct codes) "
                  f"→ {report.outputs[0]}")
    elif args.command == "validate":
        run_id = stages.new_run_id()
        for what in [args.only] if args.only else ["clean", "images", "dataset"]:
            report = stages.validate(cfg, lake, run_id=run_id, what=what, progress=_progress)
            _progress(f"{report.stage}: " + "; ".join(report.details["gates"]))
        _progress(f"Data Docs under {lake.reports(run_id)}/data_docs")
    elif args.command == "report":
        summary = latest_summary(lake, args.run_id)
        print_summary(summary, _summary_console())
        _progress(f"report: {_write_report(cfg, lake, summary)}")
    elif args.command == "lake":
        return _fsck(args, cfg, lake)
    elif args.command == "spark-cluster":
        from shardforge.spark_cluster import command

        return command(args.cluster_command, cfg, lake, workers=getattr(args, "workers", None),
                       progress=_progress, echo=lambda line: print(line, flush=True))
    elif args.command == "dedup":
        from pipelines.spark.dedup_explain import explain

        found = explain(_spark(cfg, lake), db=cfg.spark.database, query=args.query, limit=args.limit)
        if not found:
            raise LookupError(f"dedup explain: no post, copy or document matches {args.query!r}")
        for item in found:
            print(item.copy)
            for line in item.lines:
                print(f"  {line}")
    elif args.command == "submit":
        from core.config import DEFAULT_CONFIG_PATH
        from shardforge.submit import submit

        return submit(cfg, job=args.job, config_path=Path(args.config or DEFAULT_CONFIG_PATH).resolve(),
                      profile=args.profile, lake_root=lake.root, dts=args.dt, dry_run=args.dry_run,
                      echo=lambda line: print(line, flush=True), progress=_progress)
    elif args.command == "run":
        started = time.perf_counter()
        summary = _run_all(cfg, lake, args)
        print_summary(summary, _summary_console())
        _progress(f"done in {time.perf_counter() - started:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shardforge`` console script; returns the exit code."""
    from core.config import ConfigError
    from core.engines import MissingEngineError
    from core.lake import LakePathError
    from core.lake_lock import LakeLockedError
    from features.spec import SpecError
    from shardforge.spark_cluster import ClusterUsageError

    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except _UsageError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return USAGE_ERROR
    except (ConfigError, SpecError, MissingEngineError, LakePathError, LakeLockedError,
            ClusterUsageError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return USAGE_ERROR
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            return _stage_failed(exc)
        path = exc.filename or "the lake"
        console.print(f"[red]error:[/red] {escape(str(path))}: {escape(exc.strerror or str(exc))}: "
                      "the lake (or this path) is not writable by this user", highlight=False)
        return USAGE_ERROR
    except Exception as exc:  # a stage failed: one line naming what, the traceback on demand
        return _stage_failed(exc)


def _stage_failed(exc: Exception) -> int:
    if os.environ.get("SHARDFORGE_DEBUG"):
        raise exc
    first_line = (str(exc).strip().splitlines() or [""])[0]
    console.print(f"[red]failed:[/red] {type(exc).__name__}: {escape(first_line)}", highlight=False)
    return STAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
