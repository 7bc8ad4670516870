"""The HTML report: valid inline SVG charts and the sections a reader expects."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.lake import Lake
from shardforge.charts import bar_chart, histogram, line_chart
from shardforge.report_html import _training_charts, collect_report_data, write_report

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


def _bars(svg: str) -> dict[int, tuple[float, float]]:
    """bar index -> (value the chart was given, drawn height in SVG units), from the bar ids."""
    root = ET.fromstring(svg)
    out = {}
    for group in root.iter(f"{SVG}g"):
        gid = group.get("id", "")
        if gid.startswith("bar-"):
            _, index, value = gid.split("-", 2)
            ys = [float(y) for y in re.findall(r"[ML] [-\d.]+ ([-\d.]+)",
                                               group.find(f"{SVG}path").get("d"))]
            out[int(index)] = (float(value), max(ys) - min(ys))
    return out


def _texts(svg: str) -> list[str]:
    return ["".join(t.itertext()) for t in ET.fromstring(svg).iter(f"{SVG}text")]


def test_bar_heights_are_proportional():
    bars = _bars(bar_chart(["x", "y"], [1, 4], title="t"))
    assert bars[1][1] == pytest.approx(4 * bars[0][1], rel=1e-3)


def test_histogram_counts_every_value():
    bars = _bars(histogram([0, 1, 1, 2, 9, 10], bins=5, title="t"))
    assert len(bars) == 5 and sum(value for value, _ in bars.values()) == 6


def test_count_axes_have_whole_ticks_and_long_labels_are_not_cut():
    label = "a-category-label-far-too-long-for-its-bar"
    texts = _texts(bar_chart([label, "b", "c"], [7, 14, 3], title="counts"))
    ticks = [t for t in texts if re.fullmatch(r"[\d.,−-]+", t)]
    assert ticks and all("." not in t for t in ticks)  # 0, 2, 4 … never 7.09 or 14.2
    assert label in "".join(texts).replace("\n", "")  # wrapped over lines, whole


def test_a_series_without_values_is_not_drawn_in_the_report():
    rows = [{"step": s, "loss": 1.0 / s, "tokens_per_s": 10.0, "loss_scale": None} for s in (1, 2)]
    charts = _training_charts(rows)
    assert len(charts) == 2 and not any("fp16 loss scale" in "".join(_texts(c)) for c in charts)
    rows[0]["eval"] = {"step": 1, "loss": 2.0, "perplexity": 7.39}
    titles = ["".join(_texts(c)) for c in _training_charts(rows)]
    assert any("eval perplexity" in t for t in titles) and any("eval loss" in t for t in titles)


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
    # Self-contained: XML namespaces only, no script, nothing fetched from anywhere.
    assert re.findall(r'(?:src|href|url)\(?=?["\']?https?:', html) == [] and "<script" not in html
    assert html.count("<svg") == 6  # quarantine, length, topic, language, loss, throughput
    assert html.count("does not reconcile") == 1  # clean: 9 != 3 + 0 + 5


def _chromium(*args: str, profile, timeout: int = 120) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("headless Chromium is not installed: the README's install command installs "
                    "Debian's chromium package")
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
        capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.integration
def test_report_renders_its_charts_in_headless_chromium(tmp_path):
    lake, summary = _lake(tmp_path)
    page = lake.local_path(write_report(lake, summary, database="db")).as_uri()
    shot = tmp_path / "report.png"
    shown = _chromium(f"--screenshot={shot}", "--window-size=1280,2600", page, profile=tmp_path / "p1")
    assert shot.exists(), shown.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    # The bars are drawn in the chart colour: a page whose SVG did not render has none.
    chart_blue = np.array([0x3B, 0x6E, 0xA8])
    assert (np.abs(pixels.astype(int) - chart_blue).sum(axis=1) < 12).sum() > 2000
    dom = _chromium("--dump-dom", page, profile=tmp_path / "p2")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") == 6
    console_errors = [line for line in shown.stderr.splitlines() + dom.stderr.splitlines()
                      if "CONSOLE" in line and ("rror" in line or "Uncaught" in line)]
    assert console_errors == []
