"""The worker half of encode, shared by the Beam pipeline and the Spark job: route, then write.

Engine-neutral (no Beam, no Spark): :mod:`pipelines.beam.encode` and
:mod:`pipelines.spark.encode` only move what these functions return, so both engines write
the same bytes. Three steps:

1. :func:`route` one input batch: its rows become *payload rows* ``(gid, key, payload)``
   (:data:`PAYLOAD_SCHEMA`), ``gid`` being the global shard (:class:`ShardPlan`) that the
   stable hash of the key picks (:func:`features.split.assign_batch`), plus the batch's
   quarantined rows. Document layout: one payload row per example (its tf.Example bytes).
   Packed text: one payload row per shard of the batch, holding those raw rows as Arrow
   IPC; they are packed only when the whole shard is together, sorted by key, so blocks do
   not depend on how an engine cut its batches (split, and shard, before packing).
2. The engine groups payload rows by ``gid`` and orders each group by ``(key, payload)``.
   With a :class:`~features.statistics.SpecStatistics`, :func:`route` also counts the
   batch's per-split, per-feature statistics (:func:`batch_statistics`); the engine merges
   them into one ``kind: statistics`` result (:func:`statistics_result`), which the driver
   commits as ``statistics.json`` beside the manifest.
3. :func:`write_group` writes one shard (and :func:`write_quarantine` one quarantine part)
   under an *attempt-unique* name in the staging folder and returns a result row
   (:data:`RESULT_FIELDS`). A retried or speculative attempt writes a second file under
   another name; the driver keeps the one attempt per shard the engine reported back
   (:mod:`pipelines.encode.commit`), so retries can neither duplicate nor lose rows.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.artifacts import Artifacts
from features.examples import binary_layout
from features.kinds import CrossedFeature, TextFeature
from features.spec import FeatureSpec
from features.split import assign_batch, split_mask
from features.statistics import SpecStatistics
from features.transform import Transformed, encode, transform
from records.shard_batches import write_shard_batches
from records.uri import join, resolve, to_uri
from records.writer import split_dir

__all__ = [
    "PAYLOAD_SCHEMA",
    "QUARANTINE",
    "QUARANTINE_DIR",
    "RESULT_FIELDS",
    "STATISTICS",
    "Routed",
    "ShardPlan",
    "analysis_columns",
    "batch_statistics",
    "from_ipc",
    "input_columns",
    "is_packed",
    "route",
    "split_by_gid",
    "statistics_result",
    "to_ipc",
    "train_rows",
    "write_group",
    "write_quarantine",
]

QUARANTINE = -1  # the gid of quarantined rows on their way to the quarantine writer
QUARANTINE_DIR = "quarantine"  # inside the dataset version folder, committed with it
STATISTICS = -2  # the gid of statistics accumulators on their way to the driver (Spark)
PAYLOAD_SCHEMA = pa.schema([("gid", pa.int32()), ("key", pa.string()), ("payload", pa.binary())])
# What every writer returns, one dict per file (Spark: rows of this shape; Beam: JSON lines).
RESULT_FIELDS = (("kind", pa.string()), ("gid", pa.int32()), ("path", pa.string()),
                 ("records", pa.int64()), ("bytes", pa.int64()), ("sha256", pa.string()),
                 ("index", pa.string()), ("documents", pa.int64()),
                 # The first key the shard holds twice (null if none): a version never repeats one.
                 ("repeated_key", pa.string()),
                 # kind "statistics": the merged accumulator as JSON (SpecStatistics.to_json).
                 ("statistics", pa.string()))


@dataclass(frozen=True)
class ShardPlan:
    """Splits and their shard counts, numbered as one range of global shards (``gid``).

    ``gid`` runs over the splits in their configured order: ``train`` 0..3, ``eval`` 4, ….
    ``statistics``: whether the workers count the rows' statistics (False only to measure
    what they cost: the version then has no ``statistics.json``, which the drift gate needs).
    """

    splits: dict[str, float]
    shards: dict[str, int]
    statistics: bool = True

    def __post_init__(self) -> None:
        if list(self.splits) != list(self.shards):
            raise ValueError(f"shards {list(self.shards)} must name the splits {list(self.splits)}, "
                             "in the same order")
        bad = {s: n for s, n in self.shards.items() if not isinstance(n, int) or n <= 0}
        if bad:
            raise ValueError(f"shard counts must be positive integers, got {bad}")

    @property
    def offsets(self) -> np.ndarray:
        return np.cumsum([0, *self.shards.values()])[:-1].astype(np.int64)

    @property
    def total(self) -> int:
        return sum(self.shards.values())

    def gids(self, keys: pa.Array) -> np.ndarray:
        """The global shard of every key (int32); a null key raises ValueError naming its row."""
        split, shard = assign_batch(keys, self.splits, self.shards)
        return (self.offsets[split] + shard).astype(np.int32)

    def split_indices(self, gids: np.ndarray) -> np.ndarray:
        """Each global shard's split, as its index in ``splits``."""
        return np.searchsorted(self.offsets, gids, side="right") - 1

    def locate(self, gid: int) -> tuple[str, int]:
        """``(split, shard index within it)`` of a global shard."""
        index = int(np.searchsorted(self.offsets, gid, side="right")) - 1
        if gid < 0 or gid >= self.total:
            raise ValueError(f"global shard {gid} is outside [0, {self.total})")
        split = list(self.shards)[index]
        return split, gid - int(self.offsets[index])


