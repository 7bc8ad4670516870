"""The data stages' entry points, one function each, and what every stage reports.

Each takes the validated config and the lake and returns a :class:`StageReport` with its
row accounting, so ``shardforge run`` can print one summary table and write
``summary.json``. The order they run in is declared once, in :mod:`shardforge.pipeline`;
training is in :mod:`shardforge.training`. Engines are imported inside the functions: a GPU
host with only ``records/`` and ``models/`` installed can still run ``shardforge train``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.config import ShardforgeConfig
from core.lake import Lake

__all__ = [
    "StageContext",
    "StageReport",
    "article_partitions",
    "clean",
    "corpus_partitions",
    "encode",
    "feed_partitions",
    "image_partitions",
    "images",
    "ingest",
    "missing_corpora",
    "new_run_id",
    "sample",
    "validate",
]

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class StageReport:
    """What one stage did: rows in = rows out + quarantined + duplicates dropped."""

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    quarantined: int = 0
    duplicates_dropped: int = 0
    outputs: list[str] = field(default_factory=list)  # where its results lie
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StageContext:
    """What a declared stage's entry gets (see :mod:`shardforge.pipeline`).

    Attributes:
        dts: the partitions to work on; None = the configured ones (else all present).
            A DAG run passes its own ``dt``.
        encode_engine: ``beam`` or ``spark``, for the encode stages.
        spark_factory: starts the SparkSession the first Spark stage asks for.
        train_bar: ``train_bar(model, steps)`` is a context manager giving the ``on_step``
            callback of a training stage (the CLI draws a progress bar); None = no callback.
        reports, stages_run: filled as stages run; the report stage writes them out.
        extra: more for the summary (e.g. the corpora the lake lacks).
    """

    cfg: ShardforgeConfig
    lake: Lake
    run_id: str
    progress: Progress = _quiet
    device: str | None = None
    dts: list[str] | None = None
    encode_engine: str = "beam"
    spark_factory: Callable[[], Any] | None = None
    train_bar: Callable[[str, int], Any] | None = None
    reports: list[StageReport] = field(default_factory=list)
    stages_run: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    _spark: Any = None

    def spark(self):
        """The SparkSession (started on first use)."""
        if self._spark is None:
            if self.spark_factory is None:
                raise RuntimeError("this stage needs Spark, but no SparkSession factory was given")
            self._spark = self.spark_factory()
        return self._spark

    def stop_spark(self) -> None:
        """Stop the SparkSession if a stage started one."""
        if self._spark is not None:
            self._spark.stop()
            self._spark = None


_last_run_time: _dt.datetime | None = None


def new_run_id() -> str:
    """A new run id, ``run-YYYYmmddTHHMMSSffffffZ`` (UTC, microseconds): ids sort in the order
    they were made, and no two calls of one process return the same id.

    Microseconds, not seconds: two CLI commands within one second (``train gan`` then
    ``train prior``) got one id, and a ``tokens_of`` model took the other's run for its own
    and exported its codes unasked.
    """
    global _last_run_time
    now = _dt.datetime.now(_dt.UTC)
    if _last_run_time is not None and now <= _last_run_time:
        now = _last_run_time + _dt.timedelta(microseconds=1)
    _last_run_time = now
    return "run-" + now.strftime("%Y%m%dT%H%M%S%fZ")


def missing_corpora(cfg: ShardforgeConfig, lake: Lake) -> dict[str, str]:
    """Corpora the config names but the lake lacks (or lacks the named dt of): name -> why."""
    missing = {}
    for name, corpus in cfg.corpora.items():
        present = set(lake.raw_partitions(name))
        if not present:
            missing[name] = f"no partitions under {lake.raw(name)}"
        elif corpus.dt and not set(corpus.dt) <= present:
            missing[name] = f"missing dt {sorted(set(corpus.dt) - present)} under {lake.raw(name)}"
    return missing


def corpus_partitions(cfg: ShardforgeConfig, lake: Lake, name: str) -> list[str]:
    """The dt partitions of corpus ``name`` to process (configured, else all present)."""
    corpus = cfg.corpora.get(name)
    present = lake.raw_partitions(name)
    wanted = corpus.dt if corpus and corpus.dt else present
    return [dt for dt in wanted if dt in present]


def feed_partitions(cfg: ShardforgeConfig, lake: Lake) -> list[str]:
    """The dt partitions of the ``feeds`` corpus to process (configured, else all present)."""
    return corpus_partitions(cfg, lake, "feeds")


def article_partitions(cfg: ShardforgeConfig, lake: Lake) -> list[str]:
    """The dt partitions of the ``articles`` corpus (none if the config does not name it)."""
    return corpus_partitions(cfg, lake, "articles") if "articles" in cfg.corpora else []


def image_partitions(cfg: ShardforgeConfig, lake: Lake) -> list[str]:
    """The dt partitions of the image corpus to clean (none if it is not configured or absent)."""
    name = cfg.images.corpus
    if name not in cfg.corpora or name in missing_corpora(cfg, lake):
        return []
    return corpus_partitions(cfg, lake, name)


def sample(cfg: ShardforgeConfig, lake: Lake, *, force: bool = False) -> StageReport:
    """Write the seeded sample corpus under ``raw/`` for ``sample.dt`` (skipped if raw/ has data)."""
    from shardforge.sample import CORPORA, write_sample_corpus

    report = StageReport("sample")
    dt = cfg.sample.dt
    if not force and any(lake.raw_partitions(c) for c in CORPORA):
        report.details["skipped"] = "raw/ already holds data"
        return report
    summary = write_sample_corpus(
        lambda corpus: lake.fs_path(lake.raw(corpus, dt)), fs=lake.fs,
        posts=cfg.sample.posts, images=cfg.sample.images, seed=cfg.sample.seed,
    )
    report.rows_out = summary.posts
    report.outputs = [lake.raw(c, dt) for c in CORPORA]
    report.details = {"files": summary.files, "posts": summary.posts, "articles": summary.articles,
                      "images": summary.images, "dirty": summary.dirty}
    return report


def ingest(cfg: ShardforgeConfig, lake: Lake, spark, *,
           progress: Progress = _quiet) -> list[StageReport]:
    """Spark: raw feed dumps → Hive ``raw_feeds``, JSONL articles → ``raw_articles`` (+ quarantine).

    Returns:
        ``[ingest (unit: files), ingest articles (unit: records = JSON lines or bad files)]``.
    """
    from pipelines.spark.ingest import run_ingest_feeds
    from pipelines.spark.ingest_articles import run_ingest_articles

    db = cfg.spark.database
    feeds, articles = StageReport("ingest"), StageReport("ingest articles")
    for report, dts, table, run in (
        (feeds, feed_partitions(cfg, lake), "raw_feeds", run_ingest_feeds),
        (articles, article_partitions(cfg, lake), "raw_articles", run_ingest_articles),
    ):
        progress(f"{report.stage}: {len(dts)} partition(s) → {db}.{table}")
        for counts in run(spark, db=db, lake=lake, partitions=dts):
            _add(report, counts)
        report.outputs = [lake.table(db, table)]
        report.details = {"dt": dts, "unit": "files" if report is feeds else "records"}
    return [feeds, articles]


def _add(report: StageReport, counts) -> None:
    report.rows_in += counts.rows_in
    report.rows_out += counts.rows_out
    report.quarantined += counts.quarantined
    report.duplicates_dropped += counts.duplicates_dropped
    by_kind = report.details.setdefault("duplicates_by_kind", {}) if counts.duplicates_by_kind else {}
    for kind, n in counts.duplicates_by_kind.items():
        by_kind[kind] = by_kind.get(kind, 0) + n


def clean(cfg: ShardforgeConfig, lake: Lake, spark, *, run_id: str,
          progress: Progress = _quiet) -> list[StageReport]:
    """Spark: explode (``LATERAL VIEW``) and clean posts and articles; one job_runs row per job.

    Returns:
        ``[explode, clean, explode articles, clean paragraphs]``; the clean reports carry
        ``details["duplicates_by_kind"]`` (exact / truncation / near).
    """
    from core.accounting import JobCounts
    from pipelines.spark.articles import run_clean_paragraphs, run_explode_articles
    from pipelines.spark.clean import run_clean, run_explode
    from pipelines.spark.reconcile import record_job_run

    db = cfg.spark.database
    explode, cleaned = StageReport("explode"), StageReport("clean")
    explode_a, cleaned_a = StageReport("explode articles"), StageReport("clean paragraphs")
    dts = feed_partitions(cfg, lake)
    within: list[JobCounts] = []
    for dt in dts:
        progress(f"explode: raw_feeds dt={dt} → {db}.posts (LATERAL VIEW posexplode)")
        written = run_explode(spark, db=db, dt=dt)
        counts = JobCounts("explode_posts", dt, written, written)
        record_job_run(spark, db, run_id, counts)
        _add(explode, counts)
        progress(f"clean: posts dt={dt} → {db}.clean_posts, linked with the other dts")
        within.append(run_clean(spark, db=db, dt=dt, clean=cfg.clean))
    if dts:
        progress(f"documents: {db}.dedup_index + dedup_links → {db}.documents")
        build = refresh_documents(cfg, lake, spark)
        for counts in within:
            counts = with_seen(counts, build.seen_by_dt.get(counts.dt, 0))
            record_job_run(spark, db, run_id, counts)
            _add(cleaned, counts)
        # The documents span every dt: their row goes with the newest dt of this run.
        record_job_run(spark, db, run_id, dataclasses.replace(build.counts(), dt=max(dts)))
        cleaned.details["documents"] = build.snapshot()
    article_dts = article_partitions(cfg, lake)
    for dt in article_dts:
        progress(f"explode: raw_articles dt={dt} → {db}.paragraphs, {db}.article_tags (LATERAL VIEW OUTER)")
        exploded = run_explode_articles(spark, db=db, dt=dt)
        for job, rows in (("explode_paragraphs", exploded.paragraphs), ("explode_tags", exploded.tags)):
            record_job_run(spark, db, run_id, JobCounts(job, dt, rows, rows))
        _add(explode_a, JobCounts("explode_paragraphs", dt, exploded.paragraphs, exploded.paragraphs))
        explode_a.details["tags"] = explode_a.details.get("tags", 0) + exploded.tags
        progress(f"clean: paragraphs dt={dt} → {db}.clean_paragraphs")
        counts = run_clean_paragraphs(spark, db=db, dt=dt, clean=cfg.clean)
        record_job_run(spark, db, run_id, counts)
        _add(cleaned_a, counts)
    explode.outputs = [lake.table(db, "posts")]
    cleaned.outputs = [lake.table(db, "documents"), lake.table(db, "clean_posts"), lake.table(db, "quarantine"),
                       lake.table(db, "duplicates"), lake.table(db, "document_members")]
    explode_a.outputs = [lake.table(db, "paragraphs"), lake.table(db, "article_tags")]
    cleaned_a.outputs = [lake.table(db, "clean_paragraphs"), lake.table(db, "quarantine")]
    for report, report_dts, unit in ((explode, dts, "posts"), (cleaned, dts, "posts"),
                                     (explode_a, article_dts, "paragraphs"),
                                     (cleaned_a, article_dts, "paragraphs")):
        report.details.update(dt=report_dts, unit=unit)
    return [explode, cleaned, explode_a, cleaned_a]


def with_seen(counts, seen: int):
    """A dt's within-dt clean counts with its ``seen`` copies (posts kept as another dt's
    document) moved from rows out to duplicates; checked."""
    by_kind = {**counts.duplicates_by_kind, "seen": seen}
    return dataclasses.replace(counts, rows_out=counts.rows_out - seen,
                               duplicates_dropped=counts.duplicates_dropped + seen,
                               duplicates_by_kind=by_kind).check()


def refresh_documents(cfg: ShardforgeConfig, lake: Lake, spark):
    """Rebuild ``documents`` from every committed dt and write its snapshot; returns the build."""
    from pipelines.encode.inputs import write_documents_snapshot
    from pipelines.spark.documents import rebuild_documents

    build = rebuild_documents(spark, db=cfg.spark.database)
    write_documents_snapshot(lake, cfg.spark.database, build.snapshot())
    return build


def images(cfg: ShardforgeConfig, lake: Lake, *, progress: Progress = _quiet) -> StageReport:
    """Beam: the image corpus → ``clean_images`` + ``image_quarantine`` (+ ``image_duplicates``)."""
    from pipelines.beam.images import run_images

    report = StageReport("images")
    dts = image_partitions(cfg, lake)
    db = cfg.spark.database
    for dt in dts:
        progress(f"images: raw/{cfg.images.corpus}/dt={dt} → {db}.clean_images on Beam {cfg.beam.runner}")
        _add(report, run_images(cfg, dt))
    report.outputs = [lake.table(db, "clean_images"), lake.table(db, "image_quarantine")]
    report.details.update(dt=dts, unit="images")
    return report


ENGINES = ("beam", "spark")
DATASETS = ("posts", "images")


def encode(cfg: ShardforgeConfig, lake: Lake, *, engine: str = "beam", spark=None,
           dataset: str = "posts", progress: Progress = _quiet) -> StageReport:
    """Analyze and encode a dataset into tf.Example shards under ``records/``, on Beam or Spark.

    Args:
        engine: ``beam`` (``beam.runner``) or ``spark`` (needs ``spark``, a SparkSession).
        dataset: ``posts`` (``documents`` → the ``dataset:`` section, ``feature_spec``) or
            ``images`` (``clean_images`` → the ``image_dataset:`` section and its spec).

    Returns:
        The report: rows in = rows out (encoded) + quarantined; ``details`` holds records and
        shards per split, the engine and the artifacts' URIs.

    Raises:
        ConfigError: ``images`` without an ``image_dataset`` section.
        FileNotFoundError: ``posts`` before ``clean`` built the documents.
        ValueError: an unknown engine or dataset, or ``spark`` without a session.
    """
    from features.spec import load_spec
    from pipelines.encode.inputs import dataset_inputs

    if engine not in ENGINES:
        raise ValueError(f"encode: engine must be one of {ENGINES}, got {engine!r}")
    source = dataset_inputs(cfg, lake, dataset, image_dts=image_partitions(cfg, lake) if dataset == "images" else ())
    entry, table, dts = source.entry, source.table, source.dts
    uri = lake.records(entry.name, entry.version)
    common = {
        "lake": lake, "spec": load_spec(cfg.resolve_path(source.spec_path)), "inputs": source.inputs,
        "dataset": entry.name, "version": entry.version, "splits": dict(entry.splits),
        "shards": dict(entry.shards), "config": source.config,
    }
    if engine == "beam":
        from pipelines.beam.encode import run_encode

        progress(f"encode: {table} ({len(dts)} dt) → {uri} on Beam {cfg.beam.runner}")
        result = run_encode(**common, runner=cfg.beam.runner, options=dict(cfg.beam.options))
    else:
        if spark is None:
            raise ValueError("encode: engine 'spark' needs a SparkSession (spark=...)")
        from pipelines.spark.encode import run_encode as run_spark_encode

        progress(f"encode: {table} ({len(dts)} dt) → {uri} on Spark {cfg.spark.master}")
        result = run_spark_encode(spark, **common)
    return StageReport("encode" if dataset == "posts" else f"encode {dataset}",
                       rows_in=result.rows_in, rows_out=result.documents,
                       quarantined=result.quarantined, outputs=[uri],
                       details={"records": result.records, "shards": result.shards,
                                "engine": engine, "dt": dts, "artifacts": result.artifacts})


def _data_docs_dir(lake: Lake, run_id: str) -> str | None:
    """Where GE writes Data Docs: ``reports/<run_id>/data_docs`` on a local lake.

    GE's site builder writes to a local folder; on an HDFS lake the gates still run and
    fail the same way, and their messages carry the failures, but no HTML is kept.
    """
    return str(lake.local_path(lake.reports(run_id)) / "data_docs") if lake.is_local else None


def validate(cfg: ShardforgeConfig, lake: Lake, *, run_id: str, what: str,
             dts: list[str] | None = None, progress: Progress = _quiet) -> StageReport:
    """Great Expectations gate over ``clean_posts`` (``what="clean"``), ``clean_images`` or the dataset.

    ``dts`` narrows the clean_posts and clean_images gates to those partitions (default:
    the configured ones). Data Docs go to ``reports/<run_id>/data_docs`` on a local lake;
    on any other filesystem the gates run the same and their messages carry the failures.
    ``details["results"]`` holds each suite's result as a plain dict.

    Raises:
        ValidationFailed: an expectation failed; the message names it and its column.
    """
    from features.spec import load_spec
    from pipelines.validate.checks import check_clean_images, check_clean_posts, check_dataset

    docs = _data_docs_dir(lake, run_id)
    if what == "clean":
        dts = feed_partitions(cfg, lake) if dts is None else dts
        progress(f"validate: clean_posts ({len(dts)} dt) against the clean_posts suite")
        topics = sorted({*cfg.clean.topics, cfg.clean.default_topic})
        results = [check_clean_posts(
            [lake.table(cfg.spark.database, "clean_posts", dt) for dt in dts],
            min_chars=cfg.clean.min_chars, max_chars=cfg.clean.max_chars, topics=topics,
            docs_dir=docs)]
    elif what == "dataset":
        uri = lake.records(cfg.dataset.name, cfg.dataset.version)
        progress(f"validate: {uri} against the dataset suites")
        results = check_dataset(uri, spec=load_spec(cfg.resolve_path(cfg.feature_spec)),
                                docs_dir=docs)
    elif what == "images":
        dts = image_partitions(cfg, lake) if dts is None else dts
        progress(f"validate: clean_images ({len(dts)} dt) against the clean_images suite")
        results = [check_clean_images(
            [lake.table(cfg.spark.database, "clean_images", dt) for dt in dts],
            height=cfg.images.height, width=cfg.images.width, labels=list(cfg.images.labels),
            docs_dir=docs)] if dts else []
    else:
        raise ValueError(f"validate: what must be 'clean', 'images' or 'dataset', got {what!r}")
    return StageReport(f"validate {what}", outputs=[r.docs_index for r in results if r.docs_index],
                       details={"gates": [r.summary() for r in results],
                                "results": [dataclasses.asdict(r) for r in results]})


