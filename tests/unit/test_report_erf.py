"""The report's segmentation panels: eval PA/MPA/MIoU curves and the effective receptive field."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from shardforge.charts import heatmap
from shardforge.report_html import _training_charts

SVG = "{http://www.w3.org/2000/svg}"


def _ids(svg: str) -> set[str]:
    return {e.get("id") for e in ET.fromstring(svg).iter() if e.get("id")}


def _titles(charts: list[str]) -> list[str]:
    out = []
    for svg in charts:
        texts = [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text")]
        out.append(next((t for t in texts if t.startswith(("eval", "effective", "training",
                                                           "throughput"))), ""))
    return out


def _erf(side: int) -> list[list[float]]:
    c = (side - 1) / 2
    return [[round(1.0 / (1 + (x - c) ** 2 + (y - c) ** 2), 4) for x in range(side)]
            for y in range(side)]


def test_segmenter_runs_get_metric_curves_and_an_erf_map_with_the_theoretical_square():
    evals = [{"step": s, "pixel_accuracy": 0.8 + s / 100, "mean_accuracy": 0.5,
              "mean_iou": 0.4 + s / 50, "class_iou": [0.9, None, 0.1, 0.2], "erf_radius": 3.5,
              "erf": _erf(16), "erf_input": [32, 32]} for s in (5, 10)]
    rows = [{"step": 5, "loss": 1.0, "images_per_s": 10.0, "receptive_field": 12, "eval": evals[0]},
            {"step": 10, "loss": 0.5, "images_per_s": 11.0, "receptive_field": 12,
             "eval": evals[1]}]
    charts = _training_charts(rows)
    titles = _titles(charts)
    for name in ("eval pixel_accuracy", "eval mean_accuracy", "eval mean_iou"):
        assert name in titles, titles
    assert "eval class_iou" not in titles and "eval erf" not in titles  # lists are not curves
    [erf] = [svg for svg in charts if "effective receptive field" in svg]
    assert {"heatmap", "square"} <= _ids(erf)
    assert "theoretical RF 12 px" in erf and "32x32 px input" in erf


def test_runs_without_an_erf_get_no_map_and_an_empty_map_says_so():
    rows = [{"step": 1, "loss": 1.0, "eval": {"step": 1, "accuracy": 0.5}}]
    assert not any("effective receptive field" in svg for svg in _training_charts(rows))
    empty = heatmap([[None, None]], title="nothing")
    assert "no data" in empty and "heatmap" not in _ids(empty)
    plain = heatmap(_erf(8), title="no square")
    assert "heatmap" in _ids(plain) and "square" not in _ids(plain)
