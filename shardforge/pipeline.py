"""The one declaration of the stage sequence: ``shardforge run``, the Spark jobs and the DAG.

:data:`STAGES` lists every stage once — its name (the DAG's task id), engine, what it
reads and writes in the lake, what must finish first, and the entry point that runs it.
:func:`declared_stages` turns it into the concrete, ordered sequence for one config (a
``train_<model>`` stage per configured model, the image stages only when the config has
an image corpus). Everything that runs the pipeline is built from that list:

* ``shardforge run`` runs the stages in order in one process (:func:`run_stages`);
* ``shardforge/spark_jobs.py`` (what ``spark-submit`` runs) accepts the names of the
  stages that run on Spark (:data:`SPARK_JOBS`) and calls their same entry;
* ``airflow_dags/shardforge_daily.py`` makes one task per stage, in this order, with
  ``after`` as the task's upstream, the operator chosen by the engine.

A stage's entry takes a :class:`~shardforge.stages.StageContext` and returns its
:class:`~shardforge.stages.StageReport`\\ s; the reports of all stages make the run summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from core.config import ShardforgeConfig
from records.faults import fault_point
from shardforge import stages, training
from shardforge.run_report import write_run_report
from shardforge.stages import StageContext, StageReport

__all__ = ["SPARK_JOBS", "STAGES", "Stage", "declared_stages", "run_stages", "stage_named"]

Entry = Callable[[StageContext], list[StageReport]]


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    Attributes:
        name: the stage's name, the DAG's task id and (for Spark stages) the job name.
        engine: where it runs: ``spark``, ``beam``, ``great_expectations``, ``torch``, ``python``.
        inputs, outputs: what it reads and writes, as lake locations (documentation and the
            DAG's docs; the layout itself is :class:`core.lake.Lake`'s).
        after: the stages that must have finished first.
        entry: runs it in this process (``shardforge run``, the Spark jobs entry).
        also_on: other engines the stage can run on (encode: ``spark`` as well as Beam).
        launch: what a scheduler needs to start it elsewhere: ``module`` and ``options`` of a
            Beam pipeline, ``gate`` of a validation, ``model`` of a training stage.
    """

    name: str
    engine: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    after: tuple[str, ...]
    entry: Entry
    also_on: tuple[str, ...] = ()
    launch: dict[str, Any] = field(default_factory=dict)

    def runs_on(self, engine: str) -> bool:
        return engine in (self.engine, *self.also_on)


def _ingest(ctx: StageContext) -> list[StageReport]:
    return stages.ingest(ctx.cfg, ctx.lake, ctx.spark(), progress=ctx.progress)


def _explode_clean(ctx: StageContext) -> list[StageReport]:
    return stages.clean(ctx.cfg, ctx.lake, ctx.spark(), run_id=ctx.run_id, progress=ctx.progress)


def _images(ctx: StageContext) -> list[StageReport]:
    if not stages.image_partitions(ctx.cfg, ctx.lake):
        return [_skipped("images", f"no partitions under {ctx.lake.raw(ctx.cfg.images.corpus)}")]
    return [stages.images(ctx.cfg, ctx.lake, progress=ctx.progress)]


def _encode(dataset: str) -> Entry:
    def entry(ctx: StageContext) -> list[StageReport]:
        if dataset == "images" and not stages.image_partitions(ctx.cfg, ctx.lake):
            return [_skipped("encode images", "no clean_images partitions to encode")]
        spark = ctx.spark() if ctx.encode_engine == "spark" else None
        return [stages.encode(ctx.cfg, ctx.lake, engine=ctx.encode_engine, spark=spark,
                              dataset=dataset, progress=ctx.progress)]
    return entry


def _gate(what: str) -> Entry:
    return lambda ctx: [stages.validate(ctx.cfg, ctx.lake, run_id=ctx.run_id, what=what,
                                        dts=ctx.dts, progress=ctx.progress)]


def _drift(dataset: str) -> Entry:
    """The drift gate of a dataset's new version (pipelines/validate/drift.py)."""
    def entry(ctx: StageContext) -> list[StageReport]:
        if dataset == "images" and not stages.image_partitions(ctx.cfg, ctx.lake):
            return [_skipped("drift images", "no image dataset was encoded")]
        from pipelines.validate.drift import run_drift_gate

        report = run_drift_gate(ctx.cfg, ctx.lake, dataset=dataset, run_id=ctx.run_id,
                                progress=ctx.progress)
        return [StageReport(f"drift {dataset}", outputs=[report.uri],
                            details={"gates": [report.summary()], "drift": report.to_dict()})]
    return entry


def _train(model: str) -> Entry:
    def entry(ctx: StageContext) -> list[StageReport]:
        steps = int(ctx.cfg.models[model].train.get("steps", 0))
        bar = ctx.train_bar(model, steps) if ctx.train_bar is not None else nullcontext()
        with bar as on_step:
            return [training.train(ctx.cfg, ctx.lake, model, run_id=ctx.run_id,
                                   device=ctx.device, on_step=on_step)]
    return entry


def _report(ctx: StageContext) -> list[StageReport]:
    written = write_run_report(ctx.cfg, ctx.lake, ctx.run_id, ctx.reports,
                               {**ctx.extra, "pipeline": [*ctx.stages_run, "report"]})
    ctx.extra.update(summary_uri=written["summary_uri"], report_uri=written["report_uri"])
    return []


def _skipped(stage: str, why: str) -> StageReport:
    return StageReport(stage, details={"skipped": why})


