"""The Beam functions of the encode pipeline: the analyze ``CombineFn`` and the batched DoFns.

Imported by :mod:`pipelines.beam.encode` once Beam is known to be installed. Each is a thin
adapter: the feature logic is :class:`features.analyzers.SpecAnalyzer` and the shard logic
:mod:`pipelines.encode.shards`, the same code the Spark job runs.
"""

from __future__ import annotations

import json

import apache_beam as beam
import pyarrow as pa

from features.analyzers import SpecAnalyzer
from features.artifacts import Artifacts
from features.spec import FeatureSpec
from features.statistics import SpecStatistics
from pipelines.encode.shards import (
    QUARANTINE,
    ShardPlan,
    route,
    split_by_gid,
    statistics_result,
    train_rows,
    write_group,
    write_quarantine,
)

__all__ = ["QUARANTINE_TAG", "STATISTICS_TAG", "AnalyzeFn", "EncodeBatchesFn", "StatisticsFn",
           "write_quarantine_group", "write_shard_group"]

QUARANTINE_TAG = "quarantine"
STATISTICS_TAG = "statistics"
BATCH_ROWS = 8192  # rows per encode call: big enough that Arrow's per-call costs vanish


def _batches(table: pa.Table | pa.RecordBatch):
    if isinstance(table, pa.RecordBatch):
        yield table
    else:
        yield from table.to_batches(max_chunksize=BATCH_ROWS)


class AnalyzeFn(beam.CombineFn):
    """:class:`~features.analyzers.SpecAnalyzer` as a ``CombineFn`` over Arrow tables.

    Inputs are tables (one per Parquet row group); only train rows are analyzed, as in
    tf.Transform. The accumulator is the analyzer's plain, picklable dict.
    """

    def __init__(self, spec: FeatureSpec, splits: dict[str, float], split: str = "train") -> None:
        self.analyzer = SpecAnalyzer(spec)
        self.key, self.splits, self.split = spec.key, dict(splits), split

    def create_accumulator(self) -> dict:
        return self.analyzer.create()

    def add_input(self, accumulator: dict, table) -> dict:
        for batch in _batches(table):
            accumulator = self.analyzer.add_batch(
                accumulator, train_rows(batch, self.key, self.splits, self.split))
        return accumulator

    def merge_accumulators(self, accumulators) -> dict:
        return self.analyzer.merge(accumulators)

    def extract_output(self, accumulator: dict) -> Artifacts:
        return self.analyzer.extract(accumulator)


class EncodeBatchesFn(beam.DoFn):
    """Route each input table's batches (:func:`pipelines.encode.shards.route`).

    Main output: ``(gid, payload batch)``, one element per shard a batch touches (not one
    per row: the shuffle moves Arrow batches). Tagged ``quarantine``: quarantined batches;
    tagged ``statistics``: each batch's statistics accumulator, as JSON. The artifacts arrive
    as a singleton side input.
    """

    def __init__(self, spec: FeatureSpec, plan: ShardPlan) -> None:
        self.spec, self.plan = spec, plan
        self.statistics = SpecStatistics(spec, list(plan.shards))

    def process(self, table, artifacts: Artifacts):
        for batch in _batches(table):
            routed = route(batch, self.spec, artifacts, self.plan, self.statistics)
            if routed.statistics is not None:
                yield beam.pvalue.TaggedOutput(STATISTICS_TAG,
                                               self.statistics.to_json(routed.statistics))
            yield from split_by_gid(routed.payload)
            if routed.quarantined is not None:
                yield beam.pvalue.TaggedOutput(QUARANTINE_TAG, routed.quarantined)


class StatisticsFn(beam.CombineFn):
    """JSON statistics accumulators → one ``kind: statistics`` result line (JSON)."""

    def __init__(self, spec: FeatureSpec, plan: ShardPlan) -> None:
        self.statistics = SpecStatistics(spec, list(plan.shards))

    def create_accumulator(self) -> list[bytes]:
        return []

    def add_input(self, accumulator: list[bytes], data: bytes) -> list[bytes]:
        # Merged every 64 inputs: a bundle's JSON never piles up.
        accumulator.append(data)
        return accumulator if len(accumulator) < 64 else self.merge_accumulators([accumulator])

    def merge_accumulators(self, accumulators) -> list[bytes]:
        parts = [data for acc in accumulators for data in acc]
        merged = self.statistics.merge(self.statistics.from_json(p) for p in parts)
        return [self.statistics.to_json(merged)]

    def extract_output(self, accumulator: list[bytes]) -> str:
        return json.dumps(statistics_result(self.statistics, accumulator), sort_keys=True)


def write_shard_group(element, artifacts: Artifacts, *, spec: FeatureSpec, plan: ShardPlan,
                      staging_uri: str):
    """Write one shard from its grouped payload batches; yields JSON result lines."""
    gid, batches = element
    ordered = pa.Table.from_batches(list(batches), schema=None).sort_by(
        [("key", "ascending"), ("payload", "ascending")])
    for result in write_group(gid=gid, batches=ordered.to_batches(), staging_uri=staging_uri,
                              plan=plan, spec=spec, artifacts=artifacts):
        yield json.dumps(result, sort_keys=True)


def write_quarantine_group(element, *, key: str, staging_uri: str):
    """Write every quarantined batch as one Parquet part; yields its JSON result line."""
    _, batches = element
    tables = [pa.Table.from_batches([b]) for b in batches]
    for result in write_quarantine(tables=tables, gid=QUARANTINE, staging_uri=staging_uri, key=key):
        yield json.dumps(result, sort_keys=True)
