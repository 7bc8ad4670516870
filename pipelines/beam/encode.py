"""Beam pipeline: clean rows (Parquet) → feature transform → tf.Example TFRecord shards.

The shape of Beam's own examples: ``build_encode`` is the pure transform over
PCollections, ``run_encode``/``run(argv)`` only read, write and commit.

Each shard is written by one worker from one group: rows are keyed by the stable
(split, shard) of their key column, grouped, sorted by key and written with
``records.writer.write_shard``, which also writes the ``.idx``. Every worker
writes only under a staging folder, plus one small JSON sidecar per shard with its
counts and checksum; the driver then turns the sidecars into the manifest and
commits the whole version atomically. The same input gives the same bytes,
whatever the runner, worker count or input order.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from features.spec import FeatureSpec
from features.split import assign
from shardforge.engines import require

__all__ = ["EncodeResult", "build_encode", "run", "run_encode"]


@dataclass(frozen=True)
class EncodeResult:
    uri: str                 # the committed dataset version
    rows_in: int
    records: dict[str, int]  # split -> records written
    shards: dict[str, int]   # split -> shard files


def _shard_file(split: str, index: int, total: int) -> str:
    from records.writer import shard_name

    return f"split={split}/{shard_name(index, total, None)}"


def build_encode(tables, *, spec: FeatureSpec, splits: dict[str, float], shards: dict[str, int],
                 staging_uri: str):
    """Encode a PCollection of ``pyarrow.Table`` chunks into staged shards.

    Returns:
        A PCollection of one JSON line per written shard (its ``ShardInfo``).
    """
    import apache_beam as beam

    from features.transform import encode_batch
    from records.writer import write_shard

    def encode(table):
        for batch in table.to_batches(max_chunksize=4096):
            for key, example in encode_batch(batch, spec):
                split, shard = assign(key, splits, shards)
                yield (split, shard), (key, example)

    def write(element):
        (split, shard), keyed = element
        relative = _shard_file(split, shard, shards[split])
        ordered = [example for _, example in sorted(keyed)]
        info = write_shard(path=f"{staging_uri}/{relative}", records=ordered, root=staging_uri)
        return json.dumps({"split": split, "shard": shard, **info.to_dict()})

    return (
        tables
        | "EncodeExamples" >> beam.FlatMap(encode)
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.Map(write)
    )


def _pipeline_options(runner: str, options: dict):
    from apache_beam.options.pipeline_options import PipelineOptions

    flags = [f"--runner={runner}"] + [f"--{k}={v}" for k, v in sorted(options.items())]
    return PipelineOptions(flags)


def run_encode(*, inputs: list[str], output_uri: str, spec: FeatureSpec, dataset: str, version: str,
               splits: dict[str, float], shards: dict[str, int], runner: str = "DirectRunner",
               options: dict | None = None, config: dict | None = None) -> EncodeResult:
    """Run the encode pipeline over Parquet ``inputs`` (globs) and commit ``output_uri``.

    Raises:
        MissingEngineError: apache-beam is not installed.
        ValueError: a bad value in the input (the message names feature, column and row).
    """
    beam = require("apache_beam", for_what="the Beam encode pipeline")

    from records.manifest import Manifest, ShardInfo, write_manifest
    from records.uri import resolve
    from records.writer import commit_staged, finalize_shards, staging_uri_for, write_shard

    staging = staging_uri_for(output_uri)
    sidecars = f"{staging}/_shards/part"
    columns = sorted({spec.key} | {f.source for f in spec.features.values()})
    fs, staging_path = resolve(staging)
    try:
        with beam.Pipeline(options=_pipeline_options(runner, options or {})) as pipeline:
            tables = (
                pipeline
                | "ListInputs" >> beam.Create([_beam_path(uri) for uri in inputs])
                | "ReadParquet" >> beam.io.ReadAllFromParquetBatched(columns=columns)
            )
            infos = build_encode(tables, spec=spec, splits=splits, shards=shards,
                                 staging_uri=staging)
            _ = infos | "WriteShardIndex" >> beam.io.WriteToText(sidecars,
                                                                 file_name_suffix=".jsonl")
        written: dict[tuple[str, int], ShardInfo] = {}
        for sidecar in sorted(fs.glob(f"{staging_path}/_shards/*.jsonl")):
            with fs.open(sidecar, "rt") as handle:
                for line in handle:
                    entry = json.loads(line)
                    written[(entry["split"], entry["shard"])] = ShardInfo.from_dict(entry)
        fs.rm(f"{staging_path}/_shards", recursive=True)
        # A shard no key hashed to still exists, empty, so part-i-of-N is always complete.
        for split, total in shards.items():
            for index in range(total):
                if (split, index) not in written:
                    written[(split, index)] = write_shard(
                        path=f"{staging}/{_shard_file(split, index, total)}", records=[],
                        root=staging)
        split_infos = finalize_shards(
            root_uri=staging,
            splits={s: [written[(s, i)] for i in range(n)] for s, n in shards.items()})
        rows_in = _count_rows(inputs)
        records = {split: info.records for split, info in split_infos.items()}
        if sum(records.values()) != rows_in:
            raise RuntimeError(
                f"encode: {rows_in} rows in but {sum(records.values())} records written")
        write_manifest(staging, Manifest(
            dataset=dataset, version=version, compression=None,
            feature_spec={k: v.to_dict() for k, v in spec.decode_spec().items()},
            splits=split_infos, config=config or {}, inputs=list(inputs)))
        commit_staged(staging_uri=staging, final_uri=output_uri)
    except BaseException:
        # Nothing of a failed run may stay behind, not even under the staging name.
        if fs.exists(staging_path):
            fs.rm(staging_path, recursive=True)
        raise
    return EncodeResult(output_uri, rows_in, records,
                        {s: len(i.shards) for s, i in split_infos.items()})


def _beam_path(uri: str) -> str:
    """Beam's local filesystem takes plain paths only; ``hdfs://`` and others pass through."""
    if uri.startswith("file:"):
        from records.uri import resolve

        return resolve(uri)[1]
    return uri


