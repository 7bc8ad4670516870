"""Spark settings sized from the input: shuffle partitions, AQE, Arrow batches, executor memory.

``shardforge submit spark JOB --profile yarn|standalone`` measures what the job reads
(:func:`job_inputs`, :func:`measure`: bytes on disk, and for Parquet the rows and the
uncompressed bytes its footers record) and turns it, with the executors the profile has
(:class:`Resources`), into Spark settings (:func:`size_spark`). What the config sets
explicitly (``spark.conf``, ``spark.yarn.executor_memory``, ``spark.standalone.executor_memory``)
always wins; ``spark.sizing.enabled: false`` turns the sizing off. The local profile and
in-process runs size by cores instead (``pipelines.spark.session``).

The rules, each with the constant it uses (docs/SCALING.md applies them to 1B posts a day):

* **work** = the input's uncompressed bytes (text: its size on disk; Parquet: the row
  groups' ``total_byte_size``).
* **shuffle partitions** = ``work / partition_mb`` (128 MiB: the size Spark's own readers
  split at), at least 2 per core so a slow task never idles the others, rounded up to a
  whole number of waves over the cores, at most :data:`MAX_PARTITIONS`.
* **AQE** on, coalescing small shuffle partitions up to the advisory size ``work /
  partitions`` (1 MiB .. ``partition_mb``) with ``parallelismFirst`` off: on a shared
  cluster the advisory size, not the idle cores, decides (Spark's tuning guide).
* **input splits**: ``files.maxPartitionBytes`` the same per-task size, and at least 2 splits
  per core (``files.minPartitionNum``): raw feed dumps are many small files.
* **Arrow batches** of the ``mapInArrow`` passes: 1/8 of a task's share of the work
  (1 .. 16 MiB), as records of the input's average row (:data:`DEFAULT_ROW_BYTES` for
  text, whose rows are unknown until parsed), 1,000 .. 50,000 records, and the bytes capped
  at twice the target for wide rows.
* **executor heap** = Spark's reserved 300 MiB + each core's task share x
  :data:`ROW_EXPANSION` / ``spark.memory.fraction`` (0.6), rounded up to 256 MiB, 512 MiB
  (Spark's floor is 450 MiB) .. the cap (``spark.sizing.max_executor_memory``, and on a
  standalone cluster what one worker offers).
* **memory overhead** (YARN's container limit; off-heap: the Python workers and their Arrow
  batches) = cores x (:data:`PYTHON_WORKER_MIB` + 4 batches), at least 384 MiB and 10% of
  the heap (YARN's own default rule).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_ROW_BYTES",
    "MAX_PARTITIONS",
    "PYTHON_WORKER_MIB",
    "ROW_EXPANSION",
    "InputSize",
    "Resources",
    "SparkSizing",
    "format_mib",
    "job_inputs",
    "measure",
    "parse_mib",
    "size_spark",
]

MiB = 1024 * 1024
MAX_PARTITIONS = 20_000  # beyond, the driver's map-status bookkeeping grows; raise partition_mb
# A post with its page lines is ~230 B in the sample-like corpora (BENCHMARKS.md, 1M posts:
# 230 MB of feed dumps); rows of raw text are unknown until ingest parses them.
DEFAULT_ROW_BYTES = 256
# Bytes a running task holds per byte of its input: the row as UnsafeRow, its Arrow copy on
# the way to Python, and the rows coming back (the clean job keeps text + normalized text).
ROW_EXPANSION = 3.0
RESERVED_MIB = 300  # Spark's reserved system memory per executor
MEMORY_FRACTION = 0.6  # spark.memory.fraction: execution + storage share of the rest
# RSS of one PySpark Python worker with pyarrow, numpy, pandas and numba loaded.
PYTHON_WORKER_MIB = 300
MIN_EXECUTOR_MIB = 512
_MEMORY = re.compile(r"^([1-9]\d*)([kmgt])$", re.IGNORECASE)
_UNIT_MIB = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
_FOOTERS = 64  # Parquet footers read per input; more files are extrapolated by bytes


def parse_mib(size: str) -> int:
    """A JVM memory size (``512m``, ``2g``) in MiB.

    Raises:
        ValueError: not a number with a k/m/g/t unit.
    """
    match = _MEMORY.match(size.strip())
    if not match:
        raise ValueError(f"expected a JVM memory size like 512m or 2g, got {size!r}")
    return max(1, int(int(match.group(1)) * _UNIT_MIB[match.group(2).lower()]))


def format_mib(mib: int) -> str:
    """MiB as a JVM size: ``2g`` when whole GiB, else ``1536m``."""
    return f"{mib // 1024}g" if mib % 1024 == 0 else f"{mib}m"


@dataclass(frozen=True)
class InputSize:
    """What a job reads.

    Attributes:
        bytes: on disk.
        uncompressed_bytes: in memory before expansion (text: ``bytes``; Parquet: footers).
        rows: Parquet rows (extrapolated past :data:`_FOOTERS` files); None for text.
        files: data files (names starting ``_`` or ``.`` are not data).
    """

    bytes: int
    uncompressed_bytes: int
    rows: int | None
    files: int

    @property
    def row_bytes(self) -> float:
        """Average uncompressed bytes per row (:data:`DEFAULT_ROW_BYTES` when rows are unknown)."""
        return self.uncompressed_bytes / self.rows if self.rows else float(DEFAULT_ROW_BYTES)


@dataclass(frozen=True)
class Resources:
    """The executors a profile runs on, and the most heap one may ask for."""

    executors: int
    executor_cores: int
    max_executor_mib: int

    @property
    def cores(self) -> int:
        return self.executors * self.executor_cores


@dataclass(frozen=True)
class SparkSizing:
    """Spark settings for one job on one input (:func:`size_spark`)."""

    input: InputSize
    resources: Resources
    shuffle_partitions: int
    split_bytes: int  # a task's share: files.maxPartitionBytes and AQE's advisory size
    arrow_records: int
    arrow_bytes: int
    executor_mib: int
    overhead_mib: int

    def conf(self) -> dict[str, str]:
        """The sized Spark conf (executor memory is a flag of its profile, not in here)."""
        return {
            "spark.sql.shuffle.partitions": str(self.shuffle_partitions),
            "spark.sql.adaptive.enabled": "true",
            "spark.sql.adaptive.coalescePartitions.enabled": "true",
            "spark.sql.adaptive.coalescePartitions.parallelismFirst": "false",
            "spark.sql.adaptive.advisoryPartitionSizeInBytes": str(self.split_bytes),
            "spark.sql.adaptive.skewJoin.enabled": "true",
            "spark.sql.files.maxPartitionBytes": str(self.split_bytes),
            "spark.sql.files.minPartitionNum": str(2 * self.resources.cores),
            "spark.sql.execution.arrow.maxRecordsPerBatch": str(self.arrow_records),
            "spark.sql.execution.arrow.maxBytesPerBatch": str(self.arrow_bytes),
        }

    def describe(self) -> str:
        """One line: the input and what it was sized into."""
        rows = f", {self.input.rows:,} rows" if self.input.rows is not None else ""
        return (f"sized from {self.input.uncompressed_bytes / MiB:,.1f} MiB of input "
                f"({self.input.files} files{rows}) on {self.resources.cores} cores: "
                f"{self.shuffle_partitions} shuffle partitions, {self.split_bytes / MiB:.1f} MiB "
                f"per task, Arrow batches of {self.arrow_records:,} rows, executors "
                f"{format_mib(self.executor_mib)} + {format_mib(self.overhead_mib)} overhead")


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def size_spark(size: InputSize, resources: Resources, *, partition_mb: int = 128) -> SparkSizing:
    """Spark settings for ``size`` on ``resources`` (the rules in the module docstring).

    Raises:
        ValueError: no cores, or a partition size below 1 MiB.
    """
    if resources.cores < 1 or resources.executor_cores < 1:
        raise ValueError(f"sizing needs at least one core, got {resources}")
    if partition_mb < 1:
        raise ValueError(f"partition_mb must be >= 1, got {partition_mb}")
    cores, target = resources.cores, partition_mb * MiB
    work = max(size.uncompressed_bytes, 1)
    partitions = max(math.ceil(work / target), 2 * cores)
    partitions = min(_round_up(partitions, cores), max(MAX_PARTITIONS, 2 * cores))
    split = min(max(_round_up(work / partitions, MiB), MiB), target)
    batch_bytes = min(max(split // 8, MiB), 16 * MiB)
    records = min(max(int(batch_bytes / max(size.row_bytes, 1.0)), 1_000), 50_000)
    records = _round_up(records, 1_000)
    heap = RESERVED_MIB + resources.executor_cores * split * ROW_EXPANSION / MEMORY_FRACTION / MiB
    heap = min(max(_round_up(heap, 256), MIN_EXECUTOR_MIB), max(resources.max_executor_mib,
                                                                  MIN_EXECUTOR_MIB))
    overhead = resources.executor_cores * (PYTHON_WORKER_MIB + 4 * batch_bytes / MiB)
    overhead = _round_up(max(overhead, 384, 0.1 * heap), 128)
    return SparkSizing(size, resources, partitions, split, records, 2 * batch_bytes, heap, overhead)


def job_inputs(cfg, lake, job: str, dts: list[str] | None = None) -> list[str]:
    """The lake folders ``job`` reads (those that exist), for the dts it would process.

    ``ingest`` reads the raw corpora; ``explode_clean`` the ingested ``raw_feeds`` and
    ``raw_articles`` partitions (their raw corpora when not ingested yet); ``encode`` the
    ``documents`` table; ``encode_images`` the ``clean_images`` partitions.

    Raises:
        ValueError: an unknown job.
    """
    from shardforge import stages

    db = cfg.spark.database

    def dts_of(corpus: str) -> list[str]:
        return list(dts) if dts else stages.corpus_partitions(cfg, lake, corpus)

    corpora = [c for c in ("feeds", "articles") if c in cfg.corpora]
    raw = [lake.raw(corpus, dt) for corpus in corpora for dt in dts_of(corpus)]
    if job == "ingest":
        found = raw
    elif job == "explode_clean":
        tables = {"feeds": "raw_feeds", "articles": "raw_articles"}
        found = [lake.table(db, tables[c], dt) for c in corpora for dt in dts_of(c)]
        found = found if any(_exists(lake, uri) for uri in found) else raw
    elif job == "encode":
        found = [lake.table(db, "documents")]
    elif job == "encode_images":
        found = [lake.table(db, "clean_images", dt) for dt in dts_of(cfg.images.corpus)]
    else:
        raise ValueError(f"no inputs known for Spark job {job!r}")
    return [uri for uri in found if _exists(lake, uri)]


def _exists(lake, uri: str) -> bool:
    return lake.fs.exists(lake.fs_path(uri))


def measure(lake, uris: list[str]) -> InputSize:
    """Bytes, files and (for Parquet) rows and uncompressed bytes under ``uris``.

    Reads at most :data:`_FOOTERS` Parquet footers per call and extrapolates the rest by
    their bytes on disk.
    """
    import pyarrow.parquet as pq

    files: list[tuple[str, int]] = []
    for uri in uris:
        base = lake.fs_path(uri).rstrip("/")
        for path, info in sorted(lake.fs.find(base, detail=True).items()):
            hidden = any(part.startswith(("_", ".")) for part in path[len(base):].split("/"))
            if info.get("type") == "file" and not hidden:  # _SUCCESS, _staging-*, .crc
                files.append((path, int(info["size"])))
    total = sum(size for _, size in files)
    parquet = [(path, size) for path, size in files if path.endswith(".parquet")]
    if not parquet:
        return InputSize(total, total, None, len(files))
    sampled_bytes = sampled_rows = sampled_raw = 0
    for path, size in parquet[:_FOOTERS]:
        with lake.fs.open(path, "rb") as handle:
            meta = pq.ParquetFile(handle).metadata
        sampled_rows += meta.num_rows
        sampled_raw += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        sampled_bytes += size
    scale = sum(size for _, size in parquet) / max(sampled_bytes, 1)
    other = total - sum(size for _, size in parquet)
    return InputSize(total, int(sampled_raw * scale) + other, int(sampled_rows * scale), len(files))
