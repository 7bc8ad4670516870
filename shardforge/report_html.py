"""``reports/<run_id>/report.html``: one self-contained page a person wants to read.

Per-stage row counts with their reconciliation, quarantine reasons, text length, topic
and language distributions of ``clean_posts``, the dataset's shard sizes and vocabulary
coverage, the training and evaluation curves, and the image models' sample grids (PNG,
inline). Plots are matplotlib figures inlined as SVG (:mod:`shardforge.charts`): the file
opens offline, needs no JavaScript, and can be mailed or attached to an Airflow task as it is.
"""

from __future__ import annotations

import collections
import json
import posixpath
from html import escape
from typing import Any

from core.lake import Lake
from shardforge.charts import bar_chart, has_values, heatmap, histogram, line_chart
from shardforge.report_statistics import collect_statistics, render_statistics

__all__ = ["collect_report_data", "render_report", "write_report"]

_STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1120px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px}
td.n{text-align:right}.ok{color:#2a7a2a}.bad{color:#b00020;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:12px}.muted{color:#777;font-size:12px}
"""


def _read_table(lake: Lake, uri: str, columns: list[str]):
    """A Hive-partitioned Parquet table as a pyarrow Table, or None if it has no data."""
    import pyarrow.dataset as ds

    path = lake.fs_path(uri)
    if not lake.fs.exists(path):
        return None
    dataset = ds.dataset(path, filesystem=lake.fs, format="parquet", partitioning="hive")
    names = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=names)


def _metrics(lake: Lake, checkpoint_uri: str) -> list[dict[str, Any]]:
    path = lake.fs_path(posixpath.join(posixpath.dirname(checkpoint_uri), "metrics.jsonl"))
    if not lake.fs.exists(path):
        return []
    with lake.fs.open(path, "r") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _vocabulary_coverage(dataset_uri: str, feature: str, vocab_size: int,
                         sample: int = 4096) -> dict[str, Any]:
    import torch

    from records.reader import RecordDataset

    seen = torch.zeros(vocab_size, dtype=torch.bool)
    tokens = 0
    for batch in RecordDataset(dataset_uri, "train", batch_size=512):
        ids, lengths = batch[feature], batch[f"{feature}_lengths"]
        valid = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
        seen[ids[valid].clamp(0, vocab_size - 1)] = True
        tokens += int(lengths.sum())
        sample -= len(lengths)
        if sample <= 0:
            break
    return {"used": int(seen.sum()), "vocab_size": vocab_size, "tokens": tokens}


def collect_report_data(lake: Lake, summary: dict[str, Any], *, database: str,
                        dataset_uri: str | None, text_feature: str | None,
                        vocab_size: int | None,
                        statistics_uris: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain data (what tests and ``summary.json`` can check).

    ``statistics_uris``: dataset name -> version folder whose ``statistics.json`` the page
    shows (default: ``dataset_uri``'s); the run's drift gates are read from its reports folder.
    """
    data: dict[str, Any] = {"run_id": summary["run_id"], "stages": summary["stages"]}
    quarantine = _read_table(lake, lake.table(database, "quarantine"), ["reason", "stage"])
    data["quarantine"] = dict(collections.Counter(
        f"{r} [{s}]" for s, r in zip(quarantine["stage"].to_pylist(),
                                    quarantine["reason"].to_pylist(), strict=True)
    )) if quarantine is not None and quarantine.num_rows else {}
    clean = _read_table(lake, lake.table(database, "clean_posts"), ["length", "topic", "lang"])
    if clean is not None and clean.num_rows:
        data["lengths"] = clean["length"].to_pylist()
        data["topics"] = dict(collections.Counter(clean["topic"].to_pylist()))
        data["langs"] = dict(collections.Counter(clean["lang"].to_pylist()))
    if dataset_uri is not None:
        from records.manifest import load_manifest

        try:
            manifest = load_manifest(dataset_uri)
        except FileNotFoundError:
            manifest = None
        if manifest is not None:
            # "train/00003": the split and the shard's index, what fits under a bar.
            data["shards"] = {f"{name}/{posixpath.basename(s.path).split('-')[1]}": s.bytes
                              for name, info in sorted(manifest.splits.items())
                              for s in info.shards}
            if text_feature and vocab_size:
                data["coverage"] = _vocabulary_coverage(dataset_uri, text_feature, vocab_size)
    data["training"] = {
        stage["stage"]: _metrics(lake, stage["outputs"][0])
        for stage in summary["stages"] if stage["stage"].startswith("train") and stage["outputs"]
    }
    if statistics_uris is None and dataset_uri is not None:
        statistics_uris = {posixpath.basename(posixpath.dirname(dataset_uri)): dataset_uri}
    data.update(collect_statistics(lake, summary["run_id"], statistics_uris or {}))
    data["samples"] = {
        stage["stage"]: _sample_grids(lake, stage["outputs"][0])
        for stage in summary["stages"] if stage["stage"].startswith("train") and stage["outputs"]
    }
    return data


def _sample_grids(lake: Lake, checkpoint_uri: str) -> dict[str, str]:
    """The ``samples*.png`` grids beside a checkpoint (an image model's samples or
    reconstructions; ``shardforge generate`` adds ``samples-prior.png``), base64-encoded."""
    import base64

    folder = lake.fs_path(posixpath.dirname(checkpoint_uri))
    if not lake.fs.exists(folder):
        return {}
    grids = {}
    for path in sorted(lake.fs.glob(posixpath.join(folder, "samples*.png"))):
        with lake.fs.open(path, "rb") as handle:
            grids[posixpath.basename(path)] = base64.b64encode(handle.read()).decode("ascii")
    return grids


def _stage_table(stages: list[dict[str, Any]]) -> str:
    rows = []
    for s in stages:
        balanced = s["rows_in"] == s["rows_out"] + s["quarantined"] + s["duplicates_dropped"]
        check = ('<span class="ok">in = out + quarantined + duplicates</span>' if balanced
                 else '<span class="bad">does not reconcile</span>')
        if s["stage"] in ("sample",) or s["stage"].startswith("train"):
            check = '<span class="muted">n/a</span>'
        rows.append(f"<tr><td>{escape(s['stage'])}</td>" + "".join(
            f'<td class="n">{s[k]}</td>' for k in ("rows_in", "rows_out", "quarantined",
                                                   "duplicates_dropped")) + f"<td>{check}</td></tr>")
    return ("<table><tr><th>stage</th><th>in</th><th>out</th><th>quarantined</th>"
            "<th>duplicates</th><th>reconciliation</th></tr>" + "".join(rows) + "</table>")


def _training_charts(rows: list[dict[str, Any]]) -> list[str]:
    """Loss, throughput (tokens/s or images/s), the fp16 loss scale and each evaluation metric;
    a curve with no value at all (the loss scale of an fp32 or bf16 run) is left out."""
    steps = [r["step"] for r in rows]
    unit = "tokens" if any("tokens_per_s" in r for r in rows) else "images"
    curves = [("training loss", "loss", [r.get("loss") for r in rows], "", steps),
              ("throughput", f"{unit}/s", [r.get(f"{unit}_per_s") for r in rows], f"{unit}/s", steps),
              ("fp16 loss scale", "loss scale", [r.get("loss_scale") for r in rows], "", steps)]
    evals = [r["eval"] for r in rows if isinstance(r.get("eval"), dict)]
    names = sorted({k for e in evals for k, v in e.items()
                    if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)})
    eval_steps = [e.get("step", 0) for e in evals]
    curves += [(f"eval {name}", name, [e.get(name) for e in evals], "", eval_steps) for name in names]
    return [line_chart(xs, {label: ys}, title=title, x_label="step", y_label=y_label)
            for title, label, ys, y_label, xs in curves if has_values(ys)] + _erf_chart(rows, evals)


