"""The HTML report: valid inline SVG charts and the sections a reader expects."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardforge.charts import bar_chart, histogram, line_chart
from shardforge.lake import Lake
from shardforge.report_html import collect_report_data, write_report

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("svg", [
    bar_chart(["a", "b<c"], [3, 5], title="bars & <things>"),
    histogram([1, 2, 2, 3, 10], bins=4, title="lengths"),
    line_chart([1, 2, 3], {"loss": [3.0, None, 1.0]}, title="loss"),
    bar_chart([], [], title="empty"),
])
def test_charts_are_well_formed_svg(svg):
    root = ET.fromstring(svg)  # raises on unescaped text or broken markup
    assert root.tag == f"{SVG}svg"


def test_bar_heights_are_proportional():
    root = ET.fromstring(bar_chart(["x", "y"], [1, 4], title="t"))
    heights = [float(r.get("height")) for r in root.iter(f"{SVG}rect")]
    assert heights[1] == pytest.approx(4 * heights[0])


def test_histogram_counts_every_value():
    root = ET.fromstring(histogram([0, 1, 1, 2, 9, 10], bins=5, title="t"))
    titles = [r.find(f"{SVG}title").text for r in root.iter(f"{SVG}rect")]
    assert sum(float(t.rsplit(": ", 1)[1]) for t in titles) == 6


def _lake(tmp_path) -> tuple[Lake, dict]:
    lake = Lake(str(tmp_path / "lake"))
    q = lake.local_path(lake.table("db", "quarantine")) / "stage=ingest_feeds" / "dt=2026-11-01"
    q.mkdir(parents=True)
    pq.write_table(pa.table({"source": ["a", "b", "c"], "reason": ["empty file"] * 2 + ["not utf-8"],
                             "bytes": [0, 0, 9]}), q / "part-0.parquet")
    c = lake.local_path(lake.table("db", "clean_posts")) / "dt=2026-11-01"
    c.mkdir(parents=True)
    pq.write_table(pa.table({"length": [10, 20, 30], "topic": ["nlp", "nlp", "cv"],
                             "lang": ["zh", "en", "zh"]}), c / "part-0.parquet")
    run = lake.local_path(lake.model_run("lm", "run-1"))
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 5.0 / s, "tokens_per_s": 1000.0 * s, "loss_scale": None})
        + "\n" for s in (1, 2, 3)))
    summary = {"run_id": "run-1", "stages": [
        {"stage": "ingest", "rows_in": 5, "rows_out": 3, "quarantined": 2,
         "duplicates_dropped": 0, "outputs": [], "details": {}},
        {"stage": "clean", "rows_in": 9, "rows_out": 3, "quarantined": 0,
         "duplicates_dropped": 5, "outputs": [], "details": {}},
        {"stage": "train lm", "rows_in": 0, "rows_out": 0, "quarantined": 0,
         "duplicates_dropped": 0, "outputs": [f"{lake.model_run('lm', 'run-1')}/ckpt.pt"],
         "details": {}},
    ]}
    return lake, summary


def test_report_collects_the_lake_and_flags_what_does_not_reconcile(tmp_path):
    lake, summary = _lake(tmp_path)
    data = collect_report_data(lake, summary, database="db", dataset_uri=None,
                               text_feature=None, vocab_size=None)
    assert data["quarantine"] == {"empty file [ingest_feeds]": 2, "not utf-8 [ingest_feeds]": 1}
    assert sorted(data["lengths"]) == [10, 20, 30] and data["topics"] == {"nlp": 2, "cv": 1}
    assert [r["loss"] for r in data["training"]["train lm"]] == [5.0, 2.5, 5.0 / 3]

    uri = write_report(lake, summary, database="db")
    html = lake.local_path(uri).read_text(encoding="utf-8")
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")  # self-contained
    assert html.count("<svg") == 7  # quarantine, length, topic, language, 3 training curves
    assert html.count("does not reconcile") == 1  # clean: 9 != 3 + 0 + 5
