"""Beam pipeline: clean rows (Parquet) → analyze (train) → feature transform → TFRecord shards.

The shape of Beam's own examples: :func:`build_encode` is the pure transform over
PCollections, :func:`run_encode` and :func:`run` only read, write and commit. Steps::

    ListInputs
      ├─ ReadForAnalysis → AnalyzeTrainSplit   the analyzers' columns only; CombineGlobally(
      │                                        AnalyzeFn): one full pass over the train split
      └─ ReadParquet → EncodeBatches           pyarrow Tables (one per row group), ParDo(
           │                                   EncodeBatchesFn), the artifacts a side input
           ├─ GroupByShard → WriteShards       one shard file per global shard
           ├─ KeyQuarantine → GroupQuarantine → WriteQuarantine   one Parquet part
           └─ MergeStatistics                  CombineGlobally(StatisticsFn): the rows'
                                               per-split, per-feature statistics
    CollectResults → WriteResults              one JSON line per file written
    AnalyzeTrainSplit → StageArtifacts         the artifacts, for the driver

Splits and shards come from a stable hash of the key column (:mod:`features.split`), rows
are ordered by key inside a shard, and every worker writes under an attempt-unique name in
a staging folder; the driver keeps the one attempt per shard Beam reports, reconciles rows
in = rows encoded + rows quarantined, saves the artifacts and commits the version folder
atomically (:mod:`pipelines.encode.commit`). The Spark job
(:mod:`pipelines.spark.encode`) runs the same worker code
(:mod:`pipelines.encode.shards`), so the same input gives the same bytes from both
engines, on any runner, worker count or input order.

Runners: ``--runner`` and any ``--key=value`` flag to :func:`run` (or ``beam.runner`` and
``beam.options`` of the config) go to Beam as pipeline options, e.g. ``--runner=FlinkRunner
--flink_master=host:8081 --environment_type=LOOPBACK``, ``--runner=SparkRunner
--spark_master_url=spark://host:7077``, ``--runner=DataflowRunner --project=… --region=…
--temp_location=gs://…``. Workers write the staging folder through fsspec, so they must
reach the lake (``file://`` on one host or a shared mount, ``hdfs://`` with a Hadoop client).
"""

from __future__ import annotations

import json
import sys

from core.engines import require
from features.accumulators import decode_artifacts, encode_artifacts
from features.artifacts import Artifacts
from features.spec import FeatureSpec
from pipelines.beam.launch import parse_launch_args, pipeline_options
from pipelines.encode.commit import EncodeResult, commit_encoded, count_rows, discard
from pipelines.encode.shards import ShardPlan, analysis_columns, input_columns
from records.uri import join, resolve

__all__ = ["EncodeResult", "EncodedPCollections", "build_encode", "run", "run_encode"]

WORK_DIR = "_work"  # inside staging: results and artifacts for the driver, removed before commit
ARTIFACTS_FILE = "artifacts.json"  # the extracted artifacts, as data (never a pickle)


class EncodedPCollections:
    """The outputs of :func:`build_encode`.

    Attributes:
        results: JSON lines, one per file written (``pipelines.encode.shards.RESULT_FIELDS``).
        artifacts: a singleton PCollection holding the :class:`~features.artifacts.Artifacts`.
    """

    def __init__(self, results, artifacts) -> None:
        self.results, self.artifacts = results, artifacts


def build_encode(tables, *, spec: FeatureSpec, plan: ShardPlan, staging_uri: str,
                 analysis_tables=None) -> EncodedPCollections:
    """Analyze, encode and write a PCollection of Arrow tables into ``staging_uri``.

    Args:
        tables: ``pyarrow.Table`` (or RecordBatch) elements holding :func:`input_columns`.
        analysis_tables: the same rows with :func:`analysis_columns` only (default: ``tables``).
        spec: the feature spec.
        plan: splits and shard counts.
        staging_uri: the staging folder the shard and quarantine files go to.
    """
    import apache_beam as beam

    from pipelines.beam.encode_fns import (
        QUARANTINE_TAG,
        STATISTICS_TAG,
        AnalyzeFn,
        EncodeBatchesFn,
        StatisticsFn,
        write_quarantine_group,
        write_shard_group,
    )

    artifacts = (tables if analysis_tables is None else analysis_tables) | "AnalyzeTrainSplit" >> \
        beam.CombineGlobally(AnalyzeFn(spec, plan.splits))
    side = beam.pvalue.AsSingleton(artifacts)
    routed = tables | "EncodeBatches" >> beam.ParDo(EncodeBatchesFn(spec, plan), side).with_outputs(
        QUARANTINE_TAG, STATISTICS_TAG, main="shards")
    written = (
        routed.shards
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.FlatMap(write_shard_group, side, spec=spec, plan=plan,
                                        staging_uri=staging_uri)
    )
    quarantined = (
        routed[QUARANTINE_TAG]
        | "KeyQuarantine" >> beam.Map(lambda batch: (0, batch))
        | "GroupQuarantine" >> beam.GroupByKey()
        | "WriteQuarantine" >> beam.FlatMap(write_quarantine_group, key=spec.key,
                                            staging_uri=staging_uri)
    )
    statistics = routed[STATISTICS_TAG] | "MergeStatistics" >> beam.CombineGlobally(
        StatisticsFn(spec, plan))
    results = (written, quarantined, statistics) | "CollectResults" >> beam.Flatten()
    return EncodedPCollections(results, artifacts)