def _erf_chart(rows: list[dict[str, Any]], evals: list[dict[str, Any]]) -> list[str]:
    """The last evaluation's effective receptive field (a segmenter's ``erf`` map), with the
    theoretical receptive field (``receptive_field`` of the log lines) outlined."""
    last = next((e for e in reversed(evals) if isinstance(e.get("erf"), list) and e["erf"]), None)
    if last is None:
        return []
    side = last.get("erf_input") or [len(last["erf"]), len(last["erf"][0])]
    scale = len(last["erf"][0]) / side[1]  # map pixels per input pixel (the map is pooled)
    rf = next((r["receptive_field"] for r in reversed(rows) if r.get("receptive_field")), None)
    note = (f"|d centre output / d input|, {side[0]}x{side[1]} px input; 95% within "
            f"{last.get('erf_radius', 0):g} px of the centre")
    if rf:
        note += f"; square: theoretical RF {rf} px"
    return [heatmap(last["erf"], title=f"effective receptive field (step {last.get('step')})",
                    square=rf * scale if rf else None, note=note)]


def render_report(data: dict[str, Any]) -> str:
    """The HTML page for :func:`collect_report_data`'s output."""
    parts = [f"<h1>shardforge run {escape(data['run_id'])}</h1>",
             "<h2>Rows per stage</h2>", _stage_table(data["stages"]),
             "<h2>Quarantine</h2><div class='grid'>",
             bar_chart(list(data["quarantine"]), list(data["quarantine"].values()),
                       title="quarantined rows by reason", y_label="rows"), "</div>"]
    if "lengths" in data:
        parts += ["<h2>clean_posts</h2><div class='grid'>",
                  histogram(data["lengths"], title="text length", x_label="characters"),
                  bar_chart(list(data["topics"]), list(data["topics"].values()),
                            title="topics", y_label="posts"),
                  bar_chart(list(data["langs"]), list(data["langs"].values()),
                            title="languages", y_label="posts"), "</div>"]
    if "shards" in data:
        parts += ["<h2>Dataset</h2><div class='grid'>",
                  bar_chart(list(data["shards"]), list(data["shards"].values()),
                            title="shard sizes", y_label="bytes"), "</div>"]
        if "coverage" in data:
            c = data["coverage"]
            parts.append(f"<p>Vocabulary coverage (train sample): {c['used']} of "
                         f"{c['vocab_size']} ids used ({100 * c['used'] / c['vocab_size']:.1f}%) "
                         f"in {c['tokens']} tokens.</p>")
    parts += render_statistics(data)  # feature statistics and drift gates
    for stage, rows in data["training"].items():
        parts += [f"<h2>{escape(stage)}</h2><div class='grid'>", *_training_charts(rows), "</div>"]
        for name, png in data.get("samples", {}).get(stage, {}).items():
            parts.append(f"<figure><img alt='{escape(name)}' src='data:image/png;base64,{png}' "
                         f"style='image-rendering:pixelated;width:520px'>"
                         f"<figcaption class='muted'>{escape(name)}</figcaption></figure>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>shardforge {escape(data['run_id'])}</title><style>{_STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")


def write_report(lake: Lake, summary: dict[str, Any], *, database: str,
                 dataset_uri: str | None = None, text_feature: str | None = None,
                 vocab_size: int | None = None,
                 statistics_uris: dict[str, str] | None = None) -> str:
    """Writes ``reports/<run_id>/report.html``; returns its URI."""
    data = collect_report_data(lake, summary, database=database, dataset_uri=dataset_uri,
                               text_feature=text_feature, vocab_size=vocab_size,
                               statistics_uris=statistics_uris)
    uri = f"{lake.reports(summary['run_id'])}/report.html"
    path = lake.fs_path(uri)
    lake.fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with lake.fs.open(path, "w", encoding="utf-8") as handle:
        handle.write(render_report(data))
    return uri
