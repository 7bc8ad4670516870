"""Spark job: clean rows (Parquet) → analyze (train) → feature transform → TFRecord shards.

The same worker code as the Beam pipeline (:mod:`pipelines.encode.shards`), moved by
Spark, so the same spec on the same input gives the same bytes from both engines:

1. **Analyze** (:func:`analyze`): ``mapInArrow`` runs
   :class:`~features.analyzers.SpecAnalyzer` over each partition's train rows and yields
   one accumulator per partition, as JSON (never a pickle); the driver merges them and extracts the
   artifacts (a full pass, as tf.Transform's analyzers).
2. **Encode** (:func:`build_encode`): ``mapInArrow`` routes each Arrow batch (the artifacts
   broadcast) into payload rows ``(gid, key, payload)``: tf.Example bytes keyed by their
   global shard, and quarantined rows as one Arrow IPC row with gid -1. Then
   ``repartition(gid)`` + ``sortWithinPartitions(gid, key, payload)`` and a second
   ``mapInArrow`` writes each gid's run of rows as one shard file (gid -1: the quarantine
   part), streaming, and yields one result row per file. Each routing task also counts its
   rows' statistics (:class:`~features.statistics.SpecStatistics`) and sends them on as one
   row of gid -2, which the writing task that gets them merges into a ``statistics`` result.
3. **Commit** (driver, :func:`pipelines.encode.commit.commit_encoded`).

Task-atomic output: a write task names every file it writes with a fresh attempt id
(``split=train/shard-00003-<attempt>.tfrecord``), so a retried, failed or speculative
attempt can never overwrite, append to or delete another attempt's file. ``collect()``
returns the result rows of exactly one successful attempt per partition; the driver
commits exactly the files those rows name and deletes every other attempt's files before
the atomic rename of the version folder. Nothing is written in place.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from features.accumulators import decode_accumulator, encode_accumulator
from features.analyzers import SpecAnalyzer
from features.artifacts import Artifacts
from features.spec import FeatureSpec
from features.statistics import SpecStatistics
from pipelines.encode.commit import EncodeResult, commit_encoded, count_rows, discard
from pipelines.encode.shards import (
    PAYLOAD_SCHEMA,
    QUARANTINE,
    RESULT_FIELDS,
    STATISTICS,
    ShardPlan,
    analysis_columns,
    from_ipc,
    input_columns,
    route,
    statistics_result,
    to_ipc,
    train_rows,
    write_group,
    write_quarantine,
)

__all__ = ["analyze", "build_encode", "run_encode"]

PAYLOAD_DDL = "gid int, key string, payload binary"
RESULT_DDL = "kind string, gid int, path string, records bigint, bytes bigint, sha256 string, " \
             "index string, documents bigint, repeated_key string, statistics string"
_RESULT_SCHEMA = pa.schema(list(RESULT_FIELDS))
_ACC_SCHEMA = pa.schema([("accumulator", pa.binary())])


def _analyze_partition(batches: Iterator[pa.RecordBatch], *, spec: FeatureSpec,
                       splits: dict[str, float]) -> Iterator[pa.RecordBatch]:
    analyzer = SpecAnalyzer(spec)
    acc = analyzer.create()
    for batch in batches:
        acc = analyzer.add_batch(acc, train_rows(batch, spec.key, splits))
    yield pa.RecordBatch.from_arrays([pa.array([encode_accumulator(acc)], pa.binary())],
                                     schema=_ACC_SCHEMA)


def analyze(df, spec: FeatureSpec, splits: dict[str, float]) -> Artifacts:
    """One full pass over the train split of ``df``: the spec's artifacts.

    Only :func:`analysis_columns` are read. Each partition yields one accumulator as JSON
    (:mod:`features.accumulators`: counts, sketches, moments; never a pickle, so nothing a
    worker sends can run code on the driver); the driver checks, merges them in partition
    order and extracts.
    """
    analyzer = SpecAnalyzer(spec)
    task = functools.partial(_analyze_partition, spec=spec, splits=dict(splits))
    rows = df.select(*analysis_columns(spec)).mapInArrow(task, "accumulator binary").collect()
    return analyzer.extract(analyzer.merge(
        decode_accumulator(row.accumulator, analyzer, source=f"partition {i} accumulator")
        for i, row in enumerate(rows)))


def _route_partition(batches: Iterator[pa.RecordBatch], *, spec: FeatureSpec, plan: ShardPlan,
                     artifacts) -> Iterator[pa.RecordBatch]:
    value = artifacts.value
    statistics = SpecStatistics(spec, list(plan.shards))
    counted = []
    for batch in batches:
        routed = route(batch, spec, value, plan, statistics)
        if routed.statistics is not None:
            counted.append(routed.statistics)
        if routed.payload.num_rows:
            yield routed.payload
        if routed.quarantined is not None:
            yield pa.RecordBatch.from_arrays(
                [pa.array([QUARANTINE], pa.int32()), pa.array([""]),
                 pa.array([to_ipc(routed.quarantined)], pa.binary())], schema=PAYLOAD_SCHEMA)
    if counted:  # the partition's statistics, one row for the driver
        yield pa.RecordBatch.from_arrays(
            [pa.array([STATISTICS], pa.int32()), pa.array([""]),
             pa.array([statistics.to_json(statistics.merge(counted))], pa.binary())],
            schema=PAYLOAD_SCHEMA)


def _runs(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """``(gid, slice)`` for each run of equal gids in batches sorted by gid."""
    for batch in batches:
        if not batch.num_rows:
            continue
        gids = batch.column("gid").to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.diff(gids, prepend=gids[0] - 1))
        ends = np.append(starts[1:], len(gids))
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            yield int(gids[start]), batch.slice(start, end - start)


def _write_partition(batches: Iterator[pa.RecordBatch], *, spec: FeatureSpec, plan: ShardPlan,
                     artifacts, staging_uri: str) -> Iterator[pa.RecordBatch]:
    results = []
    # groupby hands each gid's slices over lazily; every group is consumed before the next.
    for gid, group in itertools.groupby(_runs(batches), key=lambda run: run[0]):
        slices = (piece for _, piece in group)
        if gid == STATISTICS:
            results.append(statistics_result(SpecStatistics(spec, list(plan.shards)), [
                p for piece in slices for p in piece.column("payload").to_pylist()]))
        elif gid == QUARANTINE:
            tables = [from_ipc(p) for piece in slices for p in piece.column("payload").to_pylist()]
            results += write_quarantine(tables=tables, gid=gid, staging_uri=staging_uri,
                                        key=spec.key)
        else:
            results += write_group(gid=gid, batches=slices, staging_uri=staging_uri, plan=plan,
                                   spec=spec, artifacts=artifacts.value)
    if results:
        yield pa.RecordBatch.from_pylist(results, schema=_RESULT_SCHEMA)


def build_encode(df, *, spec: FeatureSpec, plan: ShardPlan, artifacts, staging_uri: str,
                 partitions: int | None = None):
    """The DataFrame of result rows (one per file written into ``staging_uri``).

    Args:
        df: the input rows (at least :func:`input_columns`).
        artifacts: a Spark broadcast of the :class:`~features.artifacts.Artifacts`.
        partitions: write tasks (default: one per shard, plus one for the quarantine);
            Spark hashes gids onto them, so a task may write several shards.
    """
    payload = df.mapInArrow(functools.partial(_route_partition, spec=spec, plan=plan,
                                              artifacts=artifacts), PAYLOAD_DDL)
    ordered = payload.repartition(partitions or plan.total + 1, "gid").sortWithinPartitions(
        "gid", "key", "payload")
    return ordered.mapInArrow(functools.partial(_write_partition, spec=spec, plan=plan,
                                                artifacts=artifacts, staging_uri=staging_uri),
                              RESULT_DDL)


def run_encode(spark, *, lake, inputs: list[str], spec: FeatureSpec, dataset: str, version: str,
               splits: dict[str, float], shards: dict[str, int], config: dict | None = None,
               partitions: int | None = None, statistics: bool = True) -> EncodeResult:
    """Analyze and encode Parquet ``inputs`` (globs) and commit ``lake.records(dataset, version)``.

    ``statistics=False`` skips the statistics (see :class:`~pipelines.encode.shards.ShardPlan`).

    Raises:
        FileNotFoundError: an input glob matches no file.
        ValueError: a bad value under ``on_error: raise``; the message is the worker's
            (feature, column, row and key).
        ReconciliationError: rows in != rows encoded + rows quarantined; nothing committed.
    """
    from records.writer import staging_uri_for

    plan = ShardPlan(dict(splits), dict(shards), statistics)
    rows_in = count_rows(inputs)
    df = spark.read.parquet(*inputs).select(*input_columns(spec))
    staging = staging_uri_for(lake.records(dataset, version))
    broadcast = None
    try:
        artifacts = _worker_errors(lambda: analyze(df, spec, plan.splits))
        broadcast = spark.sparkContext.broadcast(artifacts)
        frame = build_encode(df, spec=spec, plan=plan, artifacts=broadcast, staging_uri=staging,
                             partitions=partitions)
        results = [row.asDict() for row in _worker_errors(frame.collect)]
        return commit_encoded(lake=lake, staging_uri=staging, plan=plan, results=results,
                              rows_in=rows_in, spec=spec, artifacts=artifacts, dataset=dataset,
                              version=version, config=config, inputs=inputs)
    except BaseException:
        discard(staging)  # nothing of a failed run may stay behind
        raise
    finally:
        if broadcast is not None:
            broadcast.unpersist()


def _worker_errors(action):
    """Run a Spark action; a worker's ``ValueError`` (a bad row) comes back as a ValueError.

    Spark wraps it in a ``PythonException`` whose text is the worker's traceback; its last
    ``ValueError:`` line names the feature, column, row and key.
    """
    from pyspark.errors import PythonException

    try:
        return action()
    except PythonException as exc:
        lines = [line for line in str(exc).splitlines() if line.startswith("ValueError: ")]
        if lines:
            raise ValueError(lines[-1][len("ValueError: "):]) from exc
        raise
