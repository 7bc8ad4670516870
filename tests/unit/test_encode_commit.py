"""Encode's worker and driver halves without an engine: shard plan, task-atomic writes, commit.

Retries and speculative attempts are simulated the way an engine produces them: several
attempts write the same shard under their own names, and only the attempt the engine
reports is committed.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.accounting import ReconciliationError
from core.lake import Lake
from features.artifacts import static_artifacts
from features.spec import load_spec
from features.split import assign
from features.statistics import SpecStatistics
from pipelines.encode.commit import commit_encoded, discard
from pipelines.encode.shards import (
    ShardPlan,
    route,
    split_by_gid,
    statistics_result,
    write_group,
    write_quarantine,
)
from records.framing import iter_records
from records.inspect import verify
from records.uri import resolve
from records.writer import staging_uri_for

PLAN = ShardPlan({"train": 0.5, "eval": 0.5}, {"train": 2, "eval": 1})


@pytest.fixture(scope="module")
def spec():
    return load_spec(Path(__file__).resolve().parents[2] / "conf/features/posts.yaml")


def _batch(n: int, bad: tuple[int, ...] = ()) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "doc_id": [f"doc-{i:03d}" for i in range(n)], "text": [f"post {i}" for i in range(n)],
        "topic": ["gardening" if i in bad else "nlp" for i in range(n)], "length": list(range(n))})


def _attempt(staging: str, batch: pa.RecordBatch, spec) -> list[dict]:
    """One attempt of every write task: what an engine's workers do for one input batch."""
    statistics = SpecStatistics(spec, list(PLAN.shards))
    routed = route(batch, spec, None, PLAN, statistics)
    results = [statistics_result(statistics, [statistics.to_json(routed.statistics)])]
    for gid, part in split_by_gid(routed.payload):
        ordered = pa.Table.from_batches([part]).sort_by([("key", "ascending"), ("payload", "ascending")])
        results += write_group(gid=gid, batches=ordered.to_batches(), staging_uri=staging, plan=PLAN,
                               spec=spec, artifacts=None)
    if routed.quarantined is not None:
        results += write_quarantine(tables=[pa.Table.from_batches([routed.quarantined])], gid=-1,
                                    staging_uri=staging, key=spec.key)
    return results


def _commit(lake, staging, results, rows_in, spec):
    return commit_encoded(lake=lake, staging_uri=staging, plan=PLAN, results=results,
                          rows_in=rows_in, spec=spec, artifacts=static_artifacts(spec),
                          dataset="posts", version="1")


def _tree(uri: str) -> dict[str, bytes]:
    root = Path(resolve(uri)[1])
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_plan_numbers_shards_as_features_split_assigns_them():
    keys = [f"k{i}" for i in range(200)]
    gids = PLAN.gids(pa.array(keys)).tolist()
    for key, gid in zip(keys, gids, strict=True):
        assert PLAN.locate(gid) == assign(key, PLAN.splits, PLAN.shards)
    assert set(gids) == {0, 1, 2} and PLAN.total == 3
    with pytest.raises(ValueError, match="outside"):
        PLAN.locate(3)
    with pytest.raises(ValueError, match="same order"):
        ShardPlan({"train": 1.0}, {"eval": 1})


def test_a_retried_and_a_speculative_attempt_are_committed_once(tmp_path, spec):
    batch = _batch(40)
    clean_lake = Lake(str(tmp_path / "clean"))
    clean_staging = staging_uri_for(clean_lake.records("posts", "1"))
    clean = _commit(clean_lake, clean_staging, _attempt(clean_staging, batch, spec), 40, spec)

    lake = Lake(str(tmp_path / "retried"))
    staging = staging_uri_for(lake.records("posts", "1"))
    _attempt(staging, batch, spec)                      # attempt 0: failed after writing
    reported = _attempt(staging, batch, spec)          # attempt 1: the one the engine reports
    _attempt(staging, batch, spec)                      # a speculative copy that lost the race
    crashed = Path(resolve(staging)[1]) / "split=train" / "shard-00000-crashed.tfrecord"
    crashed.write_bytes(b"half a record")               # an attempt killed mid-write
    result = _commit(lake, staging, reported, 40, spec)

    assert (result.documents, result.quarantined, sum(result.records.values())) == (40, 0, 40)
    assert verify(result.uri) == 0
    files = _tree(result.uri)
    assert sorted(files) == sorted(["_SUCCESS", "manifest.json", "statistics.json"] + [
        f"split={s}/part-{i:05d}-of-{n:05d}.tfrecord{x}" for s, n in (("eval", 1), ("train", 2))
        for i in range(n) for x in ("", ".idx")])
    # Byte for byte what a run without retries commits.
    assert {k: v for k, v in files.items() if k.endswith(".tfrecord")} == \
           {k: v for k, v in _tree(clean.uri).items() if k.endswith(".tfrecord")}
    records = [r for k in files if k.endswith(".tfrecord")
               for r in iter_records(str(Path(resolve(result.uri)[1]) / k))]
    assert len(records) == len(set(records)) == 40
    assert not list(Path(resolve(lake.root)[1], "records", "posts").glob("_staging-*"))


