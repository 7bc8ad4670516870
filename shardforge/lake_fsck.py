"""``shardforge lake fsck [--repair]``: what killed runs left in the lake, and the fix.

Every commit in the lake writes under a hidden sibling first (``_staging-…``) and moves the
old version aside (``_old-…``) before it removes it, so a process killed mid-commit leaves
one of those behind — never a half-visible dataset. This module finds them and the other
traces of interrupted work:

* ``leftover``: a ``_staging-*`` or ``_old-*`` folder (records, warehouse, artifacts), or
  the ``_staging-*`` file of an artifact write killed before its rename; repair removes it. Every writing command also sweeps these as soon as it holds the lake's
  lock (:func:`sweep_leftovers`): while it holds the lock nobody else is committing.
* ``moved_aside``: the committed copy a commit moved aside (``_old-<name>-…``, an image
  partition's ``_staging-dt=…-old-…``) when ``<name>`` itself is gone: the kill came between
  the two renames. Repair (and the sweep) moves it back, so the last committed version
  survives until a re-run replaces it.
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
_PARTITION_VALUE = re.compile(r"^[A-Za-z0-9_.:-]+$")  # other partition values the SQL may quote
# records.writer.commit_staged's and pipelines.beam.image_io.commit_partition's old copies
_MOVED_ASIDE = (re.compile(r"^_old-(.+)-[0-9a-f]{32}$"),
                re.compile(r"^_staging-(dt=\d{4}-\d{2}-\d{2})-old-.+$"))


@dataclass(frozen=True)
class Finding:
    """One thing fsck found: its kind, where, and what ``--repair`` does about it."""

    kind: str
    uri: str
    detail: str
    repair: str
    table: str | None = None  # db.table, for the metastore findings
    dt: str | None = None
    partition: str | None = None  # k1=v1/dt=…, for a table with more partition columns

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
        children = _children(lake, container)
        names = {name for name, _, _ in children}
        for name, uri, is_dir in children:
            original = next((m.group(1) for m in (p.match(name) for p in _MOVED_ASIDE) if m),
                            None) if is_dir else None
            if original is not None and original not in names:
                found.append(Finding("moved_aside", uri, f"the committed {original}, moved aside "
                                     "by a killed commit", f"move it back to {original}"))
            elif is_dir and name.startswith(_LEFTOVER_PREFIXES):
                found.append(Finding("leftover", uri, "a killed commit's staging or old copy",
                                     "remove it"))
            elif (is_dir and name.startswith("v=") and container.startswith(f"{lake.root}/records/")
                  and not lake.fs.exists(lake.fs_path(f"{uri}/{SUCCESS}"))):
                found.append(Finding("uncommitted", uri, f"a dataset version without {SUCCESS}",
                                     "remove it"))
            elif is_dir and name.startswith("v=") and container.startswith(f"{lake.root}/artifacts/"):
                # features.artifacts writes each file as a _staging- sibling, then renames it
                found += [Finding("leftover", file_uri, "a killed artifact write's staging file",
                                  "remove it")
                          for file_name, file_uri, _ in _children(lake, uri)
                          if file_name.startswith("_staging-")]
    return found


def _move_back(lake: Lake, finding: Finding) -> str:
    original = finding.repair.rsplit(" ", 1)[-1]
    target = f"{finding.uri.rsplit('/', 1)[0]}/{original}"
    lake.fs.mv(lake.fs_path(finding.uri), lake.fs_path(target), recursive=True)
    return target


def sweep_leftovers(lake: Lake) -> list[str]:
    """Remove every leftover staging/old folder and move back what a killed commit moved
    aside; call only while holding the lake's lock. Returns the URIs it removed or moved."""
    swept = []
    for finding in scan_files(lake):
        if finding.kind == "leftover":
            lake.fs.rm(lake.fs_path(finding.uri), recursive=True)
            swept.append(finding.uri)
        elif finding.kind == "moved_aside":
            _move_back(lake, finding)
            swept.append(finding.uri)
    return swept


def scan_metastore(lake: Lake, spark, db: str) -> list[Finding]:
    """Partitions on disk but not in the metastore, and the reverse, for ``db``'s tables."""
    if not spark.catalog.databaseExists(db):
        return []
    found = []
    for table in spark.catalog.listTables(db):
        if table.tableType == "VIEW":
            continue
        name = f"{db}.{table.name}"
        keys = [c.name for c in spark.catalog.listColumns(name) if c.isPartition]
        if "dt" not in keys:
            continue
        listed = {row[0] for row in spark.sql(f"SHOW PARTITIONS {name}").collect()
                  if _safe_partition(row[0], keys)}
        on_disk = _partition_folders(lake, lake.table(db, table.name), keys)
        for kind, paths, detail, fix in (
                ("orphan_partition", on_disk - listed, f"not in the metastore's {name}",
                 "register it"),
                ("missing_partition", listed - on_disk, f"listed by {name}, no folder",
                 "drop it from the metastore")):
            for path in sorted(paths):
                spec = dict(part.split("=", 1) for part in path.split("/"))
                found.append(Finding(kind, f"{lake.table(db, table.name)}/{path}", detail, fix,
                                     name, spec["dt"],
                                     None if keys == ["dt"] else path))
    return found


def _safe_partition(path: str, keys: list[str]) -> bool:
    """``path`` is ``k1=v1/…`` over ``keys`` with values the SQL of :func:`repair` may quote."""
    parts = path.split("/")
    return len(parts) == len(keys) and all(
        part.startswith(f"{key}=") and _PARTITION_VALUE.match(part.split("=", 1)[1])
        and (key != "dt" or _DT_FOLDER.match(part)) for part, key in zip(parts, keys, strict=True))


def _partition_folders(lake: Lake, table_uri: str, keys: list[str]) -> set[str]:
    """``k1=v1/k2=v2`` paths of the partition folders of a table partitioned by ``keys``."""
    paths = {""}
    for depth in range(len(keys)):
        paths = {f"{path}/{entry[0]}".lstrip("/") for path in paths
                 for entry in _children(lake, f"{table_uri}/{path}".rstrip("/"))
                 if entry[2] and _safe_partition(entry[0], keys[depth:depth + 1])}
    return paths


def repair(lake: Lake, findings: list[Finding], spark=None) -> list[str]:
    """Fix each finding (see the module docstring); returns one line per action taken."""
    done = []
    for f in findings:
        if f.kind in ("leftover", "uncommitted"):
            lake.fs.rm(lake.fs_path(f.uri), recursive=True)
            done.append(f"removed {f.uri}")
        elif f.kind == "moved_aside":
            done.append(f"moved {f.uri} back to {_move_back(lake, f)}")
        elif f.kind in ("orphan_partition", "missing_partition"):
            path = f.partition or f"dt={f.dt}"
            spec = ", ".join(f"{k}='{v}'" for k, v in (p.split("=", 1) for p in path.split("/")))
            if f.kind == "orphan_partition":
                spark.sql(f"ALTER TABLE {f.table} ADD IF NOT EXISTS PARTITION ({spec}) "
                          f"LOCATION '{f.uri}'")
                done.append(f"registered {f.table} {path}")
            else:
                spark.sql(f"ALTER TABLE {f.table} DROP IF EXISTS PARTITION ({spec})")
                done.append(f"dropped {f.table} {path} from the metastore")
    return done
