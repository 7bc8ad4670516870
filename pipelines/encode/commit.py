"""The driver half of encode, shared by the Beam pipeline and the Spark job: check, then commit.

Engine-neutral (no Beam, no Spark). After the engine ran :mod:`pipelines.encode.shards`
on its workers, the driver holds one result per file the *successful* attempts wrote (Beam's
exactly-once output, Spark's collected task results). :func:`commit_encoded` then:

1. refuses two results for one shard (an engine that reported two attempts) and deletes
   every file in staging that no result names: what failed, retried or speculative
   attempts left behind;
2. writes an empty shard for each shard no key hashed to, so ``part-i-of-N`` is complete,
   and names shards ``part-i-of-N`` (:func:`records.writer.finalize_shards`) and
   quarantine parts ``quarantine/part-i-of-N.parquet``;
3. reconciles: rows in (Parquet footers) = rows encoded + rows quarantined, and the rows the
   statistics counted = the rows encoded, split by split, else raises
   :class:`~core.accounting.ReconciliationError` and commits nothing;
4. saves the artifacts (``artifacts/<dataset>/v=<version>/``), writes ``statistics.json``
   (the merged ``kind: statistics`` results, :class:`~features.statistics.SpecStatistics`)
   and the manifest (decode spec from ``decode_spec(spec, artifacts)``, artifacts,
   statistics and quarantine parts by URI) and commits the version folder atomically
   (:func:`records.writer.commit_staged`).

An attempt that is still running when the driver commits (a speculative copy the engine
has not killed yet) can only write under the staging name, which no longer exists once
renamed: it may leave a stray ``_staging-*`` folder beside the version (hidden, never
read, removed with the dataset), never a file inside the committed one.

The quarantine lives *inside* the version folder (``quarantine/``, beside ``split=*``):
it is committed (or discarded) in the same rename as the shards it accounts for, and a
re-run replaces both together; the manifest names its parts under ``artifacts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.accounting import ReconciliationError
from features.artifacts import Artifacts, save_artifacts
from features.exports import decode_spec
from features.spec import FeatureSpec
from features.statistics import STATISTICS_NAME, SpecStatistics, statistics_json
from pipelines.encode.shards import QUARANTINE_DIR, ShardPlan
from records.faults import fault_point
from records.manifest import Manifest, ShardInfo, write_manifest
from records.uri import join, resolve, to_uri
from records.writer import commit_staged, finalize_shards, split_dir, write_shard

__all__ = ["EncodeResult", "commit_encoded", "count_rows", "discard"]


@dataclass(frozen=True)
class EncodeResult:
    """What an encode run committed.

    Attributes:
        uri: the dataset version folder.
        rows_in: input rows (Parquet footers).
        records: split -> records written (examples; blocks for packed text).
        shards: split -> shard files.
        documents: input rows encoded into the records.
        quarantined: input rows in ``quarantine/``.
        artifacts: the manifest's ``artifacts`` (feature artifacts, quarantine parts,
            ``statistics``: the version's ``statistics.json``).
    """

    uri: str
    rows_in: int
    records: dict[str, int]
    shards: dict[str, int]
    documents: int
    quarantined: int
    artifacts: dict[str, str]


def count_rows(patterns: Sequence[str]) -> int:
    """Rows in the Parquet files the globs match, from the footers only.

    Raises:
        FileNotFoundError: no pattern, or one that matches no file (an encode of nothing
            is a mistake: a dataset of empty shards would look like a result).
    """
    import pyarrow.parquet as pq

    if not patterns:
        raise FileNotFoundError("encode: no input partitions (is the corpus in the lake?)")
    total = 0
    for pattern in patterns:
        fs, path = resolve(pattern)
        files = sorted(fs.glob(path))
        if not files:
            raise FileNotFoundError(f"encode input {pattern} matches no Parquet file")
        for file in files:
            with fs.open(file, "rb") as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
    return total


def discard(staging_uri: str) -> None:
    """Remove a staging folder (a failed run leaves nothing behind)."""
    fs, path = resolve(staging_uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _chosen(results: Sequence[dict], plan: ShardPlan) -> tuple[dict[int, dict], dict[int, dict]]:
    shards: dict[int, dict] = {}
    quarantine: dict[int, dict] = {}
    for result in results:
        kind = result["kind"]
        if kind == "statistics":  # partial statistics of disjoint rows: merged by _statistics
            continue
        if kind not in ("shard", "quarantine"):
            raise ValueError(f"encode result of unknown kind {kind!r}: {result}")
        chosen = shards if kind == "shard" else quarantine
        gid = int(result["gid"])
        if gid in chosen:
            # One attempt per shard is the engines' promise; two means rows would be doubled.
            raise ReconciliationError(f"encode: {kind} {gid} was reported by two attempts "
                                      f"({chosen[gid]['path']}, {result['path']}); not committing")
        if kind == "shard":
            plan.locate(gid)  # raises for a gid outside the plan
        chosen[gid] = result
    return shards, quarantine


def _remove_leftovers(fs, root: str, keep: set[str]) -> int:
    """Delete shard and quarantine files of attempts no result names; returns how many."""
    removed = 0
    for folder in fs.ls(root, detail=False):
        name = folder.rstrip("/").rsplit("/", 1)[-1]
        if not (name.startswith("split=") or name == QUARANTINE_DIR):
            continue
        for path in fs.ls(folder, detail=False):
            relative = f"{name}/{path.rstrip('/').rsplit('/', 1)[-1]}"
            if relative not in keep:
                fs.rm(path, recursive=True)
                removed += 1
    return removed


def _statistics(results: Sequence[dict], spec: FeatureSpec, plan: ShardPlan,
                artifacts: Artifacts, documents: dict[str, int], what: str) -> bytes:
    """``statistics.json`` of the ``kind: statistics`` results, checked against the shards.

    Raises:
        ReconciliationError: a split whose statistics count other rows than its shards hold.
    """
    statistics = SpecStatistics(spec, list(plan.shards))
    merged = statistics.merge(
        statistics.from_json(r["statistics"].encode("utf-8"), source=f"{what}: statistics result {i}")
        for i, r in enumerate(r for r in results if r["kind"] == "statistics"))
    for split, rows in documents.items():
        if merged[split]["examples"] != rows:
            raise ReconciliationError(
                f"{what}: the statistics of split {split} count {merged[split]['examples']} rows, "
                f"its shards hold {rows}; not committing")
    return statistics_json(statistics.extract(merged, artifacts))


def _quarantine_parts(fs, root: str, parts: list[dict]) -> list[str]:
    """Rename quarantine parts to ``part-i-of-N.parquet`` in gid order; returns their paths."""
    names = []
    for i, part in enumerate(sorted(parts, key=lambda p: p["gid"])):
        name = join(QUARANTINE_DIR, f"part-{i:05d}-of-{len(parts):05d}.parquet")
        fs.mv(join(root, part["path"]), join(root, name))
        names.append(name)
    return names


def commit_encoded(*, lake, staging_uri: str, plan: ShardPlan, results: Sequence[dict], rows_in: int,
                   spec: FeatureSpec, artifacts: Artifacts, dataset: str, version: str,
                   config: dict | None = None, inputs: Sequence[str] = ()) -> EncodeResult:
    """Check the workers' results and commit ``lake.records(dataset, version)`` (module docstring).

    Args:
        lake: a :class:`core.lake.Lake` (artifacts and the final folder live there).
        staging_uri: where the workers wrote (:func:`records.writer.staging_uri_for`).
        plan: the splits and shards the workers used.
        results: one dict per file of the chosen attempts (``pipelines.encode.shards.RESULT_FIELDS``).
        rows_in: input rows, counted on the driver.

    Raises:
        ReconciliationError: two attempts reported for one shard, a key appears twice,
            rows in != rows encoded + rows quarantined, or the statistics of a split count
            other rows than its shards hold. Nothing is committed; the caller discards staging.
    """
    fs, root = resolve(staging_uri)
    shards, quarantine = _chosen(results, plan)
    keep = {r["path"] for r in [*shards.values(), *quarantine.values()]}
    keep |= {r["index"] for r in shards.values()}
    if fs.exists(root):
        _remove_leftovers(fs, root, keep)
    fault_point("inside:encode_commit")  # kill -9 tests: each step of the commit
    repeated = sorted((r["gid"], r["repeated_key"]) for r in shards.values() if r.get("repeated_key"))
    if repeated:
        gid, key = repeated[0]
        raise ReconciliationError(
            f"encode {dataset} v={version}: {spec.key} {key!r} appears more than once (shard gid {gid}; "
            f"{len(repeated)} shard(s) repeat a key): a version holds every document once")
    documents = sum(int(r["documents"]) for r in shards.values())
    quarantined = sum(int(r["records"]) for r in quarantine.values())
    if rows_in != documents + quarantined:
        raise ReconciliationError(
            f"encode {dataset} v={version}: rows in {rows_in} != encoded {documents} + "
            f"quarantined {quarantined} ({rows_in - documents - quarantined:+d} unaccounted)")
    infos: dict[str, list[ShardInfo]] = {split: [] for split in plan.shards}
    for gid in range(plan.total):
        split, shard = plan.locate(gid)
        if gid in shards:
            info = ShardInfo.from_dict(shards[gid])
        else:  # no key hashed here: an empty shard keeps part-i-of-N complete
            path = join(split_dir(split), f"shard-{shard:05d}-empty.tfrecord")
            info = write_shard(path=to_uri(fs, join(root, path)), records=[], root=staging_uri)
        infos[split].append(info)
    per_split = {split: 0 for split in plan.shards}
    for gid, result in shards.items():
        per_split[plan.locate(gid)[0]] += int(result["documents"])
    stats = _statistics(results, spec, plan, artifacts, per_split, f"encode {dataset} v={version}") \
        if plan.statistics else None
    splits = finalize_shards(root_uri=staging_uri, splits=infos)
    parts = _quarantine_parts(fs, root, list(quarantine.values()))
    fault_point("inside:encode_commit")
    final_uri = lake.records(dataset, version)
    saved = save_artifacts(artifacts, lake, dataset, version)
    fault_point("inside:encode_commit")
    named = {**saved, **{f"quarantine.{i:05d}": f"{final_uri}/{p}" for i, p in enumerate(parts)}}
    if stats is not None:
        with fs.open(join(root, STATISTICS_NAME), "wb") as handle:
            handle.write(stats)
        named["statistics"] = f"{final_uri}/{STATISTICS_NAME}"
    write_manifest(staging_uri, Manifest(
        dataset=dataset, version=str(version), compression=None,
        feature_spec={k: v.to_dict() for k, v in decode_spec(spec, artifacts).items()},
        splits=splits, config=dict(config or {}), inputs=list(inputs), artifacts=named))
    commit_staged(staging_uri=staging_uri, final_uri=final_uri)
    return EncodeResult(final_uri, rows_in, {s: i.records for s, i in splits.items()},
                        {s: len(i.shards) for s, i in splits.items()}, documents, quarantined,
                        named)

