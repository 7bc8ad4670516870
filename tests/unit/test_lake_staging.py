"""``Lake.table_staging``: a hidden sibling of a table partition, checked like every segment."""

from __future__ import annotations

import pytest

from core.lake import Lake, LakePathError


def test_table_staging_is_a_hidden_sibling_of_the_partition():
    lake = Lake("hdfs://namenode:8020/lake")
    assert lake.table_staging("shardforge", "clean_images", "2026-11-01", "ab12") == (
        "hdfs://namenode:8020/lake/warehouse/shardforge.db/clean_images/_staging-dt=2026-11-01-ab12")


@pytest.mark.parametrize(("dt", "token"), [("2026-13-01", "ab"), ("2026-11-01", "../x"),
                                           ("2026-11-01", "")])
def test_table_staging_rejects_bad_segments(dt, token):
    with pytest.raises(LakePathError):
        Lake("/tmp/lake").table_staging("shardforge", "clean_images", dt, token)
