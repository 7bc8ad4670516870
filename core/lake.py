"""The lake layout of DESIGN.md, and the only place that builds lake paths.

A lake root is a URI: a plain path (made absolute), ``file://…`` or
``hdfs://namenode:port/…`` (``memory://…``, fsspec's in-process filesystem, stands in for
a non-local lake in tests: everything but Spark runs on it). Every location below is returned as a full URI that
Spark reads natively and that Python reads through :attr:`Lake.fs` (fsspec; HDFS
through pyarrow's libhdfs binding, which needs a configured Hadoop client)::

    <root>/raw/<corpus>/dt=YYYY-MM-DD/…
    <root>/warehouse/<db>.db/<table>/dt=YYYY-MM-DD/part-*.parquet
    <root>/records/<dataset>/v=<version>/split=<split>/part-00000-of-00016.tfrecord
    <root>/artifacts/<dataset>/v=<version>/<name>   (features/: vocab, tokenizer, stats)
    <root>/models/<model>/<run_id>/
    <root>/reports/<run_id>/
    <root>/_system/metastore_db        (embedded Derby metastore, local roots only)
    <root>/_system/spark-cluster/      (a local Spark standalone cluster: pids, logs, work dirs)

Path segments are checked, so nothing built here can escape the root.
"""

from __future__ import annotations

import datetime as _dt
import re
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

import fsspec

__all__ = ["Lake", "LakePathError"]

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")
_DT = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


class LakePathError(ValueError):
    """A path that is malformed or lies outside the lake root."""


def _normalize_root(root: str) -> str:
    parsed = urlparse(root)
    if parsed.scheme in ("", "file"):
        local = parsed.path if parsed.scheme == "file" else root
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise LakePathError(f"lake root {root!r}: file:// URIs take no host")
        return Path(local).expanduser().resolve().as_uri()
    if parsed.scheme == "hdfs":
        if not parsed.path.startswith("/"):
            raise LakePathError(f"lake root {root!r}: hdfs:// needs an absolute path")
        return root.rstrip("/")
    if parsed.scheme == "memory":  # fsspec's in-process filesystem: non-local like hdfs://
        return root.rstrip("/")
    raise LakePathError(f"lake root {root!r}: scheme {parsed.scheme!r} is not supported "
                        "(file, hdfs; memory for tests)")


def _segment(value: str, what: str) -> str:
    if not _SEGMENT.match(value) or ".." in value:
        raise LakePathError(f"{what} {value!r} is not a valid lake path segment")
    return value


def _dt_segment(dt: str) -> str:
    try:
        _dt.date.fromisoformat(dt)
    except (TypeError, ValueError):
        raise LakePathError(f"dt {dt!r} is not a date YYYY-MM-DD") from None
    return f"dt={dt}"