def _stage_artifacts(artifacts: Artifacts, *, uri: str) -> None:
    fs, path = resolve(uri)
    with fs.open(path, "wb") as handle:
        handle.write(encode_artifacts(artifacts))  # data, not a pickle: see features.accumulators


def _read_work(staging_uri: str) -> tuple[list[dict], Artifacts]:
    fs, root = resolve(staging_uri)
    work = join(root, WORK_DIR)
    results = []
    for file in sorted(fs.glob(join(work, "results*.jsonl"))):
        with fs.open(file, "rt") as handle:
            results += [json.loads(line) for line in handle if line.strip()]
    artifacts_path = join(work, ARTIFACTS_FILE)
    with fs.open(artifacts_path, "rb") as handle:
        artifacts = decode_artifacts(handle.read(), source=artifacts_path)
    fs.rm(work, recursive=True)
    return results, artifacts


def run_encode(*, lake, inputs: list[str], spec: FeatureSpec, dataset: str, version: str,
               splits: dict[str, float], shards: dict[str, int], runner: str = "DirectRunner",
               options: dict | None = None, config: dict | None = None,
               statistics: bool = True) -> EncodeResult:
    """Run the pipeline over Parquet ``inputs`` (globs); commit ``lake.records(dataset, version)``.

    ``statistics=False`` skips the statistics (see :class:`~pipelines.encode.shards.ShardPlan`).

    Raises:
        MissingEngineError: apache-beam is not installed.
        FileNotFoundError: an input glob matches no file.
        ValueError: a bad value under ``on_error: raise`` (naming feature, column, row, key).
        ReconciliationError: rows in != rows encoded + rows quarantined; nothing committed.
    """
    beam = require("apache_beam", for_what="the Beam encode pipeline")
    from records.writer import staging_uri_for

    plan = ShardPlan(dict(splits), dict(shards), statistics)
    rows_in = count_rows(inputs)
    staging = staging_uri_for(lake.records(dataset, version))
    work = f"{staging}/{WORK_DIR}"
    try:
        with beam.Pipeline(options=pipeline_options(runner, options or {})) as pipeline:
            files = pipeline | "ListInputs" >> beam.Create([_beam_path(uri) for uri in inputs])
            tables = files | "ReadParquet" >> beam.io.ReadAllFromParquetBatched(
                columns=input_columns(spec))
            analysis = files | "ReadForAnalysis" >> beam.io.ReadAllFromParquetBatched(
                columns=analysis_columns(spec))
            encoded = build_encode(tables, spec=spec, plan=plan, staging_uri=staging,
                                   analysis_tables=analysis)
            _ = encoded.results | "WriteResults" >> beam.io.WriteToText(
                f"{work}/results", file_name_suffix=".jsonl")
            _ = encoded.artifacts | "StageArtifacts" >> beam.Map(
                _stage_artifacts, uri=f"{work}/{ARTIFACTS_FILE}")
        results, artifacts = _read_work(staging)
        return commit_encoded(lake=lake, staging_uri=staging, plan=plan, results=results,
                              rows_in=rows_in, spec=spec, artifacts=artifacts, dataset=dataset,
                              version=version, config=config, inputs=inputs)
    except BaseException:
        discard(staging)  # nothing of a failed run may stay behind
        raise


def _beam_path(uri: str) -> str:
    """Beam's local filesystem takes plain paths only; ``hdfs://`` and others pass through."""
    return resolve(uri)[1] if uri.startswith("file:") else uri


def run(argv: list[str] | None = None) -> EncodeResult:
    """Command-line entry for launchers that run a pipeline module (Airflow's Beam operator).

    ``--config FILE --lake URI [--dt D …] [--runner R] [--dataset posts|images]``; unknown
    ``--key=value`` flags are Beam pipeline options. ``posts`` are built from the documents
    of every dt (``--dt`` does not narrow them: a dataset never repeats a document); ``images``
    from the ``--dt`` partitions, else every partition present. Prints the result as one JSON line.
    """
    from core.config import load_config
    from core.lake import Lake
    from features.spec import load_spec
    from pipelines.encode.inputs import dataset_inputs

    args = parse_launch_args(argv, description=__doc__.splitlines()[0], add_own=lambda p: p.add_argument(
        "--dataset", choices=["posts", "images"], default="posts"))
    dataset = args.own.dataset
    cfg = load_config(args.config, lake_root=args.lake)
    lake = Lake(cfg.lake.root)
    options = {**cfg.beam.options, **args.options}
    image_dts = (args.dt or lake.raw_partitions(cfg.images.corpus)) if dataset == "images" else ()
    source = dataset_inputs(cfg, lake, dataset, image_dts=image_dts)
    result = run_encode(
        lake=lake, inputs=source.inputs, spec=load_spec(cfg.resolve_path(source.spec_path)),
        dataset=source.entry.name, version=source.entry.version, splits=dict(source.entry.splits),
        shards=dict(source.entry.shards), runner=args.runner or cfg.beam.runner, options=options,
        config=source.config)
    print(json.dumps(result.__dict__, sort_keys=True), file=sys.stdout)
    return result


if __name__ == "__main__":
    run()
