"""The run summary: a table on the terminal and ``reports/<run_id>/summary.json`` in the lake."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from core.lake import Lake
from shardforge.stages import StageReport

__all__ = ["latest_summary", "print_summary", "write_summary"]


def write_summary(lake: Lake, run_id: str, reports: list[StageReport], extra: dict[str, Any]) -> str:
    """Write ``summary.json`` for a run; returns its URI."""
    uri = f"{lake.reports(run_id)}/summary.json"
    path = lake.fs_path(uri)
    lake.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    body = {"run_id": run_id, "lake": lake.root, "stages": [r.as_dict() for r in reports], **extra}
    with lake.fs.open(path, "w") as handle:
        json.dump(body, handle, indent=2, ensure_ascii=False, sort_keys=True)
    return uri


def latest_summary(lake: Lake, run_id: str | None = None) -> dict[str, Any]:
    """Read a run's ``summary.json``: ``run_id``'s, else the newest run that has one.

    A run folder without a summary (``validate`` alone, a failed gate, a killed run) is
    passed over for an older one.

    Raises:
        FileNotFoundError: ``run_id`` has no summary, or no run has one; one line saying so.
    """
    if run_id is not None:
        uri = f"{lake.reports(run_id)}/summary.json"
        if not lake.fs.exists(lake.fs_path(uri)):
            raise FileNotFoundError(f"run {run_id} has no summary ({uri} does not exist): "
                                    "it did not finish")
        return _read_json(lake, uri)
    base = lake.fs_path(lake.reports())
    runs = sorted((p.rstrip("/").rsplit("/", 1)[-1] for p in lake.fs.ls(base, detail=False)),
                  reverse=True) if lake.fs.exists(base) else []
    for run in runs:
        uri = f"{lake.reports(run)}/summary.json"
        if lake.fs.exists(lake.fs_path(uri)):
            return _read_json(lake, uri)
    raise FileNotFoundError(f"no completed run under {lake.reports()} (none has a summary.json): "
                            "run `shardforge run` first")


def _read_json(lake: Lake, uri: str) -> dict[str, Any]:
    with lake.fs.open(lake.fs_path(uri)) as handle:
        return json.load(handle)


def _training_notes(details: dict[str, Any]) -> str:
    """One line for a training stage, whatever the model kind."""
    how = [details.get("device"), details.get("precision")]
    if details.get("attention"):
        how.append(f"attention {details['attention']}")
    evaluation = details.get("eval") or {}
    shown = ", ".join(f"{k} {v:.3g}" for k, v in sorted(evaluation.items())
                      if k != "step" and isinstance(v, int | float) and not isinstance(v, bool))
    return (f"loss {details['first_loss']:.3f} → {details['final_loss']:.3f} in {details['steps']} steps"
            f" ({', '.join(str(h) for h in how if h)})" + (f"; eval {shown}" if shown else ""))


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print rows per stage, shards, losses and where everything lies."""
    console = console or Console()
    table = Table(title=f"shardforge {summary['run_id']}", title_justify="left")
    for column in ("stage", "in", "out", "quarantined", "duplicates", "notes"):
        table.add_column(column, justify="left" if column in ("stage", "notes") else "right")
    for stage in summary["stages"]:
        details = stage["details"]
        if "skipped" in details:
            notes = details["skipped"]
        elif "records" in details:
            notes = ", ".join(f"{s}: {n} records / {details['shards'][s]} shards" for s, n in details["records"].items())
        elif "gates" in details:
            notes = "; ".join(details["gates"])
        elif "final_loss" in details:
            notes = _training_notes(details)
        else:
            notes = details.get("unit", "")
        table.add_row(stage["stage"], str(stage["rows_in"]), str(stage["rows_out"]),
                      str(stage["quarantined"]), str(stage["duplicates_dropped"]), notes)
    console.print(table)
    durations = summary.get("durations_s") or []
    if durations:
        console.print("stage durations: " + ", ".join(
            f"{name} {seconds:.1f} s" for name, seconds in durations))
    for name, why in summary.get("missing_corpora", {}).items():
        console.print(f"[yellow]corpus {name!r} not processed: {why}[/yellow]")
    for name, why in summary.get("not_processed", {}).items():
        console.print(f"corpus {name!r}: {why}")
    console.print("outputs:")
    for stage in summary["stages"]:
        for uri in stage["outputs"]:
            console.print(f"  {stage['stage']:<10} {uri}")
    if "summary_uri" in summary:
        console.print(f"  {'summary':<10} {summary['summary_uri']}")
    if "report_uri" in summary:
        console.print(f"  {'report':<10} {summary['report_uri']}")