@dataclass(frozen=True)
class Routed:
    """One input batch, routed: payload rows for the shards, and the rows quarantined."""

    payload: pa.RecordBatch            # PAYLOAD_SCHEMA
    quarantined: pa.RecordBatch | None  # input columns + _row, _feature, _reason; None if none
    statistics: dict | None = None      # the batch's SpecStatistics accumulator, when asked


def is_packed(spec: FeatureSpec) -> bool:
    return any(isinstance(f, TextFeature) and f.layout == "packed" for f in spec.features.values())


def input_columns(spec: FeatureSpec) -> list[str]:
    """The input columns a spec reads: its key, each source, and the raw columns crosses name."""
    columns = {spec.key}
    for feature in spec.features.values():
        if getattr(feature, "source", None) is not None:
            columns.add(feature.source)
        if isinstance(feature, CrossedFeature):
            columns.update(c for c in feature.columns if c not in spec.features)
    return sorted(columns)


def analysis_columns(spec: FeatureSpec) -> list[str]:
    """The columns analysis reads: the key (for the split) and each analyzer's column.

    Usually far fewer bytes than :func:`input_columns` (no text unless BPE is trained), so
    the analyze pass reads, and ships to Python, only these.
    """
    from features.analyzers import SpecAnalyzer

    return sorted({spec.key} | {a.column for a in SpecAnalyzer(spec).analyzers.values()})


def train_rows(batch: pa.RecordBatch, key: str, splits: dict[str, float],
               split: str = "train") -> pa.RecordBatch:
    """The rows of ``batch`` whose key hashes to ``split`` (what analyzers see).

    A row with a null key has no split; it is quarantined (or raises) at transform time.
    """
    keys = batch.column(key)
    if keys.null_count:
        batch = batch.filter(keys.is_valid())
    return batch.filter(pa.array(split_mask(batch.column(key), splits, split)))


def to_ipc(batch: pa.RecordBatch | pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write(batch)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def _payload(gids: np.ndarray, keys: pa.Array, payloads: pa.Array) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(gids, pa.int32()), keys.cast(pa.string()),
                                       payloads.cast(pa.binary())], schema=PAYLOAD_SCHEMA)


def route(batch: pa.RecordBatch, spec: FeatureSpec, artifacts: Artifacts | None,
          plan: ShardPlan, statistics: SpecStatistics | None = None) -> Routed:
    """Encode (document layout) or shard (packed) one input batch; see the module docstring.

    With ``statistics``, :attr:`Routed.statistics` holds the batch's accumulator
    (:func:`batch_statistics`).

    Raises:
        ValueError: a bad row under ``on_error: raise`` (naming feature, column, row, key),
            or a missing column.
    """
    routed, transformed = _route(batch, spec, artifacts, plan)
    if statistics is None or not plan.statistics:
        return routed
    # Document layout: a payload row per encoded row, in order, its gid already hashed, and
    # the transform the examples came from (no second transform for the statistics).
    gids = None if is_packed(spec) else routed.payload.column("gid").to_numpy()
    return replace(routed, statistics=batch_statistics(batch, spec, artifacts, plan, statistics,
                                                       gids=gids, transformed=transformed))


