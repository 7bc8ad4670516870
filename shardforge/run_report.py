"""A run's outputs for people: ``reports/<run_id>/summary.json`` and ``report.html``.

``shardforge run`` (its ``report`` stage) and the DAG's ``report`` task both end here, with
the stage reports they have: the CLI's from the stages it ran, the DAG's from what its tasks
left in the lake.
"""

from __future__ import annotations

from typing import Any

from core.config import ShardforgeConfig
from core.lake import Lake
from shardforge.stages import StageReport
from shardforge.summary import write_summary

__all__ = ["write_run_report"]


def write_run_report(cfg: ShardforgeConfig, lake: Lake, run_id: str, reports: list[StageReport],
                     extra: dict[str, Any]) -> dict[str, Any]:
    """Write both files; returns ``summary_uri``, ``report_uri`` and the ``summary`` itself."""
    from features.spec import load_spec
    from shardforge.report_html import write_report

    extra = {**extra, "summary_uri": f"{lake.reports(run_id)}/summary.json"}
    write_summary(lake, run_id, reports, extra)
    summary = {"run_id": run_id, "lake": lake.root, "stages": [r.as_dict() for r in reports], **extra}
    text_name, text = load_spec(cfg.resolve_path(cfg.feature_spec)).text_feature()
    datasets = [cfg.dataset] + ([cfg.image_dataset] if cfg.image_dataset is not None else [])
    html = write_report(lake, summary, database=cfg.spark.database,
                        dataset_uri=lake.records(cfg.dataset.name, cfg.dataset.version),
                        text_feature=text_name, vocab_size=text.vocab_size,
                        statistics_uris={d.name: lake.records(d.name, d.version) for d in datasets})
    return {"summary_uri": extra["summary_uri"], "report_uri": html,
            "summary": {**summary, "report_uri": html}}
