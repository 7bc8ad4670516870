"""kill -9 at stage boundaries and inside every writer, then a re-run: nothing lost, nothing left.

The kills are real: ``SHARDFORGE_FAULT`` (see :mod:`records.faults`) makes the process
SIGKILL its own process group at the named point — the Spark JVM and Beam's workers die with
it, no ``finally`` runs, the lake's lock stays behind. The harness runs each command as a
subprocess in its own session, checks that it died of SIGKILL, runs the same command again
and compares the lake with the one an uninterrupted ``shardforge run`` made (shared by every
case, restored before each): the same rows in every Hive table, byte-identical files under
``records/`` and ``artifacts/``, and nothing left behind (``shardforge lake fsck``; with the
metastore for the Spark cases).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.lake import Lake
from shardforge.lake_fsck import scan_files, sweep_leftovers

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Not a table of the data: one audit row per job run, appended by every re-run.
AUDIT_TABLES = {"job_runs"}


def _env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDFORGE_FAULT")}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    if fault:
        env["SHARDFORGE_FAULT"] = fault
    return env


def _shardforge(lake: Path, config: Path, *argv: str, fault: str | None = None,
                timeout: float = 1800) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "shardforge.cli", *argv, "--config", str(config),
           "--lake", str(lake)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(fault), cwd=lake.parent, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def _table_rows(lake: Path) -> dict[str, str]:
    """Table -> sha256 of its sorted rows (partition columns included; hidden files not)."""
    import pyarrow.dataset as ds

    out = {}
    for table in sorted((lake / "warehouse/shardforge.db").iterdir()):
        if not table.is_dir() or table.name in AUDIT_TABLES:
            continue
        rows = ds.dataset(table, format="parquet", partitioning="hive").to_table().to_pylist()
        out[table.name] = hashlib.sha256(
            "\n".join(sorted(repr(sorted(r.items())) for r in rows)).encode()).hexdigest()
    return out


def _files(lake: Path) -> dict[str, str]:
    """sha256 of every file under records/ and artifacts/ (path relative to the lake)."""
    return {str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest()
            for top in ("records", "artifacts") for p in sorted((lake / top).rglob("*"))
            if p.is_file()}


def _leftovers(lake: Path) -> list[str]:
    """What fsck finds, and any engine's temporary folder (Spark's, Beam's) in the lake."""
    found = [f.line() for f in scan_files(Lake(str(lake)))]
    for top in ("warehouse", "records", "artifacts"):
        found += [str(p) for p in (lake / top).rglob("*")
                  if p.name.startswith((".spark-staging", "_temporary", ".temp-beam"))]
    return found


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """One uninterrupted ``shardforge run`` on a tiny corpus; what every case must get back."""
    home = tmp_path_factory.mktemp("fault")
    config = home / "small.yaml"
    text = (ROOT / "conf/sample.yaml").read_text(encoding="utf-8")
    text = text.replace("posts: 3000", "posts: 120").replace("images: 200", "images: 12")
    text = text.replace("feature_spec: features/posts.yaml",
                        f"feature_spec: {ROOT / 'conf/features/posts.yaml'}")
    text = text.replace("spec: features/images.yaml", f"spec: {ROOT / 'conf/features/images.yaml'}")
    config.write_text(text[:text.index("\nmodels:\n")] + "\nmodels: {}\n", encoding="utf-8")
    lake = home / "lake"
    done = _shardforge(lake, config, "run")
    assert done.returncode == 0, done.stdout[-3000:]
    snapshot = home / "snapshot"
    shutil.copytree(lake, snapshot, symlinks=True)
    return {"lake": lake, "config": config, "snapshot": snapshot, "tables": _table_rows(lake),
            "files": _files(lake)}


def _restore(baseline) -> Path:
    """The baseline lake back at its own path (the metastore holds absolute locations)."""
    lake = baseline["lake"]
    shutil.rmtree(lake)
    shutil.copytree(baseline["snapshot"], lake, symlinks=True)
    return lake


