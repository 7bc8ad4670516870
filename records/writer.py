"""Writing datasets: shards + ``.idx`` + ``manifest.json``, committed atomically.

One process (:class:`DatasetWriter`)::

    with DatasetWriter(uri="file:///lake/records/posts/v=1", dataset="posts", version="1",
                       feature_spec=spec, max_records_per_shard=100_000) as w:
        for split, example in rows:
            w.write(split, encode_example(example))

Distributed engines split the same steps between workers and the driver::

    staging = staging_uri_for(final_uri)                         # driver
    info = write_shard(path=<staging>/split=train/task-00007.tfrecord,
                       records=..., root=staging)                # each worker
    shards = {"train": [infos from workers]}  # or list_shards(staging)  (driver)
    splits = finalize_shards(root_uri=staging, splits=shards)    # part-i-of-N names
    write_manifest(staging, Manifest(dataset=..., version=..., compression=None,
                                     feature_spec=spec, splits=splits, ...))
    commit_staged(staging_uri=staging, final_uri=final_uri)

Commit: everything is written under a sibling ``_staging-<name>-<uuid>`` folder;
an existing final folder is moved aside, staging is renamed to final, the old one
removed, and ``_SUCCESS`` written last. Readers require ``_SUCCESS``. Same input
gives the same bytes (no timestamps, deterministic gzip headers, sorted JSON).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from records.compression import extension, normalize_compression
from records.faults import fault_point
from records.framing import RecordFileWriter
from records.index import index_path, read_index, write_index
from records.manifest import (
    MANIFEST_NAME,
    SUCCESS_NAME,
    Manifest,
    ShardInfo,
    SplitInfo,
    write_manifest,
)
from records.scan import OVERHEAD
from records.uri import join, parent_and_name, resolve, to_uri

__all__ = [
    "shard_name",
    "split_dir",
    "write_shard",
    "staging_uri_for",
    "list_shards",
    "finalize_shards",
    "write_manifest",
    "commit_staged",
    "DatasetWriter",
]

_SHARD_RE = re.compile(r"\.tfrecord(\.gz|\.zz)?$")


def shard_name(index: int, total: int, compression: str | None = None) -> str:
    """``part-00000-of-00016.tfrecord`` (+ ``.gz`` / ``.zz`` when compressed)."""
    if not 0 <= index < total:
        raise ValueError(f"shard index {index} out of range for {total} shards")
    return f"part-{index:05d}-of-{total:05d}.tfrecord{extension(compression)}"


def split_dir(split: str) -> str:
    """Folder of a split inside a version folder: ``split=<name>``."""
    if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", split):
        raise ValueError(f"split names must be non-empty [A-Za-z0-9_.-], got {split!r}")
    return f"split={split}"


def write_shard(*, path: str, records: Iterable[bytes], compression: str | None = None,
                root: str | None = None) -> ShardInfo:
    """Writes one shard file and its ``<path>.idx``.

    Args:
        path: the shard's path or URL.
        records: serialized records, in order.
        compression: ``None``, ``"GZIP"`` or ``"ZLIB"``.
        root: folder the returned paths are made relative to (the staging or
            version folder); ``None`` keeps ``path`` as given.

    Returns:
        The :class:`ShardInfo` (count, file size, sha256 of the file bytes).
    """
    with RecordFileWriter(path=path, compression=compression) as w:
        for record in records:
            w.write(record)
    write_index(index_path(path), w.offsets)
    fault_point("inside:records_writer")  # kill -9 tests: a shard written, more to come
    return _shard_info(path, root, w.records, w.bytes_written, w.sha256)


def _relative(path: str, root: str | None) -> str:
    if root is None:
        return path
    fs, p = resolve(path)
    _, r = resolve(root)
    rel = posixpath.relpath(p, r)
    if rel.startswith(".."):
        raise ValueError(f"{path} is not inside {root}")
    return rel


def _shard_info(path, root, records, nbytes, sha) -> ShardInfo:
    rel = _relative(path, root)
    return ShardInfo(path=rel, records=records, bytes=nbytes, sha256=sha, index=index_path(rel))


def staging_uri_for(final_uri: str) -> str:
    """A fresh sibling staging folder URI for ``final_uri``."""
    fs, final = resolve(final_uri)
    parent, name = parent_and_name(final)
    return to_uri(fs, join(parent, f"_staging-{name}-{uuid.uuid4().hex}"))


def list_shards(root_uri: str) -> dict[str, list[ShardInfo]]:
    """Finds the shards under ``root_uri/split=*/`` and describes them.

    For drivers that did not collect :class:`ShardInfo` from workers. Reads every
    file once (sha256) and every ``.idx`` (record count).
    """
    fs, root = resolve(root_uri)
    out: dict[str, list[ShardInfo]] = {}
    for d in sorted(fs.ls(root, detail=False)):
        name = posixpath.basename(d.rstrip("/"))
        if not name.startswith("split=") or not fs.isdir(d):
            continue
        shards = []
        for f in sorted(fs.ls(d, detail=False)):
            if not _SHARD_RE.search(f):
                continue
            sha = hashlib.sha256()
            with fs.open(f, "rb") as fh:
                while chunk := fh.read(8 << 20):
                    sha.update(chunk)
            rel = posixpath.relpath(f, root)
            shards.append(ShardInfo(path=rel, records=len(read_index(to_uri(fs, f + ".idx"))),
                                    bytes=fs.size(f), sha256=sha.hexdigest(),
                                    index=index_path(rel)))
        out[name[len("split="):]] = shards
    return out


def finalize_shards(*, root_uri: str, splits: Mapping[str, Sequence[ShardInfo]],
                    compression: str | None = None) -> dict[str, SplitInfo]:
    """Renames each split's shards to ``part-i-of-N`` (ordered by current path).

    Args:
        root_uri: the staging folder the shard paths are relative to.
        splits: split -> shards as written (paths relative to ``root_uri``).
        compression: the shards' compression (for the file suffix).

    Returns:
        split -> :class:`SplitInfo` with the final relative paths.
    """
    fs, root = resolve(root_uri)
    out: dict[str, SplitInfo] = {}
    tag = uuid.uuid4().hex
    for split, shards in sorted(splits.items()):
        shards = sorted(shards, key=lambda s: s.path)
        total = len(shards)
        targets = [join(split_dir(split), shard_name(i, total, compression))
                   for i in range(total)]
        moving = [(s, t) for s, t in zip(shards, targets, strict=True) if s.path != t]
        # Two phases, so a target name that is still another shard's source is never clobbered.
        for i, (s, _) in enumerate(moving):
            for src, suffix in ((s.path, ""), (s.index, ".idx")):
                fs.mv(join(root, src), join(root, f"{s.path}.{tag}-{i}{suffix}"))
        for i, (s, t) in enumerate(moving):
            fs.mv(join(root, f"{s.path}.{tag}-{i}"), join(root, t))
            fs.mv(join(root, f"{s.path}.{tag}-{i}.idx"), join(root, index_path(t)))
        final = [replace(s, path=t, index=index_path(t))
                 for s, t in zip(shards, targets, strict=True)]
        out[split] = SplitInfo.of(final)
    return out


def commit_staged(*, staging_uri: str, final_uri: str) -> None:
    """Atomically replaces ``final_uri`` with the staged folder, then writes ``_SUCCESS``.

    Raises:
        FileNotFoundError: the staging folder has no ``manifest.json``.
    """
    fs, staging = resolve(staging_uri)
    _, final = resolve(final_uri)
    if not fs.exists(join(staging, MANIFEST_NAME)):
        raise FileNotFoundError(f"{staging_uri}: nothing to commit (no {MANIFEST_NAME})")
    if fs.exists(join(staging, SUCCESS_NAME)):
        fs.rm(join(staging, SUCCESS_NAME))
    fault_point("inside:records_writer")  # kill -9 tests: each step of the commit
    parent, name = parent_and_name(final)
    old = None
    if fs.exists(final):
        old = join(parent, f"_old-{name}-{uuid.uuid4().hex}")
        fs.mv(final, old, recursive=True)
        fault_point("inside:records_writer")
    fs.mv(staging, final, recursive=True)
    fault_point("inside:records_writer")
    if old is not None:
        fs.rm(old, recursive=True)
    with fs.open(join(final, SUCCESS_NAME), "wb"):
        pass


class DatasetWriter:
    """Writes a dataset version folder; rolls shards; commits atomically on exit.

    Args:
        uri: the final version folder, e.g. ``file:///lake/records/posts/v=1``.
        dataset, version: recorded in the manifest.
        feature_spec: the decode spec (objects or dict form).
        compression: ``None``, ``"GZIP"`` or ``"ZLIB"``.
        max_records_per_shard: roll to a new shard after this many records.
        max_bytes_per_shard: roll before a record would push the shard's framed
            (uncompressed) size past this; a bigger record gets a shard alone.
        config, inputs, artifacts: recorded in the manifest.

    On a clean ``__exit__`` (or :meth:`finish`) the folder is committed; on an
    exception nothing becomes visible and staging is removed.
    """

    def __init__(self, *, uri: str, dataset: str, version: str, feature_spec: dict,
                 compression: str | None = None, max_records_per_shard: int | None = None,
                 max_bytes_per_shard: int | None = None, config: dict | None = None,
                 inputs: list[str] | None = None, artifacts: dict | None = None) -> None:
        for name, v in (("max_records_per_shard", max_records_per_shard),
                        ("max_bytes_per_shard", max_bytes_per_shard)):
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        self.uri = uri
        self.compression = normalize_compression(compression)
        self._max_records = max_records_per_shard
        self._max_bytes = max_bytes_per_shard
        # Build the manifest skeleton now so a bad spec/config fails before any write.
        self._manifest = Manifest(dataset=dataset, version=str(version),
                                  compression=self.compression, feature_spec=feature_spec,
                                  splits={}, config=dict(config or {}),
                                  inputs=list(inputs or []), artifacts=dict(artifacts or {}))
        self._manifest.to_json()
        self.staging_uri = staging_uri_for(uri)
        self._fs, self._staging = resolve(self.staging_uri)
        self._open: dict[str, RecordFileWriter] = {}
        self._shards: dict[str, list[ShardInfo]] = {}
        self._state = "open"

    def write(self, split: str, record: bytes) -> None:
        """Appends ``record`` to ``split``, rolling to a new shard when a limit is hit."""
        if self._state != "open":
            raise ValueError(f"DatasetWriter for {self.uri} is {self._state}")
        w = self._open.get(split)
        if w is not None and w.records and (
                (self._max_records is not None and w.records >= self._max_records)
                or (self._max_bytes is not None
                    and w.uncompressed_bytes + len(record) + OVERHEAD > self._max_bytes)):
            self._close_shard(split)
            w = None
        if w is None:
            n = len(self._shards.setdefault(split, []))
            path = join(self._staging, split_dir(split),
                        f"tmp-{n:05d}.tfrecord{extension(self.compression)}")
            w = self._open[split] = RecordFileWriter(path=to_uri(self._fs, path),
                                                     compression=self.compression)
        w.write(record)

    def _close_shard(self, split: str) -> None:
        w = self._open.pop(split)
        w.close()
        write_index(index_path(w.path), w.offsets)
        self._shards[split].append(
            _shard_info(w.path, self.staging_uri, w.records, w.bytes_written, w.sha256))
        fault_point("inside:records_writer")

    def finish(self) -> Manifest:
        """Closes shards, names them ``part-i-of-N``, writes the manifest and commits."""
        if self._state != "open":
            raise ValueError(f"DatasetWriter for {self.uri} is {self._state}")
        try:
            for split in list(self._open):
                self._close_shard(split)
            splits = finalize_shards(root_uri=self.staging_uri, splits=self._shards,
                                     compression=self.compression)
            manifest = replace(self._manifest, splits=splits)
            write_manifest(self.staging_uri, manifest)
            commit_staged(staging_uri=self.staging_uri, final_uri=self.uri)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        return manifest

    def abort(self) -> None:
        """Discards everything written so far (idempotent)."""
        for w in self._open.values():
            with contextlib.suppress(OSError):  # the staging folder is deleted next anyway
                w.close()
        self._open.clear()
        if self._fs.exists(self._staging):
            self._fs.rm(self._staging, recursive=True)
        self._state = "aborted"

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
        elif self._state == "open":
            self.abort()
