"""The entry script ``spark-submit`` runs: ``jobs.py <job> --config FILE [--lake URI] [--dt D …]``.

It is shipped as the primary resource of the command :mod:`shardforge.submit`
builds, with the project zipped on ``--py-files``. The jobs are the declared stages that
run on Spark (:data:`shardforge.pipeline.SPARK_JOBS`); each runs the same entry as in
``shardforge run`` and prints its reports as one JSON line on stdout.

Jobs:
    ingest: raw feed dumps → ``raw_feeds``, JSONL articles → ``raw_articles``.
    explode_clean: ``LATERAL VIEW`` explodes and cleaning → ``clean_posts``,
        ``clean_paragraphs`` (+ ``quarantine``, ``duplicates``, ``job_runs``), the cross-dt
        dedup index and links, and the rebuilt ``documents``.
    encode: analyze + encode ``clean_posts`` → ``records/<dataset>/v=<version>``.
    encode_images: the same for ``clean_images`` → the ``image_dataset`` records.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from shardforge.pipeline import SPARK_JOBS

__all__ = ["JOBS", "main"]

JOBS = SPARK_JOBS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobs.py", description="shardforge Spark jobs")
    parser.add_argument("job", choices=JOBS)
    parser.add_argument("--config", required=True, help="config YAML (shipped with --files on YARN)")
    parser.add_argument("--lake", help="lake root (overrides lake.root)")
    parser.add_argument("--dt", action="append", default=[], help="a dt to process (repeatable; default: all)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one job on the session ``spark-submit`` started; returns the exit code."""
    from core.config import load_config
    from core.lake import Lake
    from pipelines.spark.session import build_session
    from shardforge.pipeline import stage_named
    from shardforge.stages import StageContext, new_run_id

    args = _parser().parse_args(argv)
    cfg = load_config(args.config, lake_root=args.lake)
    if args.dt:
        corpora = {name: corpus.model_copy(update={"dt": list(args.dt)})
                   for name, corpus in cfg.corpora.items()}
        cfg = cfg.model_copy(update={"corpora": corpora})
    lake = Lake(cfg.lake.root)
    ctx = StageContext(cfg, lake, new_run_id(), encode_engine="spark",
                       spark_factory=lambda: build_session(cfg.spark, lake, submitted=True))
    try:
        reports = stage_named(args.job).entry(ctx)
    finally:
        ctx.stop_spark()
    print(json.dumps({"job": args.job, "stages": [r.as_dict() for r in reports]}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
