"""What the ``shardforge_daily`` tasks run: plain functions, no Airflow objects.

The DAG file only wires these to operators; each function takes the run's config path,
lake root, ``dt`` and lake run id, so it can be called (and tested) without a scheduler.
Engines are imported inside the functions: the DAG file imports this module at parse
time, and parsing must stay free of pyspark, apache_beam, torch and great_expectations.

* :func:`prepare` loads the config, zips the project for ``--py-files`` and writes a
  Spark properties file equivalent to ``shardforge submit spark``'s flags.
* :func:`run_gate` runs a declared validation stage (Great Expectations) on the run's
  ``dt``; a failed suite raises :class:`GateFailed` naming expectation and column.
* :func:`write_run_report` writes ``summary.json`` and ``report.html`` for the run.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "GateFailed",
    "lake_run_id",
    "prepare",
    "spark_properties",
    "run_gate",
    "train_report_uri",
    "write_run_report",
]

# spark-submit flags of ``submit_command`` and the Spark properties that mean the same;
# ``--master`` and ``--deploy-mode`` are the Airflow connection's (``spark_default``).
_FLAG_PROPERTIES = {
    "--name": "spark.app.name",
    "--queue": "spark.yarn.queue",
    "--driver-memory": "spark.driver.memory",
    "--executor-memory": "spark.executor.memory",
    "--executor-cores": "spark.executor.cores",
    "--num-executors": "spark.executor.instances",
    "--archives": "spark.yarn.dist.archives",
    "--files": "spark.yarn.dist.files",
}
_CONNECTION_FLAGS = ("--master", "--deploy-mode")
_RUN_ID = re.compile(r"[^A-Za-z0-9._=-]+")


class GateFailed(RuntimeError):
    """A validation gate failed; the message is the suite's (expectation and column named)."""


def lake_run_id(dag_id: str, dt: str) -> str:
    """The run id used in the lake (``reports/<run_id>``, ``models/<m>/<run_id>``).

    One per DAG and ``dt``, so a re-run of the same partition replaces its own outputs.
    """
    return _RUN_ID.sub("_", f"{dag_id}-{dt}")


def spark_properties(command: list[str], entry_script: str) -> tuple[dict[str, str], list[str]]:
    """Split a ``submit_command`` argv into Spark properties and the application's arguments.

    Args:
        command: the argv :func:`shardforge.submit.submit_command` built.
        entry_script: the application file (``shardforge/spark_jobs.py``).

    Returns:
        ``(properties, application_args)``: every flag before the entry script as a
        property (``--conf`` pairs as they are), and everything after it.

    Raises:
        ValueError: the entry script is missing, or a flag has no property equivalent.
    """
    if entry_script not in command:
        raise ValueError(f"{entry_script} is not in the spark-submit command {command!r}")
    at = command.index(entry_script)
    flags, args = command[1:at], command[at + 1:]
    properties: dict[str, str] = {}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        if flag == "--conf":
            key, _, val = value.partition("=")
            properties[key] = val
        elif flag in _FLAG_PROPERTIES:
            properties[_FLAG_PROPERTIES[flag]] = value
        elif flag not in _CONNECTION_FLAGS and flag != "--py-files":
            raise ValueError(f"spark-submit flag {flag} has no Spark property equivalent")
    return properties, args


def prepare(*, config: str | None, lake: str | None, profile: str, run_id: str,
            workdir: str | None = None) -> dict[str, Any]:
    """Load the config, build the ``--py-files`` zip and the Spark properties file.

    Args:
        config: the config YAML (None: the embedded ``conf/sample.yaml``).
        lake: the lake root (None: ``lake.root`` of the config).
        profile: ``local`` or ``yarn``, as in ``shardforge submit spark --profile``.
        run_id: the lake run id (:func:`lake_run_id`).
        workdir: where the zip and properties go (default: a folder per run under the
            temp dir; it must be readable by the Spark tasks' worker).

    Returns:
        Plain values the other tasks template in: ``config`` (absolute path), ``lake``
        (root URI), ``job_config`` (the path the job reads: the file name on YARN),
        ``pyfiles``, ``properties``, ``database``, ``run_id``, ``models``.
    """
    from core.config import DEFAULT_CONFIG_PATH, load_config
    from core.lake import Lake
    from shardforge.submit import ENTRY_SCRIPT, build_pyfiles_zip, submit_command

    config_path = str(Path(config or DEFAULT_CONFIG_PATH).resolve())
    cfg = load_config(config_path, lake_root=lake or None)
    root = Lake(cfg.lake.root).root
    folder = Path(workdir or os.path.join(tempfile.gettempdir(), "shardforge-airflow", run_id))
    folder.mkdir(parents=True, exist_ok=True)
    pyfiles = build_pyfiles_zip(folder / "shardforge.zip")
    command = submit_command(cfg, job="ingest", config_path=config_path, pyfiles=pyfiles,
                             profile=profile, lake_root=root, spark_submit="spark-submit")
    properties, args = spark_properties(command, str(ENTRY_SCRIPT))
    properties.pop("spark.app.name", None)  # the operator names each job
    props_file = folder / f"spark-{profile}.properties"
    props_file.write_text("".join(f"{k} {v}\n" for k, v in sorted(properties.items())),
                          encoding="utf-8")
    return {
        "config": config_path, "lake": root, "job_config": args[args.index("--config") + 1],
        "pyfiles": str(pyfiles), "properties": str(props_file), "database": cfg.spark.database,
        "app_name": cfg.spark.app_name, "run_id": run_id, "models": sorted(cfg.models),
    }


