"""The image pipeline's outputs: Parquet schemas, deterministic part files, atomic commits.

Each output table partition (``<db>.db/<table>/dt=…``, Hive style: ``dt`` lives in the
folder name, not in the files, as in the Spark tables) is written like this:

1. Beam workers key rows by a stable shard (a hash of the sort key, never of the worker),
   group, sort inside the shard and write ``part-0000i-of-0000N.parquet`` into a staging
   folder ``<table>/_staging-dt=…-<token>`` (hidden from readers by its ``_``).
2. The driver writes an empty part for every shard no row hashed to, so ``part-i-of-N`` is
   always complete, then counts rows from the Parquet footers.
3. :func:`commit_partition` swaps the staging folder in for the partition and writes
   ``_SUCCESS``. A failed run removes its staging folders and leaves the old partition.

The same rows give the same bytes: fixed schema, fixed row order, fixed writer settings.
"""

from __future__ import annotations

import hashlib
import json
import posixpath

import pyarrow as pa
import pyarrow.parquet as pq

from records.faults import fault_point
from records.uri import join, resolve

__all__ = [
    "CLEAN_IMAGES_SCHEMA",
    "DUPLICATES_SCHEMA",
    "QUARANTINE_SCHEMA",
    "TABLES",
    "column_counts",
    "commit_partition",
    "fill_empty_parts",
    "part_name",
    "remove",
    "shard_of",
    "write_json",
    "write_part",
]

CLEAN_IMAGES_SCHEMA = pa.schema([
    ("image_id", pa.string()),          # first 16 hex digits of content_sha256
    ("source_path", pa.string()),
    ("manifest_line", pa.int32()),
    ("label", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("channels", pa.int32()),
    ("image", pa.binary()),             # uint8 (height, width, channels), row-major
    ("mask", pa.binary()),              # uint8 (height, width) class ids, or null
    # x0, y0, x1, y1 (x1/y1 exclusive, stored-image pixels) per connected component of
    # each mask class (image_boxes.mask_boxes), 4 values a box; null without a mask
    ("boxes", pa.list_(pa.int64())),
    ("box_labels", pa.list_(pa.int64())),  # the boxes' mask class ids (>= 1); null likewise
    ("content_sha256", pa.string()),    # of the decoded source pixels
    ("phash", pa.string()),             # 64-bit perceptual hash, 16 hex digits
    ("source_width", pa.int32()),
    ("source_height", pa.int32()),
    ("source_mode", pa.string()),
    ("source_bytes", pa.int64()),
])
# The Spark quarantine's columns (source, locator, reason, bytes, stage) plus a detail and
# the manifest line; one table of its own, so dt is its only partition.
QUARANTINE_SCHEMA = pa.schema([
    ("source", pa.string()),
    ("locator", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("bytes", pa.int64()),
    ("stage", pa.string()),
    ("manifest_line", pa.int32()),
])
DUPLICATES_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("source_path", pa.string()),
    ("manifest_line", pa.int32()),
    ("label", pa.string()),
    ("kind", pa.string()),              # exact | near
    ("duplicate_of", pa.string()),      # source_path of the copy that outranked it
    ("kept_image_id", pa.string()),
    ("distance", pa.int32()),           # phash bits apart (0 for exact)
])
# table -> (schema, sort key columns); the sort key is unique within a partition.
TABLES = {
    "clean_images": (CLEAN_IMAGES_SCHEMA, ("image_id",)),
    "image_quarantine": (QUARANTINE_SCHEMA, ("source", "manifest_line")),
    "image_duplicates": (DUPLICATES_SCHEMA, ("source_path", "manifest_line")),
}
SUCCESS = "_SUCCESS"


def part_name(index: int, total: int) -> str:
    return f"part-{index:05d}-of-{total:05d}.parquet"


def shard_of(key: tuple, total: int) -> int:
    """A stable shard for a sort key: sha256, never Python's randomized ``hash()``."""
    digest = hashlib.sha256("\x1f".join(str(k) for k in key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % total


def write_part(element, *, staging_uri: str, table: str, total: int) -> str:
    """Write one shard's rows (a ``(shard, rows)`` group) sorted by the table's key.

    Returns:
        The part file's path inside the staging folder.
    """
    shard, rows = element
    schema, key = TABLES[table]
    ordered = sorted(rows, key=lambda row: tuple(row[k] for k in key))
    fs, root = resolve(staging_uri)
    path = join(root, part_name(shard, total))
    _write_table(fs, path, pa.Table.from_pylist(ordered, schema=schema))
    fault_point("inside:image_writer")  # kill -9 tests: a part written, more to come
    return path


def _write_table(fs, path: str, table: pa.Table) -> None:
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as handle:
        # Fixed settings: the same rows always give the same bytes (no timestamps inside).
        # 1024 rows a group: ~3 MB at 32x32 RGB, ~150 MB at 224x224, still one read each.
        pq.write_table(table, handle, compression="snappy", row_group_size=1024)


def fill_empty_parts(staging_uri: str, table: str, total: int) -> None:
    """Write an empty (schema-only) part for every shard that received no rows."""
    fs, root = resolve(staging_uri)
    schema, _ = TABLES[table]
    for index in range(total):
        path = join(root, part_name(index, total))
        if not fs.exists(path):
            _write_table(fs, path, schema.empty_table())


def column_counts(staging_uri: str, column: str | None = None) -> tuple[int, dict[str, int]]:
    """Rows in a staged partition, and (when ``column`` is given) rows per value of it."""
    fs, root = resolve(staging_uri)
    rows, by_value = 0, {}
    for path in sorted(fs.glob(join(root, "part-*.parquet"))):
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            rows += parquet.metadata.num_rows
            if column is not None:
                for value in parquet.read(columns=[column]).column(column).to_pylist():
                    by_value[value] = by_value.get(value, 0) + 1
    return rows, dict(sorted(by_value.items()))


def write_json(uri: str, payload: dict) -> None:
    fs, path = resolve(uri)
    with fs.open(path, "wb") as handle:
        handle.write((json.dumps(payload, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def remove(uri: str) -> None:
    """Remove a folder if it exists (a failed run's staging)."""
    fs, path = resolve(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def commit_partition(*, staging_uri: str, final_uri: str, old_uri: str) -> None:
    """Replace the partition ``final_uri`` with the staged folder, then write ``_SUCCESS``.

    Args:
        staging_uri: the finished staging folder.
        final_uri: the partition folder (``…/dt=YYYY-MM-DD``).
        old_uri: a free sibling name the previous partition is moved to, then removed.
    """
    fs, staging = resolve(staging_uri)
    _, final = resolve(final_uri)
    _, old = resolve(old_uri)
    if fs.exists(join(staging, SUCCESS)):
        fs.rm(join(staging, SUCCESS))
    replaced = fs.exists(final)
    fault_point("inside:image_writer")  # kill -9 tests: each step of the commit
    if replaced:
        fs.mv(final, old, recursive=True)
        fault_point("inside:image_writer")
    fs.mv(staging, final, recursive=True)
    fault_point("inside:image_writer")
    if replaced:
        fs.rm(old, recursive=True)
    with fs.open(join(final, SUCCESS), "wb"):
        pass
