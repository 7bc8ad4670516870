"""``manifest.json``: what a dataset version folder holds and how it was made.

A dataset version folder (``.../records/<dataset>/v=<version>/``) is
self-describing: feature spec, per-split shard list with record counts, sizes and
sha256s, the config that produced it and its inputs. The JSON is canonical
(sorted keys, fixed indentation, no timestamps), so the same data gives the same
bytes and :func:`manifest_sha256` is a stable identity for checkpoints to record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from records.compression import normalize_compression
from records.spec import FeatureSpec, spec_from_dict, spec_to_dict
from records.uri import join, resolve

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "SUCCESS_NAME",
    "ShardInfo",
    "SplitInfo",
    "Manifest",
    "load_manifest",
    "write_manifest",
    "manifest_sha256",
]

FORMAT = "shardforge.records/1"
MANIFEST_NAME = "manifest.json"
SUCCESS_NAME = "_SUCCESS"


@dataclass(frozen=True)
class ShardInfo:
    """One shard file.

    Attributes:
        path: shard path relative to the version folder (e.g.
            ``split=train/part-00000-of-00004.tfrecord``).
        records: number of records.
        bytes: file size in bytes (compressed size for compressed shards).
        sha256: hex digest of the file bytes.
        index: relative path of the ``.idx`` file.
    """

    path: str
    records: int
    bytes: int
    sha256: str
    index: str

    def to_dict(self) -> dict:
        return {"path": self.path, "records": self.records, "bytes": self.bytes,
                "sha256": self.sha256, "index": self.index}

    @classmethod
    def from_dict(cls, d: dict) -> ShardInfo:
        return cls(path=d["path"], records=int(d["records"]), bytes=int(d["bytes"]),
                   sha256=d["sha256"], index=d["index"])


@dataclass(frozen=True)
class SplitInfo:
    """A split: its shards in order and the total record count.

    Raises:
        ValueError: ``records`` is not the sum of the shards' records.
    """

    records: int
    shards: list[ShardInfo]

    def __post_init__(self) -> None:
        total = sum(s.records for s in self.shards)
        if total != self.records:
            raise ValueError(f"split says {self.records} records but its shards hold {total}")

    @classmethod
    def of(cls, shards: list[ShardInfo]) -> SplitInfo:
        """A split whose count is the sum of ``shards``."""
        return cls(records=sum(s.records for s in shards), shards=list(shards))

    def to_dict(self) -> dict:
        return {"records": self.records, "shards": [s.to_dict() for s in self.shards]}

    @classmethod
    def from_dict(cls, d: dict) -> SplitInfo:
        return cls(records=int(d["records"]), shards=[ShardInfo.from_dict(s) for s in d["shards"]])


@dataclass
class Manifest:
    """The contents of ``manifest.json``.

    Attributes:
        dataset: dataset name.
        version: dataset version (the ``v=`` folder).
        compression: ``None``, ``"GZIP"`` or ``"ZLIB"`` (all shards alike).
        feature_spec: the decode spec in dict form (a FeatureSpec is converted).
        splits: split name -> :class:`SplitInfo`.
        config: the config that produced the data (JSON-serializable).
        inputs: URIs of the inputs.
        artifacts: name -> URI of side artifacts (vocab, stats...).
        format: always :data:`FORMAT`.
    """

    dataset: str
    version: str
    compression: str | None
    feature_spec: dict
    splits: dict[str, SplitInfo]
    config: dict = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise ValueError(f"unsupported manifest format {self.format!r}, expected {FORMAT!r}")
        self.compression = normalize_compression(self.compression)
        if any(not isinstance(v, dict) for v in self.feature_spec.values()):
            self.feature_spec = spec_to_dict(self.feature_spec)  # given a FeatureSpec
        spec_from_dict(self.feature_spec)  # validates

    @property
    def spec(self) -> FeatureSpec:
        """The decode spec as objects."""
        return spec_from_dict(self.feature_spec)

    def split(self, name: str) -> SplitInfo:
        """The split ``name``; KeyError lists the available ones."""
        if name not in self.splits:
            raise KeyError(f"dataset {self.dataset!r} v={self.version} has no split {name!r}; "
                           f"available: {sorted(self.splits)}")
        return self.splits[name]

    def to_dict(self) -> dict:
        return {"format": self.format, "dataset": self.dataset, "version": self.version,
                "compression": self.compression, "feature_spec": self.feature_spec,
                "splits": {k: v.to_dict() for k, v in sorted(self.splits.items())},
                "config": self.config, "inputs": list(self.inputs),
                "artifacts": dict(self.artifacts)}

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        return cls(format=d.get("format", ""), dataset=d["dataset"], version=str(d["version"]),
                   compression=d.get("compression"), feature_spec=d["feature_spec"],
                   splits={k: SplitInfo.from_dict(v) for k, v in d["splits"].items()},
                   config=d.get("config") or {}, inputs=list(d.get("inputs") or []),
                   artifacts=dict(d.get("artifacts") or {}))

    def to_json(self) -> bytes:
        """Canonical JSON bytes (what ``manifest.json`` holds).

        Raises:
            TypeError: ``config`` or ``artifacts`` hold values JSON cannot encode.
        """
        try:
            text = json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False)
        except TypeError as err:
            raise TypeError(f"manifest is not JSON-serializable (check config): {err}") from err
        return (text + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        return cls.from_dict(json.loads(data))


def _manifest_path(uri: str) -> tuple[Any, str, str]:
    fs, p = resolve(uri)
    if p.endswith("/" + MANIFEST_NAME) or p == MANIFEST_NAME:
        return fs, p, p[: -len(MANIFEST_NAME)].rstrip("/")
    return fs, join(p, MANIFEST_NAME), p


def load_manifest(dataset_dir_uri: str, *, require_success: bool = True) -> Manifest:
    """Reads ``manifest.json`` of a dataset version folder.

    Args:
        dataset_dir_uri: the version folder (or its ``manifest.json``).
        require_success: refuse a folder without ``_SUCCESS`` (an unfinished commit).

    Raises:
        FileNotFoundError: no manifest, or no ``_SUCCESS`` when required.
    """
    fs, mpath, root = _manifest_path(dataset_dir_uri)
    if not fs.exists(mpath):
        raise FileNotFoundError(f"{dataset_dir_uri}: no {MANIFEST_NAME} (not a records dataset "
                                f"version folder)")
    if require_success and not fs.exists(join(root, SUCCESS_NAME)):
        raise FileNotFoundError(f"{dataset_dir_uri}: no {SUCCESS_NAME}; the dataset was not "
                                f"committed (or is being replaced)")
    with fs.open(mpath, "rb") as f:
        return Manifest.from_json(f.read())


def write_manifest(uri: str, manifest: Manifest) -> str:
    """Writes ``manifest.json`` into the folder ``uri``; returns its sha256."""
    fs, p = resolve(uri)
    fs.makedirs(p, exist_ok=True)
    data = manifest.to_json()
    with fs.open(join(p, MANIFEST_NAME), "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def manifest_sha256(manifest_or_uri: Manifest | str) -> str:
    """sha256 of the manifest's canonical JSON, from a Manifest or a dataset folder URI.

    Both give the same value for the same dataset, since the file holds exactly
    :meth:`Manifest.to_json`.
    """
    if isinstance(manifest_or_uri, Manifest):
        return hashlib.sha256(manifest_or_uri.to_json()).hexdigest()
    fs, mpath, _ = _manifest_path(manifest_or_uri)
    with fs.open(mpath, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
