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

from shardforge.config import ShardforgeConfig
from shardforge.lake import Lake

__all__ = [
    "StageReport",
    "clean",
    "encode",
    "feed_partitions",
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


def feed_partitions(cfg: ShardforgeConfig, lake: Lake) -> list[str]:
    """The dt partitions of the ``feeds`` corpus to process (configured, else all present)."""
    corpus = cfg.corpora.get("feeds")
    present = lake.raw_partitions("feeds")
    wanted = corpus.dt if corpus and corpus.dt else present
    return [dt for dt in wanted if dt in present]


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


def ingest(cfg: ShardforgeConfig, lake: Lake, spark, *, progress: Progress = _quiet) -> StageReport:
    """Spark: raw feed dumps → Hive ``raw_feeds`` (+ ``quarantine``), per dt."""
    from pipelines.spark.ingest import run_ingest_feeds

    report = StageReport("ingest")
    dts = feed_partitions(cfg, lake)
    progress(f"ingest: {len(dts)} feed partition(s) → {cfg.spark.database}.raw_feeds")
    for counts in run_ingest_feeds(spark, db=cfg.spark.database, lake=lake, partitions=dts):
        report.rows_in += counts.rows_in
        report.rows_out += counts.rows_out
        report.quarantined += counts.quarantined
    report.outputs = [lake.table(cfg.spark.database, "raw_feeds")]
    report.details = {"dt": dts, "unit": "files"}
    return report


def clean(cfg: ShardforgeConfig, lake: Lake, spark, *, run_id: str,
          progress: Progress = _quiet) -> list[StageReport]:
    """Spark: ``LATERAL VIEW posexplode`` into ``posts``, then clean into ``clean_posts``."""
    from pipelines.spark.clean import run_clean, run_explode
    from pipelines.spark.reconcile import JobCounts, record_job_run

    db = cfg.spark.database
    explode, cleaned = StageReport("explode"), StageReport("clean")
    dts = feed_partitions(cfg, lake)
    for dt in dts:
        progress(f"explode: raw_feeds dt={dt} → {db}.posts (LATERAL VIEW posexplode)")
        written = run_explode(spark, db=db, dt=dt)
        record_job_run(spark, db, run_id, JobCounts("explode_posts", dt, written, written))
        explode.rows_in += written
        explode.rows_out += written
        progress(f"clean: posts dt={dt} → {db}.clean_posts")
        counts = run_clean(spark, db=db, dt=dt, clean=cfg.clean)
        record_job_run(spark, db, run_id, counts)
        cleaned.rows_in += counts.rows_in
        cleaned.rows_out += counts.rows_out
        cleaned.quarantined += counts.quarantined
        cleaned.duplicates_dropped += counts.duplicates_dropped
    explode.outputs = [lake.table(db, "posts")]
    cleaned.outputs = [lake.table(db, "clean_posts"), lake.table(db, "quarantine")]
    explode.details = cleaned.details = {"dt": dts, "unit": "posts"}
    return [explode, cleaned]


def encode(cfg: ShardforgeConfig, lake: Lake, *, progress: Progress = _quiet) -> StageReport:
    """Beam: ``clean_posts`` → feature transform → tf.Example shards under ``records/``."""
    from features.spec import load_spec
    from pipelines.beam.encode import run_encode

    dts = feed_partitions(cfg, lake)
    uri = lake.records(cfg.dataset.name, cfg.dataset.version)
    progress(f"encode: clean_posts ({len(dts)} dt) → {uri} on Beam {cfg.beam.runner}")
    result = run_encode(
        inputs=[f"{lake.table(cfg.spark.database, 'clean_posts', dt)}/*.parquet" for dt in dts],
        output_uri=uri,
        spec=load_spec(cfg.resolve_path(cfg.feature_spec)),
        dataset=cfg.dataset.name, version=cfg.dataset.version,
        splits=dict(cfg.dataset.splits), shards=dict(cfg.dataset.shards),
        runner=cfg.beam.runner, options=dict(cfg.beam.options),
        config=cfg.model_dump(mode="json"),
    )
    return StageReport("encode", rows_in=result.rows_in, rows_out=sum(result.records.values()),
                       outputs=[uri], details={"records": result.records, "shards": result.shards})


def model_configs(cfg: ShardforgeConfig, name: str, *, vocab_size: int, eos_id: int):
    """Build the (LMConfig, TrainConfig) of ``models.<name>``, checking keys and types by name."""
    from models.lm import LMConfig
    from models.train import TrainConfig
    from shardforge.config import ConfigError

    if name not in cfg.models:
        raise ConfigError(f"{cfg.source}: models.{name}: no such model (configured: {sorted(cfg.models)})")
    entry = cfg.models[name]
    built = []
    for section, cls, values in (
        ("model", LMConfig, {"vocab_size": vocab_size, **entry.model}),
        ("train", TrainConfig, {"eos_id": eos_id, **entry.train}),
    ):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{cfg.source}: models.{name}.{section}.{unknown[0]}: unknown key")
        try:
            built.append(LMConfig.preset(entry.preset, **values) if cls is LMConfig else cls(**values))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{cfg.source}: models.{name}.{section}: {exc}") from None
    return built[0], built[1]


def train(cfg: ShardforgeConfig, lake: Lake, name: str, *, run_id: str, device: str | None = None,
          on_step: Callable[[dict], None] | None = None) -> StageReport:
    """PyTorch: train ``models.<name>`` on the dataset's train split; checkpoint under ``models/``."""
    from features.spec import RESERVED_IDS, load_spec
    from models.train import train_lm

    spec = load_spec(cfg.resolve_path(cfg.feature_spec))
    _, text = spec.text_feature()
    model_cfg, train_cfg = model_configs(cfg, name, vocab_size=text.vocab_size, eos_id=RESERVED_IDS["eos"])
    if device is not None:
        train_cfg = dataclasses.replace(train_cfg, device=device)
    out = lake.model_run(name, run_id)
    result = train_lm(dataset_uri=lake.records(cfg.dataset.name, cfg.dataset.version), out_uri=out,
                      model_config=model_cfg, train_config=train_cfg, on_step=on_step)
    return StageReport(
        f"train {name}", outputs=[result.checkpoint_uri],
        details={"first_loss": result.first_loss, "final_loss": result.final_loss,
                 "steps": result.steps, "tokens": result.tokens, "device": result.device,
                 "precision": result.precision, "attention": result.attention_backend},
    )