def test_two_attempts_reported_for_one_shard_are_refused(tmp_path, spec):
    lake = Lake(str(tmp_path))
    staging = staging_uri_for(lake.records("posts", "1"))
    doubled = _attempt(staging, _batch(10), spec) + _attempt(staging, _batch(10), spec)
    with pytest.raises(ReconciliationError, match="reported by two attempts"):
        _commit(lake, staging, doubled, 20, spec)
    discard(staging)
    assert not Path(resolve(lake.records("posts", "1"))[1]).exists()


def test_counts_that_do_not_add_up_commit_nothing(tmp_path, spec):
    lake = Lake(str(tmp_path))
    staging = staging_uri_for(lake.records("posts", "1"))
    results = _attempt(staging, _batch(10), spec)
    with pytest.raises(ReconciliationError, match=r"rows in 11 != encoded 10 \+ quarantined 0 \(\+1"):
        _commit(lake, staging, results, 11, spec)
    discard(staging)
    assert not list(Path(resolve(lake.root)[1]).rglob("*.tfrecord"))


def test_quarantined_rows_are_committed_inside_the_version(tmp_path, spec):
    lenient = spec.model_copy(update={"on_error": "quarantine"})
    lake = Lake(str(tmp_path))
    staging = staging_uri_for(lake.records("posts", "1"))
    _attempt(staging, _batch(12, bad=(3, 7)), lenient)  # a retried attempt's quarantine part too
    result = _commit(lake, staging, _attempt(staging, _batch(12, bad=(3, 7)), lenient), 12, lenient)
    assert (result.documents, result.quarantined) == (10, 2)
    part = Path(resolve(result.uri)[1]) / "quarantine" / "part-00000-of-00001.parquet"
    assert sorted(p.name for p in part.parent.iterdir()) == [part.name]
    rows = pq.read_table(part).to_pylist()
    assert [(r["doc_id"], r["_feature"]) for r in rows] == [("doc-003", "topic"), ("doc-007", "topic")]
    assert "'gardening' is not in the closed vocabulary" in rows[0]["_reason"]
    assert result.artifacts["quarantine.00000"] == f"{result.uri}/quarantine/part-00000-of-00001.parquet"


@pytest.mark.parametrize("repeat", [[7], [3, 3, 19]])
def test_a_key_twice_in_a_version_is_refused(tmp_path, spec, repeat):
    batch = _batch(24)
    ids = batch.column("doc_id").to_pylist() + [f"doc-{i:03d}" for i in repeat]  # a document again
    rows = pa.RecordBatch.from_pydict({
        "doc_id": ids, "text": [f"copy {i}" for i in range(len(ids))], "topic": ["nlp"] * len(ids),
        "length": list(range(len(ids)))})
    lake = Lake(str(tmp_path))
    staging = staging_uri_for(lake.records("posts", "1"))
    results = _attempt(staging, rows, spec)
    reported = {r["repeated_key"] for r in results if r.get("repeated_key")}
    # Each shard reports its first repeated key (in key order); copies share their key's shard.
    assert f"doc-{min(repeat):03d}" in reported and reported <= {f"doc-{i:03d}" for i in repeat}
    with pytest.raises(ReconciliationError, match=r"doc_id 'doc-0\d\d' appears more than once"):
        _commit(lake, staging, results, len(ids), spec)
    assert not Path(resolve(lake.records("posts", "1"))[1]).exists()  # nothing committed


def test_distinct_keys_report_no_repeat(tmp_path, spec):
    lake = Lake(str(tmp_path))
    staging = staging_uri_for(lake.records("posts", "1"))
    assert all(r.get("repeated_key") is None for r in _attempt(staging, _batch(30), spec))
