"""The report's statistics and drift sections: read from the lake, escaped, pass and fail shown."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from statistics_testlib import TOPICS, encode_version, posts_config, posts_rows

from core.lake import Lake
from pipelines.validate.drift import DriftFailed, run_drift_gate
from shardforge.report_html import collect_report_data, render_report
from shardforge.report_statistics import collect_statistics, render_statistics


def _tables(html: str) -> list[list[list[str]]]:
    """Every table of an HTML fragment as rows of cell texts (the fragment must be well formed)."""
    root = ET.fromstring(f"<div>{html}</div>")
    return [[["".join(cell.itertext()) for cell in row] for row in table.iter("tr")]
            for table in root.iter("table")]


def test_statistics_and_a_failed_drift_gate_are_on_the_page(tmp_path):
    encode_version(posts_config(tmp_path, "1"), posts_rows(1200, seed=1))
    cfg = posts_config(tmp_path, "2")
    lake = Lake(cfg.lake.root)
    encode_version(cfg, posts_rows(1200, seed=2, topics=["nlp"] * 9 + TOPICS))
    with pytest.raises(DriftFailed):
        run_drift_gate(cfg, lake, dataset="posts", run_id="run-9")
    data = collect_statistics(lake, "run-9", {"posts": lake.records("posts", "2")})
    assert set(data["statistics"]) == {"posts"} and len(data["drift"]) == 1
    counts = data["statistics"]["posts"]["splits"]["train"]["features"]["topic"]["values"]["counts"]
    assert counts[0][0] == "nlp"
    counts[0][0] = "<b>nlp</b>"  # a value that is markup (an open vocabulary could hold one)
    html = "".join(render_statistics(data))
    assert "<b>nlp</b>" not in html and "&lt;b&gt;nlp&lt;/b&gt;" in html  # values are escaped
    eval_stats, train_stats, drift = _tables(html)
    header = train_stats[0]
    assert header[:4] == ["feature", "kind", "present", "missing"] and "distinct" in header
    rows = {r[0]: dict(zip(header, r, strict=True)) for r in train_stats[1:]}
    assert set(rows) == {"input_ids", "length", "topic"}
    stats = data["statistics"]["posts"]["splits"]["train"]["features"]
    assert rows["topic"]["distinct"] == str(stats["topic"]["values"]["distinct"])
    assert rows["topic"]["top 5 values"].startswith("<b>nlp</b> ")  # the most frequent first
    assert rows["input_ids"]["kind"] == "text (lengths)" and rows["length"]["mean"]
    verdicts = {(r[2], r[0]): r[-1] for r in drift[1:]}
    assert verdicts[("topic", "v=2 vs v=1")] == "FAIL"
    assert verdicts[("length", "v=2 vs v=1")] == "pass"
    assert "FAILED" in html.split("<table>")[-2]  # the gate's summary line, before its table


def test_the_report_page_shows_the_sections_of_its_run(tmp_path):
    cfg = posts_config(tmp_path, "1")
    lake = Lake(cfg.lake.root)
    uri = encode_version(cfg, posts_rows(300))
    run_drift_gate(cfg, lake, dataset="posts", run_id="run-1")
    summary = {"run_id": "run-1", "stages": []}
    data = collect_report_data(lake, summary, database="db", dataset_uri=uri, text_feature=None,
                               vocab_size=None)
    assert list(data["statistics"]) == ["posts"] and data["drift"][0]["baseline"] is None
    page = render_report(data)
    assert "<h2>Feature statistics: posts</h2>" in page and "<h2>Drift gates</h2>" in page
    assert "no baseline" in page
    other = collect_report_data(lake, {"run_id": "run-0", "stages": []}, database="db",
                                dataset_uri=None, text_feature=None, vocab_size=None)
    assert other["statistics"] == {} and other["drift"] == []  # nothing in the lake for them