def batch_statistics(batch: pa.RecordBatch, spec: FeatureSpec, artifacts: Artifacts | None,
                     plan: ShardPlan, statistics: SpecStatistics,
                     gids: np.ndarray | None = None,
                     transformed: Transformed | None = None) -> dict:
    """The statistics accumulator of the rows of ``batch`` that get encoded, per split.

    The statistics describe input rows (documents), so packed text counts each document's
    tokens, not its blocks'; the batch is transformed for them (Arrow compute only: tokens
    and ids, no ``tf.Example`` bytes) unless the caller hands its transform in.

    Args:
        gids: the global shard of each encoded row, in order, when the caller hashed the
            keys already (:func:`route`); else they are hashed here.
        transformed: ``transform(batch, spec, artifacts)``, when the caller has it.

    Raises:
        ValueError: ``gids`` that are not one per encoded row.
    """
    result = transformed if transformed is not None else transform(batch, spec, artifacts)
    rows = batch
    if result.quarantined.num_rows:
        good = np.ones(batch.num_rows, dtype=bool)
        good[result.quarantined.column("_row").to_numpy()] = False
        rows = batch.filter(pa.array(good))
    if gids is None:
        gids = plan.gids(result.encoded.column(spec.key))
    elif len(gids) != result.encoded.num_rows:
        raise ValueError(f"statistics: {len(gids)} gids for {result.encoded.num_rows} encoded rows")
    return statistics.add_batch(statistics.create(), rows, result.encoded, plan.split_indices(gids))


def statistics_result(statistics: SpecStatistics, accumulators: Iterable[bytes]) -> dict:
    """One ``kind: statistics`` result merging JSON accumulators (:meth:`SpecStatistics.to_json`)."""
    merged = statistics.merge(statistics.from_json(data, source=f"statistics accumulator {i}")
                              for i, data in enumerate(accumulators))
    out = _result("statistics", STATISTICS, {"path": "", "records": 0, "bytes": 0, "sha256": "",
                                            "index": ""}, documents=0)
    return {**out, "statistics": statistics.to_json(merged).decode("utf-8")}


def _route(batch: pa.RecordBatch, spec: FeatureSpec, artifacts: Artifacts | None,
           plan: ShardPlan) -> tuple[Routed, Transformed | None]:
    """The routed batch, and (document layout) the transform its examples came from."""
    if not is_packed(spec):
        result = encode(batch, spec, artifacts)
        keys = result.keys.cast(pa.string())  # Arrow all the way: no per-row Python
        examples = result.payloads
        quarantined = result.quarantined if result.quarantined.num_rows else None
        return Routed(_payload(plan.gids(keys), keys, examples), quarantined), result.transformed
    quarantined = None
    keys = batch.column(spec.key)
    if keys.null_count:  # no shard to send them to: quarantine (or raise) them here
        quarantined = transform(batch.filter(keys.is_null()), spec, artifacts).quarantined
        batch = batch.filter(keys.is_valid())
    gids = plan.gids(batch.column(spec.key))
    groups = split_by_gid(batch.append_column("_gid", pa.array(gids, pa.int32())), "_gid")
    rows = [(gid, to_ipc(part.drop_columns(["_gid"]))) for gid, part in groups]
    payload = _payload(np.array([g for g, _ in rows], np.int32), pa.array([""] * len(rows)),
                       pa.array([p for _, p in rows], pa.binary()))
    return Routed(payload, quarantined), None


def split_by_gid(batch: pa.RecordBatch, column: str = "gid") -> Iterator[tuple[int, pa.RecordBatch]]:
    """``(gid, rows of that gid)`` for each gid present, in gid order (input order within).

    Each part is a compact copy (``take``), not a slice: a pickled slice would carry its
    parent's whole buffers through the engine's shuffle.
    """
    if batch.num_rows == 0:
        return
    # Stable: rows keep their input order within a gid.
    order = pc.sort_indices(batch.column(column)).to_numpy()
    gids = batch.column(column).to_numpy(zero_copy_only=False)[order]
    starts = np.flatnonzero(np.diff(gids, prepend=gids[0] - 1))
    ends = np.append(starts[1:], len(gids))
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(gids[start]), batch.take(pa.array(order[start:end]))


def _attempt() -> str:
    # Unique per call: two attempts at the same shard never share (or clobber) a file.
    return uuid.uuid4().hex


