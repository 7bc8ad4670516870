"""Beam pipeline: raw labelled images → decoded, validated, resized, deduplicated clean_images.

Input: one corpus partition ``raw/<corpus>/dt=…/`` holding image files (PNG, JPEG, any
format Pillow reads), optional masks (mode ``"L"`` PNGs: 0 background, ``1..K`` class
id) and a manifest (``manifest.jsonl`` or ``.csv``: image, label, mask) naming them, as
``shardforge/sample_images.py`` writes it. Outputs, Hive-style partitions of the lake's
warehouse (:meth:`core.lake.Lake.table`; ``dt`` is in the folder, not the files)::

    <db>.db/clean_images/dt=…/part-00000-of-00001.parquet    one row per kept image
                         dt=…/_reconcile.json, _SUCCESS       the row accounting
    <db>.db/image_quarantine/dt=…/part-…parquet               one row per rejected row
    <db>.db/image_duplicates/dt=…/part-…parquet               one row per dropped copy

Every manifest row ends in exactly one of them, and :func:`run_images` fails with
:class:`~core.accounting.ReconciliationError` (committing nothing) when rows in
!= out + quarantined + duplicates. ``image`` holds the resized pixels as raw uint8 HWC
bytes (``np.frombuffer(image, np.uint8).reshape(height, width, channels)``), ``mask``
the resized class ids as HW bytes (resized with NEAREST, so ids are never blended), and
``boxes`` / ``box_labels`` one ``x0, y0, x1, y1`` box (x1/y1 exclusive, stored pixels) and
class id per connected component of each class of that stored mask
(:mod:`.image_boxes`), null where there is no mask.

The shape of Beam's own examples: :func:`build_clean_images` is the pure transform
(PCollection of sources → :class:`CleanedImages`), :func:`run_images` and :func:`run`
only read, write and commit. Steps, all labelled:
``ParseManifest → ReadImageBytes → DecodeAndValidate`` (rules in :mod:`.image_ops`:
missing/empty file, undecodable, size and aspect bounds, mode not in ``allowed_modes``,
truncated pixel data, unknown label, bad mask → quarantine with a reason code and a
detail; an allowed mode is converted to RGB, then resized per ``images.fit``)
``→ exact and near dedup`` (:mod:`.image_dedup`: content sha256, then perceptual hash
bands) ``→ Write*Parts`` (:mod:`.image_io`: stable shards, sorted rows, staged, committed
atomically). The same input gives the same rows and the same bytes on any runner.

Grayscale and other modes: the issue asks "wrong mode → quarantine"; the default
``allowed_modes: [RGB]`` quarantines a grayscale (``"L"``) image as ``mode-not-allowed``
instead of silently turning it into an R=G=B image. List ``L``, ``P`` or ``RGBA`` in
``images.allowed_modes`` to convert those to RGB instead (alpha is dropped).

Running elsewhere (``beam.runner`` and ``beam.options`` of the config, or ``--runner`` and
any ``--flag=value`` to :func:`run`, which passes unknown flags on as pipeline options):

- **DirectRunner / Prism** (``PrismRunner``): the default, on this machine.
- **Flink**: ``--runner=FlinkRunner --flink_master=host:8081 --environment_type=DOCKER
  --sdk_container_image=<image with shardforge[beam]>`` (or ``PROCESS``/``LOOPBACK``).
- **Spark**: ``--runner=SparkRunner --spark_master_url=spark://host:7077`` (portable job
  server) or ``--spark_submit_uber_jar`` against a YARN-deployed Spark.
- **Dataflow**: ``--runner=DataflowRunner --project=… --region=… --temp_location=gs://…
  --sdk_container_image=…``. Its workers must reach the lake: the layout accepts only
  ``file://`` and ``hdfs://`` roots today, so that means an HDFS reachable from the VPC.
- **hdfs://** lakes: manifests, images and outputs go through fsspec (pyarrow's libhdfs),
  on the driver and on every worker, so each worker host needs a Hadoop client
  (``HADOOP_HOME``, ``CLASSPATH=$(hadoop classpath --glob)``, ``ARROW_LIBHDFS_DIR``), as
  Flink and Spark on YARN nodes have. Beam's own WebHDFS filesystem is not used.

The manifest is parsed by one worker and its entries are reshuffled across all of them,
so no corpus data passes through the job graph (Dataflow caps it).
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any, NamedTuple

from core.accounting import JobCounts
from core.config import ImagesConfig, ShardforgeConfig
from core.engines import require
from core.lake import Lake
from pipelines.beam.image_dedup import KINDS, deduplicate
from pipelines.beam.image_io import (
    TABLES,
    column_counts,
    commit_partition,
    fill_empty_parts,
    remove,
    shard_of,
    write_json,
    write_part,
)
from pipelines.beam.image_manifest import count_manifest_rows, manifest_entries, read_source
from pipelines.beam.image_ops import clean_image
from pipelines.beam.launch import parse_launch_args, pipeline_options

__all__ = ["JOB", "CleanedImages", "build_clean_images", "read_sources", "run", "run_images"]

JOB = "clean_images"  # the job name in counts and job_runs, like the Spark clean jobs
IMAGES, QUARANTINE = "images", "quarantine"
RECONCILE_FILE = "_reconcile.json"


class CleanedImages(NamedTuple):
    """The three outputs of :func:`build_clean_images` (PCollections of row dicts)."""

    images: Any      # clean_images rows, unique by content and by perceptual hash
    quarantine: Any  # image_quarantine rows, one reason each
    duplicates: Any  # image_duplicates rows (kind exact | near), naming the kept copy


def read_sources(pipeline, manifest_uri: str):
    """Manifest rows of one partition with their image and mask bytes, as a PCollection."""
    import apache_beam as beam

    return (
        pipeline
        | "ListManifest" >> beam.Create([manifest_uri])
        | "ParseManifest" >> beam.FlatMap(manifest_entries)
        | "SpreadEntries" >> beam.Reshuffle()  # one worker parsed; all of them decode
        | "ReadImageBytes" >> beam.Map(read_source)
    )


def _route(source: dict, rules: ImagesConfig):
    import apache_beam as beam

    kind, row = clean_image(source, rules)
    yield row if kind == "image" else beam.pvalue.TaggedOutput(QUARANTINE, row)


def build_clean_images(sources, *, rules: ImagesConfig) -> CleanedImages:
    """Decode, validate, resize and deduplicate a PCollection of sources.

    Args:
        sources: dicts as :func:`pipelines.beam.image_manifest.read_source` makes them.
        rules: the ``images`` config section.

    Returns:
        :class:`CleanedImages`; every source lands in exactly one of its PCollections.
    """
    import apache_beam as beam

    decoded = sources | "DecodeAndValidate" >> beam.FlatMap(_route, rules).with_outputs(
        QUARANTINE, main=IMAGES)
    kept, duplicates = deduplicate(decoded[IMAGES], max_distance=rules.phash_max_distance)
    return CleanedImages(kept, decoded[QUARANTINE], duplicates)


def _write(rows, *, name: str, table: str, staging_uri: str, shards: int):
    import apache_beam as beam

    key = TABLES[table][1]
    return (
        rows
        | f"Key{name}ByShard" >> beam.Map(
            lambda row: (shard_of(tuple(row[k] for k in key), shards), row))
        | f"Group{name}ByShard" >> beam.GroupByKey()
        | f"Write{name}Parts" >> beam.Map(write_part, staging_uri=staging_uri, table=table,
                                          total=shards)
    )


def run_images(cfg: ShardforgeConfig, dt: str, *, runner: str | None = None,
               options: dict | None = None) -> JobCounts:
    """Clean one dt partition of the image corpus into ``clean_images`` (+ quarantine, duplicates).

    Runs the pipeline on ``runner`` (default ``cfg.beam.runner``) with ``cfg.beam.options``
    updated by ``options``, checks the counts, writes ``_reconcile.json`` and commits the
    three partitions (``clean_images`` last, so its ``_SUCCESS`` marks the whole run).

    Returns:
        The checked counts (job ``clean_images``; duplicates by kind exact / near).

    Raises:
        FileNotFoundError: the partition has no manifest.
        ValueError: the manifest as a whole is unusable (not UTF-8, CSV header lacks a field).
        ReconciliationError: rows in != out + quarantined + duplicates; nothing is committed.
        MissingEngineError: apache-beam or imagehash is not installed.
    """
    beam = require("apache_beam", for_what="the Beam image pipeline")
    require("imagehash", for_what="near-duplicate detection of the Beam image pipeline")
    rules, lake, db = cfg.images, Lake(cfg.lake.root), cfg.spark.database
    manifest_uri = f"{lake.raw(rules.corpus, dt)}/{rules.manifest}"
    if not lake.fs.exists(lake.fs_path(manifest_uri)):
        raise FileNotFoundError(f"image manifest {manifest_uri} does not exist")
    rows_in = count_manifest_rows(manifest_uri)
    token = uuid.uuid4().hex
    staging = {table: lake.table_staging(db, table, dt, token) for table in TABLES}
    shards = {"clean_images": rules.output_shards, "image_quarantine": 1, "image_duplicates": 1}
    try:
        with beam.Pipeline(options=pipeline_options(runner or cfg.beam.runner,
                                                     {**cfg.beam.options, **(options or {})})) as p:
            cleaned = build_clean_images(read_sources(p, manifest_uri), rules=rules)
            for name, table, rows in (("CleanImages", "clean_images", cleaned.images),
                                      ("Quarantine", "image_quarantine", cleaned.quarantine),
                                      ("Duplicates", "image_duplicates", cleaned.duplicates)):
                _write(rows, name=name, table=table, staging_uri=staging[table],
                       shards=shards[table])
        for table, uri in staging.items():
            fill_empty_parts(uri, table, shards[table])
        rows_out, _ = column_counts(staging["clean_images"])
        quarantined, by_reason = column_counts(staging["image_quarantine"], "reason")
        duplicates, by_kind = column_counts(staging["image_duplicates"], "kind")
        counts = JobCounts(JOB, dt, rows_in=rows_in, rows_out=rows_out, quarantined=quarantined,
                           duplicates_dropped=duplicates,
                           duplicates_by_kind={k: by_kind.get(k, 0) for k in KINDS}).check()
        write_json(f"{staging['clean_images']}/{RECONCILE_FILE}", {
            **counts.as_dict(), "quarantined_by_reason": by_reason,
            "inputs": {"manifest": manifest_uri},
            "outputs": {table: lake.table(db, table, dt) for table in TABLES},
            "images": rules.model_dump(mode="json")})
        for table in ("image_quarantine", "image_duplicates", "clean_images"):
            commit_partition(staging_uri=staging[table], final_uri=lake.table(db, table, dt),
                             old_uri=lake.table_staging(db, table, dt, f"old-{token}"))
    except BaseException:
        # Nothing of a failed run may stay behind, not even under the staging names.
        for uri in staging.values():
            remove(uri)
        raise
    return counts


def run(argv: list[str] | None = None) -> list[JobCounts]:
    """Command-line entry for launchers that run a pipeline module (Airflow's Beam operator).

    ``--config FILE --lake URI --dt D [--dt D2] --runner R``; unknown ``--key=value`` flags
    are passed on as Beam pipeline options (``--flink_master=host:8081``). Without ``--dt``:
    the corpus's configured partitions, else every one present. Prints one JSON line.
    """
    from core.config import load_config

    args = parse_launch_args(argv, description=__doc__.splitlines()[0])
    cfg = load_config(args.config, lake_root=args.lake)
    corpus = cfg.corpora.get(cfg.images.corpus)
    dts = args.dt or (corpus.dt if corpus and corpus.dt else
                       Lake(cfg.lake.root).raw_partitions(cfg.images.corpus))
    counts = [run_images(cfg, dt, runner=args.runner, options=args.options) for dt in sorted(dts)]
    print(json.dumps({"job": JOB, "counts": [c.as_dict() for c in counts]}), file=sys.stdout)
    return counts


if __name__ == "__main__":
    run()
