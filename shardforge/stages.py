"""The stage entry points the CLI (and the Airflow DAG) call, one function each.

Each takes the validated config and the lake and returns a :class:`StageReport`
with its row accounting, so ``shardforge run`` can print one summary table and
write ``summary.json``. Engines are imported inside the functions: a GPU host with
only ``records/`` and ``models/`` installed can still run ``shardforge train``.
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
    "StageReport",
    "article_partitions",
    "clean",
    "corpus_partitions",
    "encode",
    "export_tokens",
    "feed_partitions",
    "image_dataset_uri",
    "image_partitions",
    "images",
    "resolve_init_from",
    "ingest",
    "missing_corpora",
    "new_run_id",
    "sample",
    "train",
]

Progress = Callable[[str], None]


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


def latest_model_run(lake: Lake, name: str) -> str:
    """The newest run id of model ``name`` (run ids sort by time).

    Raises:
        FileNotFoundError: the model has no runs in this lake.
    """
    folder = lake.fs_path(lake.model_runs(name))
    runs = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in lake.fs.ls(folder, detail=False)
                  ) if lake.fs.exists(folder) else []
    if not runs:
        raise FileNotFoundError(f"no run of model {name!r} to resume under {lake.root}/models/{name}")
    return runs[-1]


def new_run_id() -> str:
    return "run-" + _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _quiet(_: str) -> None:
    pass


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
    from pipelines.spark.articles import run_clean_paragraphs, run_explode_articles
    from pipelines.spark.clean import run_clean, run_explode
    from pipelines.spark.reconcile import JobCounts, record_job_run

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
             progress: Progress = _quiet) -> StageReport:
    """Great Expectations gate over ``clean_posts`` (``what="clean"``), ``clean_images`` or the dataset.

    Raises:
        ValidationFailed: an expectation failed; the message names it and its column.
    """
    from features.spec import load_spec
    from pipelines.validate.checks import check_clean_images, check_clean_posts, check_dataset

    docs = _data_docs_dir(lake, run_id)
    if what == "clean":
        dts = feed_partitions(cfg, lake)
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
        dts = image_partitions(cfg, lake)
        progress(f"validate: clean_images ({len(dts)} dt) against the clean_images suite")
        results = [check_clean_images(
            [lake.table(cfg.spark.database, "clean_images", dt) for dt in dts],
            height=cfg.images.height, width=cfg.images.width, labels=list(cfg.images.labels),
            docs_dir=docs)] if dts else []
    else:
        raise ValueError(f"validate: what must be 'clean', 'images' or 'dataset', got {what!r}")
    return StageReport(f"validate {what}", outputs=[r.docs_index for r in results if r.docs_index],
                       details={"gates": [r.summary() for r in results]})


def model_configs(cfg: ShardforgeConfig, name: str, *, vocab_size: int, eos_id: int):
    """Build the (LMConfig, TrainConfig) of ``models.<name>``, checking keys and types by name."""
    from core.config import ConfigError
    from models.lm import LMConfig
    from models.train import TrainConfig

    if name not in cfg.models:
        raise ConfigError(f"{cfg.source}: models.{name}: no such model (configured: {sorted(cfg.models)})")
    entry = cfg.models[name]
    model = _checked(cfg, name, "model", LMConfig, {"vocab_size": vocab_size, **entry.model},
                     build=lambda **v: LMConfig.preset(entry.preset, **v))
    return model, _checked(cfg, name, "train", TrainConfig, {"eos_id": eos_id, **entry.train})


def _checked(cfg: ShardforgeConfig, name: str, section: str, cls, values: dict, build=None):
    """``cls(**values)`` (or ``build(**values)``), with unknown keys and bad values named."""
    from core.config import ConfigError

    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"{cfg.source}: models.{name}.{section}.{unknown[0]}: unknown key")
    try:
        return (build or cls)(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cfg.source}: models.{name}.{section}: {exc}") from None


def image_dataset_uri(cfg: ShardforgeConfig, lake: Lake) -> str:
    """The image dataset version folder (``encode --dataset images`` writes it)."""
    from core.config import ConfigError

    if cfg.image_dataset is None:
        raise ConfigError(f"{cfg.source}: image_dataset: not configured (the vision models train on it)")
    return lake.records(cfg.image_dataset.name, cfg.image_dataset.version)


def _train_vision(cfg: ShardforgeConfig, lake: Lake, name: str, *, run_id: str,
                  device: str | None, on_step, resume: bool) -> StageReport:
    from models.efficientnet import EfficientNetConfig
    from models.train_vision import VisionTrainConfig, train_vision
    from models.vqvae import VQVAEConfig

    entry = cfg.models[name]
    if entry.kind == "vqvae":
        model_cfg = _checked(cfg, name, "model", VQVAEConfig, dict(entry.model))
    else:
        values = {"num_classes": len(cfg.images.labels), **entry.model}
        model_cfg = _checked(cfg, name, "model", EfficientNetConfig, values,
                             build=lambda **v: EfficientNetConfig.preset(entry.preset, **v))
    train_cfg = _checked(cfg, name, "train", VisionTrainConfig, dict(entry.train))
    if device is not None:
        train_cfg = dataclasses.replace(train_cfg, device=device)
    result = train_vision(kind=entry.kind, dataset_uri=image_dataset_uri(cfg, lake),
                          out_uri=lake.model_run(name, run_id), model_config=model_cfg,
                          train_config=train_cfg, on_step=on_step, resume=resume)
    return StageReport(
        f"train {name}", outputs=[result.checkpoint_uri],
        details={"first_loss": result.first_loss, "final_loss": result.final_loss,
                 "steps": result.steps, "images": result.images, "device": result.device,
                 "precision": result.precision, "skipped_steps": result.skipped_steps,
                 "eval": result.eval_metrics},
    )


def export_tokens(cfg: ShardforgeConfig, lake: Lake, name: str, *, run_id: str,
                  device: str = "cpu") -> StageReport:
    """The code indices of the image dataset under VQ-VAE ``models.<name>`` run ``run_id``.

    Writes ``records/<name>-tokens/v=<run_id>``: ``input_ids`` per image (codes + 3, ids
    0/1/2 reserved like the posts dataset), which the LM trains on (VQGAN's second stage).
    """
    from core.config import ConfigError
    from models.vq_tokens import export_vq_tokens

    if cfg.models.get(name) is None or cfg.models[name].kind != "vqvae":
        raise ConfigError(f"{cfg.source}: models.{name}: not a vqvae model "
                          f"(configured: {sorted(cfg.models)})")
    dataset = f"{name}-tokens"
    out = lake.records(dataset, run_id)
    manifest = export_vq_tokens(checkpoint_uri=f"{lake.model_run(name, run_id)}/ckpt.pt",
                                dataset_uri=image_dataset_uri(cfg, lake), out_uri=out,
                                dataset=dataset, version=run_id, device=device)
    records = {split: info.records for split, info in manifest.splits.items()}
    return StageReport(f"tokens {name}", rows_in=sum(records.values()), rows_out=sum(records.values()),
                       outputs=[out], details={"records": records})


def resolve_init_from(cfg: ShardforgeConfig, lake: Lake, name: str, *, run_id: str) -> str | None:
    """The checkpoint ``models.<name>.train.init_from`` means, for the run ``run_id``.

    A model entry's name means that model's checkpoint of the same run id when there is one
    (``shardforge run`` and the DAG train both models under one run id, parent first), else
    of its latest run. Anything else is a checkpoint URI or run folder, returned as written.

    Raises:
        FileNotFoundError: the named model has no run, or its run no ``ckpt.pt``, yet.
    """
    ref = cfg.models[name].train.get("init_from") if name in cfg.models else None
    parent = cfg.init_from_model(name)
    if parent is None:
        return ref
    same_run = f"{lake.model_run(parent, run_id)}/ckpt.pt"
    if lake.fs.exists(lake.fs_path(same_run)):
        return same_run
    try:
        latest = latest_model_run(lake, parent)
    except FileNotFoundError:
        raise FileNotFoundError(f"models.{name}.train.init_from: model {parent!r} has no run yet "
                                f"under {lake.model_runs(parent)}; train it first "
                                f"(shardforge train {parent})") from None
    uri = f"{lake.model_run(parent, latest)}/ckpt.pt"
    if not lake.fs.exists(lake.fs_path(uri)):
        raise FileNotFoundError(f"models.{name}.train.init_from: the latest run of {parent!r} "
                                f"has no checkpoint ({uri}); did it finish?")
    return uri


def train(cfg: ShardforgeConfig, lake: Lake, name: str, *, run_id: str, device: str | None = None,
          on_step: Callable[[dict], None] | None = None, resume: bool = False) -> StageReport:
    """PyTorch: train ``models.<name>`` on its dataset's train split; checkpoint under ``models/``.

    ``lm`` models train on the posts dataset, ``vqvae`` and ``efficientnet`` models on the
    image dataset. With ``resume``, the run ``run_id`` continues from its ``ckpt.pt`` (same
    data order, RNG and optimizer state, so the loss curve is the one the uninterrupted run
    would have had). An lm whose ``train.init_from`` names another model entry starts from
    that model's checkpoint (see :func:`resolve_init_from`), e.g. Medusa-1 heads trained
    on a frozen ``lm`` (``freeze_backbone: true``).
    """
    from features.spec import RESERVED_IDS, load_spec
    from models.train import train_lm

    if name in cfg.models and cfg.models[name].kind != "lm":
        return _train_vision(cfg, lake, name, run_id=run_id, device=device, on_step=on_step,
                             resume=resume)

    spec = load_spec(cfg.resolve_path(cfg.feature_spec))
    _, text = spec.text_feature()
    model_cfg, train_cfg = model_configs(cfg, name, vocab_size=text.vocab_size, eos_id=RESERVED_IDS["eos"])
    if device is not None:
        train_cfg = dataclasses.replace(train_cfg, device=device)
    if train_cfg.init_from is not None:  # the run records the checkpoint, not the model name
        train_cfg = dataclasses.replace(
            train_cfg, init_from=resolve_init_from(cfg, lake, name, run_id=run_id))
    out = lake.model_run(name, run_id)
    result = train_lm(dataset_uri=lake.records(cfg.dataset.name, cfg.dataset.version), out_uri=out,
                      model_config=model_cfg, train_config=train_cfg, on_step=on_step,
                      resume=resume)
    return StageReport(
        f"train {name}", outputs=[result.checkpoint_uri],
        details={"first_loss": result.first_loss, "final_loss": result.final_loss,
                 "steps": result.steps, "tokens": result.tokens, "device": result.device,
                 "precision": result.precision, "attention": result.attention_backend,
                 "init_from": train_cfg.init_from, "freeze_backbone": train_cfg.freeze_backbone},
    )