class Lake:
    """The layout of one lake, rooted at a URI.

    Args:
        root: a plain path, ``file://…`` or ``hdfs://host:port/path``.
    """

    def __init__(self, root: str) -> None:
        self.root = _normalize_root(root)

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    @property
    def is_local(self) -> bool:
        return self.root.startswith("file://")

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem of the root (created on first use: HDFS connects here)."""
        fs, _ = fsspec.core.url_to_fs(self.root)
        return fs

    def fs_path(self, uri: str) -> str:
        """The path :attr:`fs` understands for a URI inside the lake."""
        self.check_inside(uri)
        return fsspec.core.url_to_fs(uri)[1] if self.is_local else uri

    def local_path(self, uri: str) -> Path:
        """A local filesystem path, for tools that need one (Derby, PIL); local lakes only."""
        self.check_inside(uri)
        if not self.is_local:
            raise LakePathError(f"{uri} is not on a local filesystem")
        return Path(urlparse(uri).path)

    def check_inside(self, uri: str) -> str:
        """Return ``uri`` if it lies inside the root, else raise :class:`LakePathError`."""
        if uri == self.root:
            return uri
        normalized = uri
        if self.is_local and not uri.startswith("file://"):
            normalized = _normalize_root(uri)
        parts = normalized[len(self.root) + 1 :].split("/")
        if not normalized.startswith(self.root + "/") or any(p in ("..", ".") for p in parts):
            raise LakePathError(f"{uri} lies outside the lake root {self.root}")
        return normalized

    def _join(self, *segments: str) -> str:
        return "/".join([self.root, *segments])

    # raw/ -----------------------------------------------------------------------------------
    def raw(self, corpus: str, dt: str | None = None) -> str:
        base = ("raw", _segment(corpus, "corpus"))
        return self._join(*base, _dt_segment(dt)) if dt else self._join(*base)

    def raw_partitions(self, corpus: str) -> list[str]:
        """The dt values present under ``raw/<corpus>/``, sorted; [] if the corpus is absent."""
        base = self.fs_path(self.raw(corpus))
        if not self.fs.exists(base):
            return []
        found = []
        for entry in self.fs.ls(base, detail=True):
            match = _DT.match(entry["name"].rstrip("/").rsplit("/", 1)[-1])
            if match and entry["type"] == "directory":
                found.append(match.group(1))
        return sorted(found)

    # warehouse/ -----------------------------------------------------------------------------
    def warehouse(self) -> str:
        return self._join("warehouse")

    def database(self, db: str) -> str:
        return self._join("warehouse", f"{_segment(db, 'database')}.db")

    def table(self, db: str, table: str, dt: str | None = None) -> str:
        base = (*self.database(db)[len(self.root) + 1 :].split("/"), _segment(table, "table"))
        return self._join(*base, _dt_segment(dt)) if dt else self._join(*base)

    def table_staging(self, db: str, table: str, dt: str, token: str) -> str:
        """``<table>/_staging-dt=<dt>-<token>``: where a partition is written before its commit.

        A sibling of the partition folder, so the commit is one rename on the same
        filesystem; the leading ``_`` hides it from Hive, Spark and pyarrow dataset readers.
        """
        name = f"_staging-{_dt_segment(dt)}-{_segment(token, 'token')}"
        return f"{self.table(db, table)}/{name}"

    def metastore(self) -> Path:
        """Folder of the embedded Derby metastore (local roots; remote lakes use a real one)."""
        return self.local_path(self._join("_system", "metastore_db"))

    def system(self) -> str:
        return self._join("_system")

    def spark_cluster(self) -> Path:
        """Folder of the local Spark standalone cluster's pids, logs and worker dirs (local roots)."""
        return self.local_path(self._join("_system", "spark-cluster"))

    # records/, artifacts/, models/, reports/ --------------------------------------------------
    def records(self, dataset: str, version: str, split: str | None = None) -> str:
        base = ("records", _segment(dataset, "dataset"), f"v={_segment(version, 'version')}")
        return self._join(*base, f"split={_segment(split, 'split')}") if split else self._join(*base)

    def committed_versions(self, dataset: str) -> list[str]:
        """The versions of ``records/<dataset>`` whose commit finished (``_SUCCESS``), sorted."""
        folder = self.fs_path(self._join("records", _segment(dataset, "dataset")))
        if not self.fs.exists(folder):
            return []
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False))
        return sorted(n[2:] for n in names if n.startswith("v=") and self.fs.exists(
            self.fs_path(f"{self.records(dataset, n[2:])}/_SUCCESS")))

    def artifacts(self, dataset: str, version: str) -> str:
        return self._join("artifacts", _segment(dataset, "dataset"), f"v={_segment(version, 'version')}")

    def artifact(self, dataset: str, version: str, name: str) -> str:
        """``artifacts/<dataset>/v=<version>/<name>``: one file (vocabulary, tokenizer, index)."""
        return "/".join([self.artifacts(dataset, version), _segment(name, "artifact")])

    def model_runs(self, model: str) -> str:
        """``models/<model>``: the folder holding every run of one model."""
        return self._join("models", _segment(model, "model"))

    def model_run(self, model: str, run_id: str) -> str:
        return self._join("models", _segment(model, "model"), _segment(run_id, "run_id"))

    def reports(self, run_id: str | None = None) -> str:
        """``reports/<run_id>``, or the ``reports/`` folder itself when ``run_id`` is None."""
        return self._join("reports", _segment(run_id, "run_id")) if run_id else self._join("reports")