def _count_rows(patterns: list[str]) -> int:
    """Rows in the Parquet files the globs match (read from the footers only)."""
    import pyarrow.parquet as pq

    from records.uri import resolve

    total = 0
    for pattern in patterns:
        fs, path = resolve(pattern)
        for file in sorted(fs.glob(path)):
            with fs.open(file, "rb") as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
    return total


def run(argv: list[str] | None = None) -> EncodeResult:
    """Command-line entry for runners that launch a pipeline module (e.g. Airflow's Beam operator).

    Unknown flags are passed through as Beam pipeline options (``--runner=FlinkRunner
    --flink_master=host:8081``).
    """
    from features.spec import load_spec
    from shardforge.config import load_config
    from shardforge.lake import Lake

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--lake", default=None)
    parser.add_argument("--dt", action="append", default=[])
    parser.add_argument("--runner", default=None)
    known, passthrough = parser.parse_known_args(argv)
    cfg = load_config(known.config, lake_root=known.lake)
    lake = Lake(cfg.lake.root)
    options = dict(cfg.beam.options)
    for flag in passthrough:
        key, _, value = flag.lstrip("-").partition("=")
        options[key] = value
    dts = known.dt or lake.raw_partitions("feeds")
    return run_encode(
        inputs=[f"{lake.table(cfg.spark.database, 'clean_posts', dt)}/*.parquet" for dt in dts],
        output_uri=lake.records(cfg.dataset.name, cfg.dataset.version),
        spec=load_spec(cfg.resolve_path(cfg.feature_spec)),
        dataset=cfg.dataset.name, version=cfg.dataset.version,
        splits=dict(cfg.dataset.splits), shards=dict(cfg.dataset.shards),
        runner=known.runner or cfg.beam.runner, options=options,
        config=cfg.model_dump(mode="json"),
    )


if __name__ == "__main__":
    run()
