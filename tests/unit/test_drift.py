"""The drift gate: L-infinity and Jensen–Shannon, the previous version, and the gate's verdicts.

Dataset versions are written in process by the encode's own worker and driver halves
(:mod:`statistics_testlib`), into a temporary lake.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from statistics_testlib import TOPICS, encode_version, posts_config, posts_rows

from core.lake import Lake
from features.statistics_blocks import NumericBlock
from pipelines.validate.drift import (
    DriftFailed,
    jensen_shannon,
    l_infinity,
    previous_version,
    run_drift_gate,
)
from shardforge.pipeline import stage_named
from shardforge.stages import StageContext


def _numeric(values) -> dict:
    return NumericBlock().add(np.asarray(values, np.float64)).summary()


def test_l_infinity_is_the_largest_change_of_a_share():
    assert l_infinity([["a", 3], ["b", 1]], [["a", 1], ["b", 3]]) == (0.5, "a")
    assert l_infinity([["a", 5]], [["a", 50]]) == (0.0, None)  # counts differ, shares do not
    assert l_infinity([["a", 1]], [["b", 1]]) == (1.0, "a")
    distance, at = l_infinity([["a", 6], ["b", 4]], [["a", 5], ["b", 4], ["c", 1]])
    assert at == "c" and distance == pytest.approx(0.1)


def test_jensen_shannon_over_the_baseline_quantile_bins():
    rng = np.random.default_rng(0)
    base = _numeric(rng.normal(100, 10, 5000))
    assert jensen_shannon(base, base, 10) == 0.0
    assert jensen_shannon(base, _numeric(rng.normal(100, 10, 5000)), 10) < 0.01  # noise
    shifted = jensen_shannon(base, _numeric(rng.normal(110, 10, 5000)), 10)  # one sd
    assert 0.1 < shifted < 0.3
    assert jensen_shannon(base, _numeric(rng.normal(1e4, 10, 5000)), 10) == 1.0  # disjoint
    assert jensen_shannon(base, _numeric([*rng.normal(100, 10, 4500), *[np.nan] * 500]), 10) > 0.02
    constant = _numeric([3072] * 100)  # every image the same size: one bucket, one bin
    assert jensen_shannon(constant, constant, 10) == 0.0
    assert jensen_shannon(constant, _numeric([4096] * 100), 10) == 1.0


def test_the_previous_version_is_the_latest_committed_one_before(tmp_path):
    lake = Lake(str(tmp_path))
    for version, committed in (("1", True), ("2", True), ("3", False), ("10", True), ("x", True)):
        folder = lake.local_path(lake.records("posts", version))
        folder.mkdir(parents=True)
        if committed:
            (folder / "_SUCCESS").write_bytes(b"")
    assert previous_version(lake, "posts", "11") == "10"  # 10 after 9 after 2: natural order
    assert previous_version(lake, "posts", "10") == "2"   # v=3 was never committed
    assert previous_version(lake, "posts", "2") == "1"
    assert previous_version(lake, "posts", "1") is None
    assert previous_version(lake, "images", "1") is None  # no dataset folder at all


def test_the_first_version_passes_with_no_baseline(tmp_path):
    cfg = posts_config(tmp_path, "1")
    encode_version(cfg, posts_rows(1000))
    report = run_drift_gate(cfg, Lake(cfg.lake.root), dataset="posts", run_id="r1")
    assert report.baseline is None and not report.failures
    assert "v=1 is the first committed version: no baseline" in report.notes
    assert {c.comparison for c in report.checks} == {"eval vs train (v=1)"}  # split skew only
    assert {(c.feature, c.metric) for c in report.checks} == {
        ("input_ids", "linf"), ("input_ids", "js"), ("topic", "linf"), ("length", "js")}
    written = json.loads(Path(Lake(cfg.lake.root).local_path(report.uri)).read_text())
    assert written["passed"] and written["summary"] == report.summary()


def test_a_shifted_category_fails_the_gate_naming_feature_distance_threshold_and_versions(tmp_path):
    encode_version(posts_config(tmp_path, "1"), posts_rows(1500, seed=1))
    cfg = posts_config(tmp_path, "2")
    encode_version(cfg, posts_rows(1500, seed=2, topics=["nlp"] * 8 + TOPICS))  # nlp: 20% → ~69%
    ctx = StageContext(cfg, Lake(cfg.lake.root), "run-2")
    with pytest.raises(DriftFailed) as failed:
        stage_named("drift_dataset").entry(ctx)  # the declared stage shardforge run executes
    message = str(failed.value)
    assert message.startswith("drift gate posts v=2: feature 'topic': L-infinity 0.")
    assert "> threshold 0.1 at value 'nlp' (v=2 vs v=1, split " in message
    assert "drift-posts.json" in message
    report = failed.value.report
    assert report.baseline == "1" and {c.feature for c in report.failures} == {"topic"}
    assert all(c.distance > 0.4 for c in report.failures)
    written = json.loads(Path(ctx.lake.local_path(report.uri)).read_text())
    assert not written["passed"] and any(c["failed"] for c in written["checks"])
    # A looser threshold for that one feature lets the same version through.
    relaxed = posts_config(tmp_path, "2", drift="features: {topic: {linf: 0.6}}")
    passed = run_drift_gate(relaxed, Lake(cfg.lake.root), dataset="posts", run_id="run-3")
    assert not passed.failures and passed.baseline == "1"


def test_eval_unlike_train_fails_as_skew_within_one_version(tmp_path):
    cfg = posts_config(tmp_path, "1")
    encode_version(cfg, posts_rows(1500, eval_words=6))
    with pytest.raises(DriftFailed, match=r"feature '(length|input_ids \(lengths\))': "
                                          r"Jensen-Shannon \d\.\d+ > threshold 0\.1 "
                                          r"\(eval vs train \(v=1\), split eval\)"):
        run_drift_gate(cfg, Lake(cfg.lake.root), dataset="posts", run_id="r1")
    off = posts_config(tmp_path, "1", drift="compare_splits: false")
    assert run_drift_gate(off, Lake(off.lake.root), dataset="posts", run_id="r2").checks == []


def test_too_few_examples_are_reported_not_gated(tmp_path):
    encode_version(posts_config(tmp_path, "1"), posts_rows(60, seed=1))
    cfg = posts_config(tmp_path, "2")
    encode_version(cfg, posts_rows(60, seed=2, topics=["nlp"]))
    report = run_drift_gate(cfg, Lake(cfg.lake.root), dataset="posts", run_id="r")
    topic = [c for c in report.checks if c.feature == "topic" and c.comparison == "v=2 vs v=1"]
    assert topic and all(c.distance > c.threshold and not c.gated and not c.failed for c in topic)
    assert any("< min_examples 100: reported, not gated" in n for n in report.notes)


def test_a_version_without_statistics_cannot_be_gated(tmp_path):
    cfg = posts_config(tmp_path, "1")
    with pytest.raises(FileNotFoundError, match=r"drift gate posts v=1: no .*/v=1/statistics.json"):
        run_drift_gate(cfg, Lake(cfg.lake.root), dataset="posts", run_id="r")