# The order is a valid execution order: every stage comes after the ones in its `after`.
STAGES: tuple[Stage, ...] = (
    Stage("ingest", "spark", ("raw/feeds", "raw/articles"), ("raw_feeds", "raw_articles"), (),
          _ingest),
    Stage("explode_clean", "spark", ("raw_feeds", "raw_articles"),
          ("posts", "clean_posts", "quarantine", "duplicates", "dedup_index", "dedup_links",
           "documents", "clean_paragraphs"), ("ingest",), _explode_clean),
    Stage("validate_clean_posts", "great_expectations", ("clean_posts",), ("data_docs",),
          ("explode_clean",), _gate("clean"), launch={"gate": "clean"}),
    Stage("images", "beam", ("raw/images",), ("clean_images", "image_quarantine"), (),
          _images, launch={"module": "pipelines.beam.images", "options": {}}),
    Stage("validate_clean_images", "great_expectations", ("clean_images",), ("data_docs",),
          ("images",), _gate("images"), launch={"gate": "images"}),
    Stage("encode", "beam", ("documents",), ("records/<dataset>",), ("validate_clean_posts",),
          _encode("posts"), also_on=("spark",),
          launch={"module": "pipelines.beam.encode", "options": {}}),
    Stage("validate_dataset", "great_expectations", ("records/<dataset>",), ("data_docs",),
          ("encode",), _gate("dataset"), launch={"gate": "dataset"}),
    # Drift gates: the version's statistics.json against the previous version's, eval vs train.
    Stage("drift_dataset", "python", ("records/<dataset>/v=*/statistics.json",),
          ("reports/<run_id>/drift-<dataset>.json",), ("validate_dataset",), _drift("posts"),
          launch={"drift": "posts"}),
    Stage("encode_images", "beam", ("clean_images",), ("records/<image_dataset>",),
          ("validate_clean_images",), _encode("images"),
          also_on=("spark",),
          launch={"module": "pipelines.beam.encode", "options": {"dataset": "images"}}),
    Stage("drift_images", "python", ("records/<image_dataset>/v=*/statistics.json",),
          ("reports/<run_id>/drift-<image_dataset>.json",), ("encode_images",), _drift("images"),
          launch={"drift": "images"}),
    # A template: one train_<model> per configured model (declared_stages fills it in).
    Stage("train_<model>", "torch", ("records/<dataset of the model's kind>",),
          ("models/<model>/<run_id>",), (), lambda ctx: [], launch={"model": None}),
    Stage("report", "python", ("reports/<run_id>",), ("summary.json", "report.html"), (),
          _report),
)

SPARK_JOBS: tuple[str, ...] = tuple(s.name for s in STAGES if s.runs_on("spark"))
_IMAGE_STAGES = ("images", "validate_clean_images")


def stage_named(name: str) -> Stage:
    """The declared stage ``name`` (``train_<model>`` is a template, not found here)."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"no stage {name!r}; stages: {[s.name for s in STAGES]}")


def declared_stages(cfg: ShardforgeConfig) -> list[Stage]:
    """The stages of ``cfg``, in execution order, with every ``after`` filled in.

    The image stages are there when the config names an image corpus; ``encode_images``
    and ``drift_images`` when it also has an ``image_dataset``; one ``train_<model>`` per
    model in :meth:`~core.config.ShardforgeConfig.train_order`, after the drift gate of its
    dataset and after the model its ``init_from`` names (an lm with ``tokens_of``: after its
    VQ model, whose codes its train stage exports first); ``report`` last, after every other
    stage that has no successor.
    """
    from models.kinds import KINDS

    has_images = cfg.images.corpus in cfg.corpora
    out: list[Stage] = []
    for stage in STAGES:
        if stage.name in _IMAGE_STAGES and not has_images:
            continue
        if stage.name in ("encode_images", "drift_images") and not (
                has_images and cfg.image_dataset is not None):
            continue
        if stage.name == "train_<model>":
            for model in cfg.train_order():
                dataset = KINDS[cfg.models[model].kind].dataset
                after = ("drift_dataset",) if dataset == "posts" else ("drift_images",)
                parents = (cfg.init_from_model(model), cfg.models[model].tokens_of)
                inputs = (f"records/<{dataset} dataset>",)
                if cfg.models[model].tokens_of is not None:  # VQGAN's second stage
                    after, inputs = (), (f"records/{cfg.models[model].tokens_of}-tokens",)
                out.append(replace(stage, name=f"train_{model}", entry=_train(model),
                                   after=after + tuple(f"train_{p}" for p in parents if p),
                                   inputs=inputs,
                                   outputs=(f"models/{model}/<run_id>",),
                                   launch={"model": model}))
            continue
        if stage.name == "report":
            upstream = {a for s in out for a in s.after}
            stage = replace(stage, after=tuple(s.name for s in out if s.name not in upstream))
        out.append(stage)
    names = {s.name for s in out}
    return [replace(s, after=tuple(a for a in s.after if a in names)) for s in out]


def run_stages(stage_list: list[Stage], ctx: StageContext) -> Iterator[tuple[Stage, list[StageReport]]]:
    """Run the stages in order in this process; yields each stage with its reports.

    A stage that raises stops the run there (a gate's failure names its expectation).
    ``ctx.reports`` collects every report so far, which the ``report`` stage writes out, and
    ``ctx.extra["durations_s"]`` each stage's wall time (the report stage's own is the time
    to write the report, known only after it: it is the one stage not listed).
    """
    durations = ctx.extra.setdefault("durations_s", [])  # [stage, seconds] in run order
    for stage in stage_list:
        ctx.progress(f"stage {stage.name} ({stage.engine})")
        started = time.perf_counter()
        reports = stage.entry(ctx)
        durations.append([stage.name, round(time.perf_counter() - started, 3)])
        ctx.reports.extend(reports)
        ctx.stages_run.append(stage.name)
        fault_point(f"after:{stage.name}")  # kill -9 tests only (records.faults)
        yield stage, reports
