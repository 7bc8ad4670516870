"""What ``shardforge records inspect|verify`` run (the CLI wiring lives elsewhere).

Both accept a dataset version folder (with ``manifest.json``) or a single
TFRecord file (any compression, auto-detected). They print to ``out`` and
return a process exit code.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import sys
from typing import TextIO

import numpy as np

from records.errors import CorruptRecordError
from records.example_codec import decode_example, decode_sequence_example
from records.framing import iter_record_blocks, iter_records, open_compression
from records.index import read_index
from records.manifest import MANIFEST_NAME, SUCCESS_NAME, Manifest, load_manifest
from records.tfproto import SequenceExample
from records.uri import join, resolve, to_uri

__all__ = ["inspect", "verify", "describe_record"]


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, list):
        return [base64.b64encode(b).decode("ascii") if isinstance(b, bytes) else _jsonable(b)
                for b in v]
    return v


def describe_record(data: bytes) -> dict:
    """A record as JSON-ready dict: ``{"feature": [values...]}`` (bytes base64).

    A SequenceExample (it has ``feature_lists``) gives ``{"context": {...},
    "feature_lists": {name: [[...], ...]}}``; bytes that are neither give
    ``{"_raw_base64": ...}``.
    """
    try:
        seq = SequenceExample.FromString(bytes(data))
        if seq.HasField("feature_lists"):
            ctx, lists = decode_sequence_example(data)
            return {"context": {k: _jsonable(v) for k, v in sorted(ctx.items())},
                    "feature_lists": {k: [_jsonable(s) for s in v]
                                      for k, v in sorted(lists.items())}}
        return {k: _jsonable(v) for k, v in sorted(decode_example(data).items())}
    except Exception:  # not a tf.Example: show it raw rather than fail the inspection
        return {"_raw_base64": base64.b64encode(bytes(data)).decode("ascii")}


def _is_dataset(uri: str) -> bool:
    fs, p = resolve(uri)
    return fs.isdir(p) and fs.exists(join(p, MANIFEST_NAME))


def _schema(records: list[bytes]) -> dict[str, str]:
    kinds: dict[str, set] = {}
    for r in records:
        for name, v in describe_record(r).items():
            kind = ("sequence" if name in ("context", "feature_lists") else
                    "int64" if isinstance(v, list) and v and isinstance(v[0], int) else
                    "float32" if isinstance(v, list) and v and isinstance(v[0], float) else
                    "bytes" if isinstance(v, list) and v else "empty")
            kinds.setdefault(name, set()).add(kind)
    return {k: "|".join(sorted(v)) for k, v in sorted(kinds.items())}


def inspect(path: str, *, limit: int = 5, as_json: bool = False,
            out: TextIO = sys.stdout) -> int:
    """Prints a dataset's or a file's description and first ``limit`` records.

    Args:
        path: dataset version folder or TFRecord file (path or URI).
        limit: number of records to show.
        as_json: print only the first records, one JSON object per line.
        out: where to print.

    Returns:
        0, or 1 when the path cannot be read (the reason is printed).
    """
    try:
        if _is_dataset(path):
            manifest = load_manifest(path, require_success=False)
            split = "train" if "train" in manifest.splits else next(iter(sorted(manifest.splits)),
                                                                     None)
            files = [] if split is None else [
                to_uri(resolve(path)[0], join(resolve(path)[1], s.path))
                for s in manifest.splits[split].shards]
            if not as_json:
                _print_manifest(manifest, path, out)
        else:
            manifest, split, files = None, None, [path]
        first = list(itertools.islice(
            (r for f in files for r in iter_records(f)), limit))
        if as_json:
            for r in first:
                out.write(json.dumps(describe_record(r), sort_keys=True) + "\n")
            return 0
        if manifest is None:
            fs, p = resolve(path)
            with fs.open(p, "rb") as f:
                compression = open_compression(f, "auto")
            count = sum(len(b) for b in iter_record_blocks(path, compression=compression))
            out.write(f"file: {path}\ncompression: {compression or 'none'}\n"
                      f"records: {count}\nschema (from the first records):\n")
            for name, kind in _schema(first).items():
                out.write(f"  {name}: {kind}\n")
        out.write(f"first {len(first)} records{f' of split {split!r}' if split else ''}:\n")
        for r in first:
            out.write("  " + json.dumps(describe_record(r), sort_keys=True) + "\n")
        return 0
    except (OSError, ValueError, KeyError) as err:
        out.write(f"error: {err}\n")
        return 1


def _print_manifest(m: Manifest, path: str, out: TextIO) -> None:
    fs, p = resolve(path)
    committed = fs.exists(join(p, SUCCESS_NAME))
    out.write(f"dataset: {m.dataset}  version: {m.version}  format: {m.format}\n"
              f"path: {path}{'' if committed else '  (NOT COMMITTED: no _SUCCESS)'}\n"
              f"compression: {m.compression or 'none'}\nsplits:\n")
    for name, s in sorted(m.splits.items()):
        size = sum(sh.bytes for sh in s.shards)
        out.write(f"  {name}: {s.records} records in {len(s.shards)} shards, {size} bytes\n")
    out.write("feature spec:\n")
    for name, f in sorted(m.feature_spec.items()):
        detail = {k: v for k, v in f.items() if k != "kind" and v is not None}
        out.write(f"  {name}: {f['kind']} {json.dumps(detail, sort_keys=True)}\n")
    if m.inputs:
        out.write(f"inputs: {', '.join(m.inputs)}\n")


def _fail(out: TextIO, file: str, offset, record, reason: str) -> int:
    out.write(f"FAIL {file}: offset {offset}, record #{record}: {reason}\n")
    return 1


def _scan_file(uri: str, out: TextIO) -> tuple[int, list[int]] | int:
    """(records, frame offsets) of a file with every CRC checked, or the exit code 1."""
    offsets: list[int] = []
    try:
        for block in iter_record_blocks(uri):
            offsets.extend(block.offsets.tolist())
    except CorruptRecordError as err:
        return _fail(out, err.path, err.offset, err.record_index, err.reason)
    except OSError as err:
        return _fail(out, uri, 0, 0, f"cannot read: {err}")
    return len(offsets), offsets


def verify(path: str, *, out: TextIO = sys.stdout) -> int:
    """Checks every CRC, and for a dataset the manifest's counts, sizes, sha256s and indexes.

    Returns:
        0 when everything checks out; 1 after printing the first problem's file,
        offset and record number.
    """
    if not _is_dataset(path):
        res = _scan_file(path, out)
        if isinstance(res, int):
            return res
        out.write(f"OK {path}: {res[0]} records, all CRCs valid\n")
        return 0
    fs, root = resolve(path)
    if not fs.exists(join(root, SUCCESS_NAME)):
        return _fail(out, join(root, SUCCESS_NAME), 0, 0, "missing: dataset not committed")
    try:
        manifest = load_manifest(path)
    except (ValueError, KeyError) as err:
        return _fail(out, join(root, MANIFEST_NAME), 0, 0, f"bad manifest: {err}")
    total = 0
    for split, info in sorted(manifest.splits.items()):
        for shard in info.shards:
            uri = to_uri(fs, join(root, shard.path))
            res = _scan_file(uri, out)
            if isinstance(res, int):
                return res
            count, offsets = res
            if count != shard.records:
                return _fail(out, uri, offsets[-1] if offsets else 0, count,
                             f"file holds {count} records, manifest says {shard.records}")
            problem = _check_bytes(fs, join(root, shard.path), shard)
            if problem:
                return _fail(out, uri, 0, 0, problem)
            try:
                idx = read_index(to_uri(fs, join(root, shard.index)))
            except (OSError, ValueError) as err:
                return _fail(out, to_uri(fs, join(root, shard.index)), 0, 0, f"index: {err}")
            if len(idx) != count or idx[:, 0].tolist() != offsets:
                bad = next((i for i, (a, b) in enumerate(zip(idx[:, 0].tolist(), offsets, strict=False))
                            if a != b), min(len(idx), count))
                return _fail(out, to_uri(fs, join(root, shard.index)),
                             offsets[bad] if bad < len(offsets) else 0, bad,
                             "index does not match the file's records")
            total += count
        out.write(f"ok split {split}: {info.records} records in {len(info.shards)} shards\n")
    out.write(f"OK {path}: {total} records, all CRCs, counts, sizes, sha256s and indexes valid\n")
    return 0


def _check_bytes(fs, file_path: str, shard) -> str | None:
    size = fs.size(file_path)
    if size != shard.bytes:
        return f"file is {size} bytes, manifest says {shard.bytes}"
    sha = hashlib.sha256()
    with fs.open(file_path, "rb") as f:
        while chunk := f.read(8 << 20):
            sha.update(chunk)
    if sha.hexdigest() != shard.sha256:
        return f"sha256 {sha.hexdigest()} does not match the manifest's {shard.sha256}"
    return None