def write_group(*, gid: int, batches: Iterable[pa.RecordBatch], staging_uri: str, plan: ShardPlan,
                spec: FeatureSpec, artifacts: Artifacts | None) -> list[dict]:
    """Write the shard ``gid`` from its payload rows, ordered by ``(key, payload)``.

    Returns:
        One result for the shard (``kind: shard``; ``documents``: input rows it holds;
        ``repeated_key``: the first key it holds twice, else None) and, for packed text, one
        for the rows the shard quarantined (``kind: quarantine``). Copies of a key always
        land in the same shard (the shard is a hash of the key) and next to each other
        (rows are ordered by key), so one compare per row finds them.
    """
    split, shard = plan.locate(gid)
    path = join(split_dir(split), f"shard-{shard:05d}-{_attempt()}.tfrecord")
    fs, root = resolve(staging_uri)
    target = to_uri(fs, join(root, path))
    if not is_packed(spec):
        counted = {"rows": 0, "last": None, "repeated": None}

        def records() -> Iterator[tuple]:
            for batch in batches:
                counted["rows"] += batch.num_rows
                keys = batch.column("key").cast(pa.string())
                if counted["repeated"] is None:
                    counted["repeated"] = _first_repeat(keys, counted["last"])
                counted["last"] = keys[-1].as_py() if len(keys) else counted["last"]
                yield binary_layout(batch.column("payload"))  # framed whole, no bytes per row

        info = write_shard_batches(path=target, batches=records(), root=staging_uri)
        return [_result("shard", gid, info.to_dict(), documents=counted["rows"], repeated_key=counted["repeated"])]
    rows = pa.concat_tables([from_ipc(p) for b in batches for p in b.column("payload").to_pylist()],
                            promote_options="permissive")
    rows = rows.sort_by(_row_order(spec)).combine_chunks()
    batch = rows.to_batches()[0] if rows.num_rows else pa.RecordBatch.from_pylist([], rows.schema)
    result = encode(batch, spec, artifacts)
    info = write_shard_batches(path=target, batches=[binary_layout(result.payloads)],
                               root=staging_uri)
    out = [_result("shard", gid, info.to_dict(), documents=result.documents,
                   repeated_key=_first_repeat(rows.column(spec.key).cast(pa.string()), None))]
    if result.quarantined.num_rows:
        out += write_quarantine(tables=[pa.Table.from_batches([result.quarantined])], gid=gid,
                                staging_uri=staging_uri, key=spec.key)
    return out


def _row_order(spec: FeatureSpec) -> list[tuple[str, str]]:
    """Packed rows sort by key, then by text, so even duplicate keys pack the same way."""
    _, text = spec.text_feature()
    return [(spec.key, "ascending"), (text.source, "ascending")]


def write_quarantine(*, tables: list[pa.Table], gid: int, staging_uri: str, key: str) -> list[dict]:
    """Write quarantined rows as one Parquet part, sorted by key, feature, reason and row.

    Returns:
        ``[]`` when there are no rows, else one result (``kind: quarantine``, ``records``:
        the rows).
    """
    table = pa.concat_tables(tables, promote_options="permissive") if tables else None
    if table is None or table.num_rows == 0:
        return []
    # Nulls sort last (Arrow's default): a row quarantined for a null key ends the part.
    table = table.sort_by([(key, "ascending"), ("_feature", "ascending"),
                           ("_reason", "ascending"), ("_row", "ascending")])
    buffer = io.BytesIO()
    # Fixed settings and no timestamps: the same rows give the same bytes.
    pq.write_table(table, buffer, compression="snappy", row_group_size=8192)
    data = buffer.getvalue()
    path = join(QUARANTINE_DIR, f"part-{gid + 1:05d}-{_attempt()}.parquet")
    fs, root = resolve(staging_uri)
    fs.makedirs(join(root, QUARANTINE_DIR), exist_ok=True)
    with fs.open(join(root, path), "wb") as handle:
        handle.write(data)
    return [_result("quarantine", gid, {"path": path, "records": table.num_rows, "bytes": len(data),
                                        "sha256": hashlib.sha256(data).hexdigest(), "index": ""},
                    documents=0)]


def _first_repeat(keys, previous: str | None) -> str | None:
    """The first of sorted ``keys`` equal to the key before it (``previous``: the one before
    the first), else None."""
    if len(keys) == 0:
        return None
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    before = pa.concat_arrays([pa.array([previous], pa.string()), keys.slice(0, len(keys) - 1)])
    same = pc.fill_null(pc.equal(keys, before), False)
    hit = pc.index(same, True).as_py()
    return None if hit < 0 else keys[hit].as_py()


def _result(kind: str, gid: int, info: dict, *, documents: int, repeated_key: str | None = None) -> dict:
    return {"kind": kind, "gid": gid, "path": info["path"], "records": info["records"],
            "bytes": info["bytes"], "sha256": info["sha256"], "index": info["index"],
            "documents": documents, "repeated_key": repeated_key, "statistics": None}