# (command, fault point). The n of a writer's points, counted per process (traced with
# SHARDFORGE_FAULT_TRACE): `images` writes one part per table (points 1-3), then commits its
# three tables one after the other, three points each (start; old partition moved aside;
# staging renamed in). `encode` commits: leftovers removed; shards named; artifacts saved;
# then records.writer's commit: start; old version moved aside; staging renamed in.
CASES = [
    (("images",), "inside:image_writer:2"),  # Beam workers: one part written
    (("images",), "inside:image_writer:5"),  # a partition moved aside, its new one not in
    (("images",), "inside:image_writer:9"),  # two tables committed, the third not
    (("images",), "after:images"),
    (("encode",), "inside:encode_commit:1"),
    (("encode",), "inside:encode_commit:3"),  # artifacts rewritten, the version not yet
    (("encode",), "inside:records_writer:2"),  # the old version aside, the new one not in
    (("encode",), "inside:records_writer:3"),  # the new version in, no _SUCCESS yet
    (("encode", "--dataset", "images"), "after:encode"),
    (("ingest",), "inside:spark_write:2"),  # raw_feeds written, its quarantine not
    (("clean",), "inside:spark_write:4"),
    (("run",), "after:explode_clean"),  # the stage runner's boundary: Spark -> the gates
]


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "fault"), CASES, ids=[f"{a[0]}-{f}" for a, f in CASES])
def test_kill_then_rerun_gives_the_same_lake(baseline, argv, fault):
    lake = _restore(baseline)
    killed = _shardforge(lake, baseline["config"], *argv, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]  # the point was reached
    assert (lake / "_system/lock.json").exists()  # the dead writer's lock stays behind

    again = _shardforge(lake, baseline["config"], *argv)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "taking over a stale lake lock" in again.stdout
    assert _table_rows(lake) == baseline["tables"]
    assert _files(lake) == baseline["files"]  # byte-identical shards, manifests, artifacts
    assert _leftovers(lake) == []
    if argv[0] in ("ingest", "clean", "run"):  # the metastore agrees with the folders
        fsck = _shardforge(lake, baseline["config"], "lake", "fsck")
        assert fsck.returncode == 0 and "is clean" in fsck.stdout, fsck.stdout[-3000:]


WRITER = """
import sys
from records.example_codec import encode_example
from records.spec import FixedLenFeature
from records.writer import DatasetWriter

with DatasetWriter(uri=sys.argv[1], dataset="toy", version="1", max_records_per_shard=5,
                   feature_spec={"x": FixedLenFeature((), "int64")}) as w:
    for i in range(23):
        w.write("train" if i % 4 else "eval", encode_example({"x": i}))
"""


# 6 shards closed (train: 17 records, eval: 6; 5 a shard), then the commit's 3 points (start;
# the committed v=1 moved aside; staging renamed to v=1, no _SUCCESS yet).
@pytest.mark.parametrize("n", range(1, 10))
def test_records_writer_killed_at_each_point_then_rewritten(tmp_path, n):
    lake = tmp_path / "lake"
    uri = (lake / "records/toy/v=1").as_uri()
    first = subprocess.run([sys.executable, "-c", WRITER, uri], env=_env(), capture_output=True)
    assert first.returncode == 0, first.stderr
    before = _files(lake)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, uri],
                            env=_env(f"inside:records_writer:{n}"), start_new_session=True)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert scan_files(Lake(str(lake)))  # a staging, old or uncommitted folder is left
    # What the next lake writer does first, holding the lock: the committed version is
    # back, even when the kill came between the commit's two renames (n == 8).
    sweep_leftovers(Lake(str(lake)))
    committed = {p: h for p, h in before.items() if n != 9 or not p.endswith("_SUCCESS")}
    assert _files(lake) == committed
    rerun = subprocess.run([sys.executable, "-c", WRITER, uri], env=_env(), capture_output=True)
    assert rerun.returncode == 0, rerun.stderr
    assert _files(lake) == before and scan_files(Lake(str(lake))) == []
