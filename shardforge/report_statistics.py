"""The report's data-quality sections: per-feature statistics and the drift gates' outcomes.

:func:`collect_statistics` reads what the lake holds for a run — each dataset version's
``statistics.json`` (:mod:`features.statistics`) and the run's
``reports/<run_id>/drift-<dataset>.json`` (:mod:`pipelines.validate.drift`) — so the page
is the same whether ``shardforge run`` or the Airflow DAG ran the stages.
:func:`render_statistics` turns them into HTML tables: one per dataset and split (count,
missing, min/median/mean/std/max, distinct values, the most frequent ones) and one per drift
gate (distance against threshold, pass or fail, per feature and comparison).
"""

from __future__ import annotations

import json
import posixpath
from html import escape
from typing import Any

from core.lake import Lake
from features.statistics import STATISTICS_NAME, read_statistics

__all__ = ["collect_statistics", "render_statistics"]

TOP_VALUES = 5  # most frequent values shown per feature


def collect_statistics(lake: Lake, run_id: str, datasets: dict[str, str]) -> dict[str, Any]:
    """``{"statistics": {dataset: doc}, "drift": [report, …]}`` of what the lake holds.

    Args:
        datasets: dataset name -> its version folder URI (one without statistics is left out).
    """
    statistics = {}
    for name, uri in datasets.items():
        path = lake.fs_path(f"{uri}/{STATISTICS_NAME}")
        if lake.fs.exists(path):
            with lake.fs.open(path, "rb") as handle:
                statistics[name] = read_statistics(handle.read(), source=f"{uri}/{STATISTICS_NAME}")
    drift = []
    folder = lake.fs_path(lake.reports(run_id))
    if lake.fs.exists(folder):
        for path in sorted(lake.fs.glob(posixpath.join(folder, "drift-*.json"))):
            with lake.fs.open(path, "r") as handle:
                drift.append(json.load(handle))
    return {"statistics": statistics, "drift": drift}


def _number(value) -> str:
    if value is None:
        return ""
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _numbers(block: dict | None) -> list[str]:
    if not block:
        return [""] * 5
    median = dict((q, v) for q, v in block["quantiles"]).get(0.5)
    return [_number(block[k]) if k != "median" else _number(median)
            for k in ("min", "median", "mean", "std", "max")]


def _split_table(split: str, part: dict) -> str:
    rows = []
    for name, f in sorted(part["features"].items()):
        values = f.get("values")
        numbers = f.get("numeric") or f.get("lengths")
        kind = f["kind"] + (" (lengths)" if "lengths" in f and "numeric" not in f else "")
        top = ""
        if values and values["total"]:
            top = ", ".join(f"{escape(str(v))} {100 * n / values['total']:.1f}%"
                            for v, n in values["counts"][:TOP_VALUES])
        cells = [escape(name), escape(kind), _number(f["present"]), _number(f.get("missing", 0)),
                 *_numbers(numbers), _number(values["distinct"]) if values else "", top]
        rows.append("<tr>" + "".join(f'<td class="n">{c}</td>' if 1 < i < 10 else f"<td>{c}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("feature", "kind", "present", "missing", "min",
                                              "median", "mean", "std", "max", "distinct",
                                              f"top {TOP_VALUES} values"))
    return (f"<p>split <b>{escape(split)}</b>: {part['examples']:,} examples</p>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table>")


def _drift_table(report: dict) -> str:
    rows = []
    for c in report["checks"]:
        if c["failed"]:
            result = '<span class="bad">FAIL</span>'
        elif c["gated"]:
            result = '<span class="ok">pass</span>'
        else:
            result = '<span class="muted">reported (too few examples)</span>'
        what = c["feature"] + (" (lengths)" if c["block"] == "lengths" else "")
        at = f" at {escape(str(c['at']))}" if c.get("at") is not None else ""
        metric = {"linf": "L-infinity", "js": "Jensen-Shannon"}[c["metric"]]
        rows.append(f"<tr><td>{escape(c['comparison'])}</td><td>{escape(c['split'])}</td>"
                    f"<td>{escape(what)}</td><td>{metric}{at}</td>"
                    f'<td class="n">{c["distance"]:.4f}</td><td class="n">{c["threshold"]:g}</td>'
                    f"<td>{result}</td></tr>")
    status = '<span class="bad">FAILED</span>' if not report["passed"] else '<span class="ok">passed</span>'
    notes = "".join(f"<li>{escape(n)}</li>" for n in report["notes"])
    return (f"<p>{status} {escape(report['summary'])}</p>" + (f"<ul class='muted'>{notes}</ul>" if notes else "")
            + ("<table><tr><th>comparison</th><th>split</th><th>feature</th><th>measure</th>"
               "<th>distance</th><th>threshold</th><th>result</th></tr>" + "".join(rows) + "</table>"
               if rows else ""))


def render_statistics(data: dict[str, Any]) -> list[str]:
    """The HTML of both sections (nothing when the lake had neither)."""
    parts = []
    for name, doc in sorted(data.get("statistics", {}).items()):
        parts.append(f"<h2>Feature statistics: {escape(name)}</h2>")
        parts += [_split_table(split, part) for split, part in sorted(doc["splits"].items())]
    if data.get("drift"):
        parts.append("<h2>Drift gates</h2>")
        parts += [_drift_table(report) for report in data["drift"]]
    return parts