def run_gate(gate: str, *, config: str, lake: str, dt: str, run_id: str) -> list[dict[str, Any]]:
    """A declared validation stage on ``dt`` (``clean``, ``images`` or ``dataset``).

    The same entry ``shardforge run`` calls, narrowed to the DAG run's partition; Data Docs
    go to ``reports/<run_id>/data_docs`` on a local lake (any fsspec lake runs the gates).

    Returns:
        The suites' results as plain dicts (suite, success, evaluated, failures, docs index).

    Raises:
        GateFailed: a suite failed; the message names expectation and column.
    """
    from core.config import load_config
    from core.lake import Lake
    from pipelines.validate.gate import ValidationFailed
    from shardforge.stages import StageContext, validate

    cfg = load_config(config, lake_root=lake)
    ctx = StageContext(cfg, Lake(cfg.lake.root), run_id, dts=[dt])
    try:
        report = validate(ctx.cfg, ctx.lake, run_id=run_id, what=gate, dts=ctx.dts)
    except ValidationFailed as exc:
        raise GateFailed(str(exc)) from exc
    return report.details["results"]


def train_report_uri(lake, run_id: str, model: str) -> str:
    """Where ``airflow_dags.train_entry`` leaves a model's stage report for the report task."""
    return f"{lake.reports(run_id)}/train_{model}.json"


def _spark_reports(lake, database: str, dt: str) -> list:
    """The latest ``job_runs`` row of each job for ``dt``, as stage reports."""
    import pyarrow.parquet as pq

    from shardforge.stages import StageReport

    path = lake.fs_path(lake.table(database, "job_runs", dt))
    if not lake.fs.exists(path):
        return []
    latest: dict[str, dict] = {}
    for row in sorted(pq.read_table(path, filesystem=lake.fs).to_pylist(),
                      key=lambda r: r["finished_at"]):
        latest[row["job"]] = row
    return [StageReport(job, rows_in=r["rows_in"], rows_out=r["rows_out"],
                        quarantined=r["quarantined"], duplicates_dropped=r["duplicates_dropped"],
                        details={"dt": [dt], "spark_run_id": r["run_id"]})
            for job, r in sorted(latest.items())]


def _images_report(lake, database: str, dt: str) -> list:
    """The image job's accounting for ``dt`` (its ``_reconcile.json``), as a stage report."""
    from pipelines.beam.images import RECONCILE_FILE
    from shardforge.stages import StageReport

    path = lake.fs_path(f"{lake.table(database, 'clean_images', dt)}/{RECONCILE_FILE}")
    if not lake.fs.exists(path):
        return []
    with lake.fs.open(path, "r") as handle:
        r = json.load(handle)
    return [StageReport("images", rows_in=r["rows_in"], rows_out=r["rows_out"],
                        quarantined=r["quarantined"], duplicates_dropped=r["duplicates_dropped"],
                        details={"dt": [dt], "unit": "images",
                                 "duplicates_by_kind": r["duplicates_by_kind"],
                                 "quarantined_by_reason": r["quarantined_by_reason"]})]


def write_run_report(*, config: str, lake: str, dt: str, run_id: str,
                     gates: list[dict[str, Any]]) -> dict[str, str]:
    """Write ``reports/<run_id>/summary.json`` and ``report.html`` for one DAG run.

    Stages: the Spark jobs' ``job_runs`` rows for ``dt``, the image job's accounting, the
    encoded dataset's manifest, and each model trained in this run (its ``train_<model>.json``).

    Returns:
        ``{"summary": uri, "report": uri}``.
    """
    from core.config import load_config
    from core.lake import Lake
    from records.manifest import load_manifest
    from shardforge.run_report import write_run_report as write_both
    from shardforge.stages import StageReport

    cfg = load_config(config, lake_root=lake)
    the_lake = Lake(cfg.lake.root)
    reports = _spark_reports(the_lake, cfg.spark.database, dt)
    reports += _images_report(the_lake, cfg.spark.database, dt)
    uri = the_lake.records(cfg.dataset.name, cfg.dataset.version)
    manifest = load_manifest(uri)
    records = {split: info.records for split, info in manifest.splits.items()}
    reports.append(StageReport("encode", rows_in=sum(records.values()),
                               rows_out=sum(records.values()), outputs=[uri],
                               details={"records": records, "shards": {
                                   s: len(i.shards) for s, i in manifest.splits.items()}}))
    for model in cfg.models:
        path = the_lake.fs_path(train_report_uri(the_lake, run_id, model))
        if the_lake.fs.exists(path):
            with the_lake.fs.open(path, "r") as handle:
                reports.append(StageReport(**json.load(handle)))
    written = write_both(cfg, the_lake, run_id, reports, {"dt": dt, "gates": gates})
    return {"summary": written["summary_uri"], "report": written["report_uri"]}
