"""``shardforge lake fsck [--repair]``: what killed runs left in the lake, and the fix.

Every commit in the lake writes under a hidden sibling first (``_staging-…``) and moves the
old version aside (``_old-…``) before it removes it, so a process killed mid-commit leaves
one of those behind — never a half-visible dataset. This module finds them and the other
traces of interrupted work:

* ``leftover``: a ``_staging-*`` or ``_old-*`` folder (records, warehouse, artifacts);
  repair removes it. Every writing command also sweeps these as soon as it holds the lake's
  lock (:func:`sweep_leftovers`): while it holds the lock nobody else is committing.
* ``uncommitted``: a dataset version folder without ``_SUCCESS``; repair removes it.
* ``orphan_partition``: a ``dt=`` folder of a Hive table the metastore does not list;
  repair registers it (what Hive's ``MSCK REPAIR TABLE`` does).
* ``missing_partition``: a partition the metastore lists whose folder is gone; repair
  drops it from the metastore.

The last two need the metastore, hence Spark; ``--no-metastore`` skips them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.lake import Lake

__all__ = ["Finding", "repair", "scan_files", "scan_metastore", "sweep_leftovers"]

_LEFTOVER_PREFIXES = ("_staging-", "_old-")
SUCCESS = "_SUCCESS"
_DT_FOLDER = re.compile(r"^dt=\d{4}-\d{2}-\d{2}$")  # the only names that reach the SQL below


@dataclass(frozen=True)
class Finding:
    """One thing fsck found: its kind, where, and what ``--repair`` does about it."""

    kind: str
    uri: str
    detail: str
    repair: str
    table: str | None = None  # db.table, for the metastore findings
    dt: str | None = None

    def line(self) -> str:
        return f"{self.kind:<18} {self.uri}  ({self.detail}; repair: {self.repair})"


def _children(lake: Lake, uri: str) -> list[tuple[str, str, bool]]:
    """(name, uri, is_dir) of the entries of ``uri``; [] when it does not exist."""
    path = lake.fs_path(uri)
    if not lake.fs.exists(path):
        return []
    out = []
    for entry in lake.fs.ls(path, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        out.append((name, f"{uri}/{name}", entry["type"] == "directory"))
    return sorted(out)


def _containers(lake: Lake) -> list[str]:
    """The folders commits happen in: records/<ds>, artifacts/<ds>, warehouse/<db>/<table>."""
    out = []
    for top in ("records", "artifacts"):
        out += [uri for _, uri, is_dir in _children(lake, f"{lake.root}/{top}") if is_dir]
    for _, db_uri, is_dir in _children(lake, lake.warehouse()):
        if is_dir:
            out += [uri for _, uri, d in _children(lake, db_uri) if d]
    return out


def scan_files(lake: Lake) -> list[Finding]:
    """Leftover staging/old folders and uncommitted dataset versions (no engine needed)."""
    found = []
    for container in _containers(lake):
        for name, uri, is_dir in _children(lake, container):
            if is_dir and name.startswith(_LEFTOVER_PREFIXES):
                found.append(Finding("leftover", uri, "a killed commit's staging or old copy",
                                     "remove it"))
            elif (is_dir and name.startswith("v=") and container.startswith(f"{lake.root}/records/")
                  and not lake.fs.exists(lake.fs_path(f"{uri}/{SUCCESS}"))):
                found.append(Finding("uncommitted", uri, f"a dataset version without {SUCCESS}",
                                     "remove it"))
    return found


def sweep_leftovers(lake: Lake) -> list[str]:
    """Remove every leftover staging/old folder; call only while holding the lake's lock."""
    removed = []
    for finding in scan_files(lake):
        if finding.kind == "leftover":
            lake.fs.rm(lake.fs_path(finding.uri), recursive=True)
            removed.append(finding.uri)
    return removed


def scan_metastore(lake: Lake, spark, db: str) -> list[Finding]:
    """Partitions on disk but not in the metastore, and the reverse, for ``db``'s tables."""
    if not spark.catalog.databaseExists(db):
        return []
    found = []
    for table in spark.catalog.listTables(db):
        if table.tableType == "VIEW":
            continue
        name = f"{db}.{table.name}"
        columns = spark.catalog.listColumns(name)
        if not any(c.isPartition and c.name == "dt" for c in columns):
            continue
        listed = {row[0].split("=", 1)[1] for row in spark.sql(f"SHOW PARTITIONS {name}").collect()}
        on_disk = {entry[0].split("=", 1)[1] for entry in _children(lake, lake.table(db, table.name))
                   if entry[2] and _DT_FOLDER.match(entry[0])}
        for dt in sorted(on_disk - listed):
            found.append(Finding("orphan_partition", lake.table(db, table.name, dt),
                                 f"not in the metastore's {name}", "register it", name, dt))
        for dt in sorted(listed - on_disk):
            found.append(Finding("missing_partition", lake.table(db, table.name, dt),
                                 f"listed by {name}, no folder", "drop it from the metastore",
                                 name, dt))
    return found


def repair(lake: Lake, findings: list[Finding], spark=None) -> list[str]:
    """Fix each finding (see the module docstring); returns one line per action taken."""
    done = []
    for f in findings:
        if f.kind in ("leftover", "uncommitted"):
            lake.fs.rm(lake.fs_path(f.uri), recursive=True)
            done.append(f"removed {f.uri}")
        elif f.kind == "orphan_partition":
            spark.sql(f"ALTER TABLE {f.table} ADD IF NOT EXISTS PARTITION (dt='{f.dt}') "
                      f"LOCATION '{f.uri}'")
            done.append(f"registered {f.table} dt={f.dt}")
        elif f.kind == "missing_partition":
            spark.sql(f"ALTER TABLE {f.table} DROP IF EXISTS PARTITION (dt='{f.dt}')")
            done.append(f"dropped {f.table} dt={f.dt} from the metastore")
    return done
