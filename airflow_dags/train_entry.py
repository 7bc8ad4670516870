"""``torchrun … -m airflow_dags.train_entry <model> --config F --lake U --run-id R``.

What the DAG's ``train_<model>`` tasks launch: :func:`shardforge.training.train` (the
function ``shardforge train`` calls) with the DAG run's lake run id, so a re-run of the
same ``dt`` writes the same ``models/<model>/<run_id>/``. Rank 0 leaves the stage report
as ``reports/<run_id>/train_<model>.json`` for the report task and prints it as one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow_dags.train_entry",
                                     description="train one configured model (for torchrun)")
    parser.add_argument("model", help="a key of `models:` in the config")
    parser.add_argument("--config", required=True, help="config YAML")
    parser.add_argument("--lake", required=True, help="lake root URI")
    parser.add_argument("--run-id", required=True, help="lake run id of the DAG run")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: cuda when available")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Train ``model``; returns the exit code (0, or an exception propagates)."""
    from airflow_dags.tasks import train_report_uri
    from core.config import load_config
    from core.lake import Lake
    from shardforge import training

    args = _parser().parse_args(argv)
    cfg = load_config(args.config, lake_root=args.lake)
    lake = Lake(cfg.lake.root)
    report = training.train(cfg, lake, args.model, run_id=args.run_id,
                          device=None if args.device == "auto" else args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        body = json.dumps(report.as_dict(), ensure_ascii=False, sort_keys=True)
        path = lake.fs_path(train_report_uri(lake, args.run_id, args.model))
        lake.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with lake.fs.open(path, "w") as handle:
            handle.write(body)
        print(body, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
