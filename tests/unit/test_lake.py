"""The lake layout: one module builds every path, and nothing escapes the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.lake import Lake, LakePathError


@pytest.mark.parametrize("form", ["plain", "file"])
def test_local_roots_normalize_to_file_uris(tmp_path, form):
    root = str(tmp_path) if form == "plain" else tmp_path.as_uri()
    lake = Lake(root)
    assert lake.root == tmp_path.resolve().as_uri()
    assert lake.is_local


@pytest.mark.parametrize(
    ("call", "suffix"),
    [
        (lambda lk: lk.raw("feeds", "2026-11-01"), "/raw/feeds/dt=2026-11-01"),
        (lambda lk: lk.table("shardforge", "clean_posts", "2026-11-01"),
         "/warehouse/shardforge.db/clean_posts/dt=2026-11-01"),
        (lambda lk: lk.records("posts", "1", "train"), "/records/posts/v=1/split=train"),
        (lambda lk: lk.artifacts("posts", "1"), "/artifacts/posts/v=1"),
        (lambda lk: lk.model_run("lm", "run-1"), "/models/lm/run-1"),
        (lambda lk: lk.reports("run-1"), "/reports/run-1"),
    ],
)
def test_layout_matches_design(call, suffix):
    lake = Lake("hdfs://namenode:8020/lake")
    assert call(lake) == "hdfs://namenode:8020/lake" + suffix


@pytest.mark.parametrize(
    "call",
    [
        lambda lk: lk.raw("../etc"),
        lambda lk: lk.raw("feeds/../../x"),
        lambda lk: lk.raw("feeds", "2026-02-30"),
        lambda lk: lk.records("posts", "..", "train"),
        lambda lk: lk.model_run("lm", "a/b"),
    ],
)
def test_bad_segments_are_refused(tmp_path, call):
    with pytest.raises(LakePathError):
        call(Lake(str(tmp_path)))


def test_paths_outside_the_root_are_refused(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    inside = lake.raw("feeds")
    assert lake.check_inside(inside) == inside
    for outside in (str(tmp_path), str(tmp_path / "lake" / ".." / "other"), (tmp_path / "lakeX").as_uri()):
        with pytest.raises(LakePathError, match="outside the lake root"):
            lake.check_inside(outside)


def test_unsupported_scheme_is_refused():
    with pytest.raises(LakePathError, match="not supported"):
        Lake("s3://bucket/lake")


def test_raw_partitions_lists_only_dt_folders(tmp_path):
    lake = Lake(str(tmp_path))
    for name in ("dt=2026-11-02", "dt=2026-11-01", "notes", "dt=bad"):
        (tmp_path / "raw" / "feeds" / name).mkdir(parents=True)
    (tmp_path / "raw" / "feeds" / "dt=2026-11-03").write_text("a file, not a partition")
    assert lake.raw_partitions("feeds") == ["2026-11-01", "2026-11-02"]
    assert lake.raw_partitions("images") == []


def test_fs_path_and_local_path_agree(tmp_path):
    lake = Lake(str(tmp_path))
    uri = lake.raw("feeds", "2026-11-01")
    assert Path(lake.fs_path(uri)) == lake.local_path(uri) == tmp_path / "raw/feeds/dt=2026-11-01"
