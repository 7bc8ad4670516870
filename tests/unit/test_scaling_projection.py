"""benchmarks/scaling.py's summary and verdict, and the YARN projection built from its rates."""

from __future__ import annotations

import pytest

from benchmarks.scaling import check, summarize
from benchmarks.scaling_projection import Assumptions, Measured, measured_from, project, render

MiB = 1024 * 1024


def _run(posts: int, seconds: float, peer: float, **extra) -> dict:
    return {"posts": posts, "rows_out": posts // 2, "seconds": seconds, "peer_seconds": peer, "cores": 2,
            "input_bytes": posts * 230, "raw_bytes": posts * 230, "shuffle_partitions": 4, "load": 1.0,
            "shuffle_write_bytes": posts * 100, "peak_heap_bytes": 900 * MiB,
            "peak_python_rss_bytes": 300 * MiB, "steps_s": {"ingest": seconds / 4, "documents": seconds / 10},
            "table_bytes": {"documents": posts * 60, "dedup_index": posts * 20}, **extra}


def test_summarize_takes_the_median_and_keeps_the_spread():
    summary = summarize([_run(1000, 10.0, 5.0), _run(1000, 14.0, 6.0), _run(1000, 12.0, 4.0)])
    assert (summary["seconds"], summary["seconds_min"], summary["seconds_max"]) == (12.0, 10.0, 14.0)
    assert summary["posts_per_s"] == 83 and summary["posts_per_s_per_core"] == 42
    assert summary["ratio_ours_over_peer"] == pytest.approx(5.0 / 12.0, abs=1e-3)
    assert summary["steps_s"] == {"ingest": 3.0, "documents": 1.2}


@pytest.mark.parametrize(("big_seconds", "verdict"), [(80.0, "ok"), (110.0, "FALLS more than 20%")])
def test_the_verdict_compares_the_largest_size_with_the_smallest(big_seconds, verdict):
    table = {1000: {p: summarize([_run(1000, 10.0, 5.0)]) for p in ("clean", "encode")},
             8000: {p: summarize([_run(8000, big_seconds, 40.0)]) for p in ("clean", "encode")}}
    lines = check(table, 0.2)
    assert len(lines) == 4 and lines[0].endswith(verdict)  # clean posts/s


MEASURED = Measured(posts=2_000_000, cores=2, clean_per_core_s=10_000, encode_per_core_s=40_000,
                    rebuild_per_core_s=200_000, kept=0.5, raw_bytes_per_post=230,
                    clean_shuffle_per_post=300, encode_shuffle_per_doc=500,
                    documents_bytes_per_doc=120, index_bytes_per_doc=40,
                    peak_heap_mib=1500, peak_python_rss_mib=400)


def test_projection_arithmetic():
    plan = project(MEASURED, Assumptions(posts_per_day=1_000_000_000, window_h=4.0, executor_cores=4,
                                         efficiency=0.5, history_days=10))
    # clean 1e9 / 5k = 200k core-s, encode 5e8 / 20k = 25k, rebuild 5e8 / 100k = 5k a day of history
    assert plan["core_hours"]["clean"] == pytest.approx(200_000 / 3600)
    assert plan["core_hours"]["documents_rebuild_day_10"] == pytest.approx(50_000 / 3600)
    assert plan["cores"] == 16 and plan["executors"] == 4  # 230k core-s / 14,400 s = 15.97
    assert plan["wall_h"]["day_1"] == pytest.approx(230_000 / 16 / 3600)
    assert plan["wall_h"]["day_10"] == pytest.approx(275_000 / 16 / 3600)
    assert plan["shuffle_gib_per_day"] == pytest.approx((3e11 + 2.5e11) / 1024 ** 3)
    assert plan["documents_gib"]["day_10"] == pytest.approx(10 * 5e8 * 120 / 1024 ** 3)
    assert plan["shuffle_partitions"] >= 1_000_000_000 * 230 // (128 * MiB)
    assert "| executors x cores | 4 x 4 = 16 cores |" in render(plan)


def test_measured_from_reads_the_largest_size():
    clean = summarize([_run(2000, 10.0, 5.0)])
    encode = summarize([_run(1000, 2.0, 1.0)])
    result = {"results": {"1000": {"clean": clean, "encode": encode},
                          "2000": {"clean": clean, "encode": encode}}}
    measured = measured_from(result)
    assert measured.posts == 2000 and measured.kept == 0.5
    assert measured.clean_per_core_s == 100 and measured.rebuild_per_core_s == 1000 / 1.0 / 2
    assert measured.raw_bytes_per_post == 230 and measured.documents_bytes_per_doc == 120
