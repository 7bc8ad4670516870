"""``shardforge lake fsck``: what killed commits leave, metastore/file mismatches, and the repair."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.lake import Lake
from shardforge.cli import main
from shardforge.lake_fsck import repair, scan_files, scan_metastore

pytestmark = pytest.mark.integration


def _leftovers(root: Path) -> dict[str, Path]:
    """What a kill -9 at each commit step leaves behind, plus one committed dataset."""
    made = {
        "staging": root / "records/posts/_staging-v=1-0a1b", "old": root / "records/posts/_old-v=1-2c3d",
        "partition staging": root / "warehouse/shardforge.db/clean_images/_staging-dt=2026-11-01-4e5f",
        "uncommitted": root / "records/posts/v=2",
    }
    for folder in made.values():
        folder.mkdir(parents=True)
        (folder / "part-00000.bin").write_bytes(b"x")
    committed = root / "records/posts/v=1"
    committed.mkdir(parents=True)
    (committed / "_SUCCESS").write_bytes(b"")
    made["committed"] = committed
    return made


def test_fsck_reports_then_repairs_what_killed_commits_left(tmp_path, capsys):
    made = _leftovers(tmp_path / "lake")
    common = ["--lake", str(tmp_path / "lake"), "--no-metastore"]
    assert main(["lake", "fsck", *common]) == 1
    out = capsys.readouterr().out
    for name in ("staging", "old", "partition staging"):
        assert f"leftover           file://{made[name]}" in out
    assert f"uncommitted        file://{made['uncommitted']}" in out
    assert f"file://{made['committed']} " not in out
    assert main(["lake", "fsck", "--repair", *common]) == 0
    assert [p for p in made.values() if p.exists()] == [made["committed"]]
    assert main(["lake", "fsck", *common]) == 0
    assert "is clean" in capsys.readouterr().err


def test_every_writer_sweeps_leftovers_once_it_holds_the_lock(tmp_path, capsys):
    made = _leftovers(tmp_path / "lake")
    assert main(["sample", "--lake", str(tmp_path / "lake"), "--posts", "10", "--images", "6"]) == 0
    assert not made["staging"].exists() and not made["old"].exists()
    assert made["uncommitted"].exists()  # not a leftover: fsck --repair decides about it
    assert "left by an interrupted commit" in capsys.readouterr().err


def test_metastore_and_files_compared_and_repaired(spark, spark_lake):
    db = "fsck_db"
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {db} LOCATION '{spark_lake.database(db)}'")
    spark.sql(f"CREATE TABLE {db}.t (x int) PARTITIONED BY (dt string) STORED AS PARQUET")
    for dt in ("2026-11-01", "2026-11-02"):
        spark.sql(f"INSERT INTO {db}.t PARTITION (dt='{dt}') VALUES (1)")
    lake = Lake(spark_lake.root)
    fs = lake.fs
    # A partition folder the metastore never heard of, and a listed partition whose folder went.
    fs.cp(lake.fs_path(lake.table(db, "t", "2026-11-01")), lake.fs_path(lake.table(db, "t", "2026-11-03")),
          recursive=True)
    fs.rm(lake.fs_path(lake.table(db, "t", "2026-11-02")), recursive=True)
    (Path(lake.fs_path(lake.table(db, "t"))) / "dt=not-a-date").mkdir()  # never reaches SQL
    found = scan_metastore(lake, spark, db)
    assert {(f.kind, f.dt) for f in found} == {("orphan_partition", "2026-11-03"),
                                               ("missing_partition", "2026-11-02")}
    assert all(f.kind != "leftover" for f in scan_files(lake))
    repair(lake, found, spark)
    assert scan_metastore(lake, spark, db) == []
    spark.catalog.refreshTable(f"{db}.t")
    assert sorted(r.dt for r in spark.table(f"{db}.t").collect()) == ["2026-11-01", "2026-11-03"]


def test_tables_partitioned_by_more_than_dt_are_compared_too(spark, spark_lake):
    # quarantine-like: PARTITIONED BY (stage, dt), folders stage=…/dt=…
    db = "fsck_stage_db"
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {db} LOCATION '{spark_lake.database(db)}'")
    spark.sql(f"CREATE TABLE {db}.q (x int) PARTITIONED BY (stage string, dt string) STORED AS PARQUET")
    for stage in ("ingest_feeds", "clean_paragraphs"):
        spark.sql(f"INSERT INTO {db}.q PARTITION (stage='{stage}', dt='2026-11-01') VALUES (1)")
    lake = Lake(spark_lake.root)
    assert scan_metastore(lake, spark, db) == []  # listed as stage=…/dt=…, on disk the same
    table = Path(lake.fs_path(lake.table(db, "q")))
    (table / "stage=ingest_feeds/dt=2026-11-01").rename(table / "stage=ingest_feeds/dt=2026-11-02")
    found = scan_metastore(lake, spark, db)
    assert {(f.kind, f.partition) for f in found} == {
        ("orphan_partition", "stage=ingest_feeds/dt=2026-11-02"),
        ("missing_partition", "stage=ingest_feeds/dt=2026-11-01")}
    repair(lake, found, spark)
    assert scan_metastore(lake, spark, db) == []
