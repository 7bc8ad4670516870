"""The ``shardforge`` command: one line and exit 2 for bad input; the whole run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shardforge.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "the following arguments are required: command"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["sample", "--posts", "many"], "argument --posts: invalid int value: 'many'"),
        (["sample", "--images", "5"], "argument --images: must be >= 6, got 5"),
        (["submit", "spark", "ingest", "--dt", "../../etc"], "--dt: not a date YYYY-MM-DD: '../../etc'"),
        (["submit", "spark", "ingest", "--dt", "2026-02-30"], "not a date YYYY-MM-DD: '2026-02-30'"),
        (["records", "inspect", "x", "--limit", "-1"], "argument --limit: must be >= 0, got -1"),
        (["train", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["run", "--lake", "s3://bucket/lake"], "scheme 's3' is not supported"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_lake_that_cannot_be_written_is_named_in_one_line(capsys):
    # /sys is read-only (EPERM or EROFS, whoever runs the test, root included).
    assert main(["sample", "--lake", "/sys/kernel/shardforge-lake"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: /sys/kernel/shardforge-lake") and "not writable" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_broken_config_names_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark:\n  master: local[1]\n  cores: 2\n")
    assert main(["ingest", "--config", str(bad), "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{bad}: spark.cores: unknown key" in err.replace("\n", "")


def test_run_fails_on_a_model_block_typo_at_once_before_any_engine(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("models:\n  lm: {train: {lrr: 0.1}}\n", encoding="utf-8")
    probe = ("import sys, time; from shardforge.cli import main; t = time.perf_counter(); "
             f"rc = main(['run', '--config', {str(bad)!r}, '--lake', {str(tmp_path / 'lake')!r}]); "
             "print(rc, round(time.perf_counter() - t, 3), sorted(m for m in ('pyspark', 'apache_beam', "
             "'torch', 'great_expectations') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    rc, seconds, engines = out.stdout.split(" ", 2)
    assert rc == "2" and engines.strip() == "[]", out.stdout + out.stderr
    assert float(seconds) < 2.0
    assert "models.lm.train.lrr: unknown key" in out.stderr and "did you mean 'lr'" in out.stderr
    assert not (tmp_path / "lake").exists()  # nothing ran, not even the sample


def test_unknown_model_is_a_config_error(tmp_path, capsys):
    assert main(["train", "gpt5", "--lake", str(tmp_path)]) == 2
    assert "models.gpt5: no such model" in capsys.readouterr().err.replace("\n", "")


MEDUSA1_CONFIG = """
lake: {{root: "{lake}"}}
feature_spec: "{spec}"
models:
  medusa:                      # listed first: init_from, not file order, decides what comes first
    model: {{medusa_heads: 2}}
    train: {{init_from: lm, freeze_backbone: true, steps: 2, batch_size: 4, warmup_steps: 1}}
  lm:
    train: {{steps: 3, batch_size: 4, warmup_steps: 1}}
"""


def test_medusa1_model_starts_from_the_latest_run_of_the_model_it_names(tmp_path, capsys):
    import torch

    from models.checkpoint import load_checkpoint
    from records.example_codec import encode_example
    from records.spec import VarLenFeature
    from records.writer import DatasetWriter

    lake = tmp_path / "lake"
    config = tmp_path / "medusa1.yaml"
    config.write_text(MEDUSA1_CONFIG.format(lake=lake, spec=ROOT / "conf/features/posts.yaml"))
    # The posts dataset without Spark and Beam: byte-token documents (ids 3.. as the spec's).
    with DatasetWriter(uri=(lake / "records/posts/v=1").as_uri(), dataset="posts", version="1",
                       feature_spec={"input_ids": VarLenFeature("int64")}) as writer:
        for i in range(40):
            doc = [3 + (i + j) % 200 for j in range(20 + i % 30)]
            writer.write("train", encode_example({"input_ids": doc}))
    common = ["--config", str(config), "--device", "cpu"]

    assert main(["train", "medusa", *common]) == 1  # its lm has not been trained yet
    assert "model 'lm' has no run yet" in capsys.readouterr().err.replace("\n", "")
    assert main(["train", "lm", *common]) == 0
    assert main(["train", "medusa", *common]) == 0
    assert "medusa started from file://" in capsys.readouterr().err.replace("\n", "")
    [lm_ckpt] = (lake / "models/lm").glob("run-*/ckpt.pt")
    [medusa_ckpt] = (lake / "models/medusa").glob("run-*/ckpt.pt")
    lm, medusa = load_checkpoint(str(lm_ckpt)), load_checkpoint(str(medusa_ckpt))
    assert medusa["train_config"]["init_from"] == lm_ckpt.as_uri()  # the resolved checkpoint
    assert medusa["train_config"]["freeze_backbone"] is True
    assert all(torch.equal(medusa["model"][k], v) for k, v in lm["model"].items())


def _subcommands(parser, prefix=()):
    """Every leaf subcommand of the CLI's parser, as argv prefixes."""
    import argparse

    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        return [prefix]
    return [leaf for name, sub in actions[0].choices.items() for leaf in _subcommands(sub, (*prefix, name))]


def test_every_subcommand_has_help():
    from shardforge.cli import build_parser

    leaves = _subcommands(build_parser())
    assert {" ".join(c) for c in leaves} >= {
        "sample", "ingest", "clean", "images", "encode", "train", "tokens", "validate", "report",
        "run", "submit", "dedup explain", "records inspect", "records verify"}
    for command in leaves:
        out = subprocess.run([sys.executable, "-m", "shardforge.cli", *command, "--help"],
                             capture_output=True, text=True, check=True).stdout
        assert out.startswith("usage: shardforge " + " ".join(command)), command
        if command[0] != "records":  # records read a path, not the lake
            assert "--config" in out and "--lake" in out, command


def test_report_takes_the_latest_run_that_finished(tmp_path, capsys):
    from core.lake import Lake
    from shardforge.stages import StageReport
    from shardforge.summary import latest_summary, write_summary

    lake = Lake(str(tmp_path / "lake"))
    assert main(["report", "--lake", str(tmp_path / "lake")]) == 1
    err = capsys.readouterr().err.strip()
    assert "no completed run" in err and len(err.splitlines()) == 1
    write_summary(lake, "run-20261101T000000Z", [StageReport("ingest", 3, 3)], {})
    # What validate, a failed gate or a killed run leave: a newer folder without summary.json.
    for run in ("run-20261102T000000Z", "run-20261103T000000Z"):
        (tmp_path / "lake" / "reports" / run / "data_docs").mkdir(parents=True)
    assert latest_summary(lake)["run_id"] == "run-20261101T000000Z"
    with pytest.raises(FileNotFoundError, match="run-20261103T000000Z has no summary"):
        latest_summary(lake, "run-20261103T000000Z")


def test_sample_writes_a_deterministic_corpus(tmp_path, capsys):
    for lake in ("a", "b"):
        assert main(["sample", "--lake", str(tmp_path / lake), "--posts", "50", "--images", "10"]) == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files_a and any("raw/feeds/dt=2026-11-01" in str(p) for p in files_a)
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    # A second sample into a lake that has data is a no-op unless forced.
    assert main(["sample", "--lake", str(tmp_path / "a")]) == 0
    assert "raw/ already holds data" in capsys.readouterr().err


VISION_MODELS = """\
  vq:
    kind: vqvae
    preset: tiny
    train: {steps: 2, batch_size: 8, warmup_steps: 1}
  net:
    kind: efficientnet
    preset: tiny
    train: {steps: 2, batch_size: 8, warmup_steps: 1}
"""


def _shardforge(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "shardforge.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.integration
def test_run_end_to_end_twice_gives_the_same_shards(tmp_path):
    config = tmp_path / "small.yaml"
    text = (ROOT / "conf" / "sample.yaml").read_text(encoding="utf-8")
    text = text.replace("posts: 3000", "posts: 300").replace("images: 200", "images: 20")
    text = text.replace("feature_spec: features/posts.yaml", f"feature_spec: {ROOT / 'conf/features/posts.yaml'}")
    text = text.replace("spec: features/images.yaml", f"spec: {ROOT / 'conf/features/images.yaml'}")
    text = text.replace("steps: 40", "steps: 6")
    # Vision models in the config: run must encode the image dataset and train them too.
    text = text.replace("\nmodels:\n", "\nmodels:\n" + VISION_MODELS, 1)
    config.write_text(text, encoding="utf-8")
    lake = tmp_path / "lake"

    first = _shardforge("run", "--config", str(config), "--lake", str(lake), "--device", "cpu", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    for stage in ("ingest", "explode", "clean", "encode", "train lm"):
        assert stage in first.stdout
    dataset = lake / "records/posts/v=1"
    assert (dataset / "_SUCCESS").exists()
    manifest = json.loads((dataset / "manifest.json").read_text())
    shards = sorted(dataset.glob("split=*/part-*.tfrecord"))
    assert len(shards) == 5 and all(Path(f"{s}.idx").exists() for s in shards)
    checkpoints = list((lake / "models/lm").glob("run-*/ckpt.pt"))
    assert len(checkpoints) == 1

    summary = json.loads(next((lake / "reports").glob("run-*/summary.json")).read_text())
    stages = {s["stage"]: s for s in summary["stages"]}
    for name in ("ingest", "clean"):
        s = stages[name]
        assert s["rows_in"] == s["rows_out"] + s["quarantined"] + s["duplicates_dropped"]
    assert stages["ingest"]["quarantined"] == 2  # the empty and the non-UTF-8 dump
    assert stages["clean"]["duplicates_dropped"] > 0
    assert stages["encode"]["rows_in"] == stages["clean"]["rows_out"] == stages["encode"]["rows_out"]
    assert sum(split["records"] for split in manifest["splits"].values()) == stages["encode"]["rows_out"]
    assert stages["train lm"]["details"]["final_loss"] < stages["train lm"]["details"]["first_loss"]
    # The declared sequence, the one the DAG is built from (test_airflow_dag checks the DAG's).
    from core.config import load_config
    from shardforge.pipeline import declared_stages

    assert summary["pipeline"] == [s.name for s in declared_stages(load_config(config))]
    # In run order (a list: summary.json sorts its keys), all but the report itself.
    assert [name for name, _ in summary["durations_s"]] == summary["pipeline"][:-1]
    assert "stage durations: ingest" in first.stdout
    assert {"encode_images", "train_vq", "train_net"} <= set(summary["pipeline"])
    assert stages["encode images"]["rows_out"] > 0
    for model, metric in (("lm", "perplexity"), ("vq", "psnr"), ("net", "accuracy")):
        details = stages[f"train {model}"]["details"]
        assert details["steps"] > 0 and metric in details["eval"], (model, details)
    assert "eval perplexity" in next((lake / "reports").glob("run-*/report.html")).read_text()

    digests = {p: p.read_bytes() for p in shards}
    second = _shardforge("run", "--config", str(config), "--lake", str(lake), "--device", "cpu", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "raw/ already holds data" in second.stdout
    assert {p: p.read_bytes() for p in sorted(dataset.glob("split=*/part-*.tfrecord"))} == digests
    assert len(list((lake / "models/lm").glob("run-*/ckpt.pt"))) == 2

    # A run resumed with a larger step budget continues from its checkpoint's step.
    longer = tmp_path / "longer.yaml"
    longer.write_text(text.replace("steps: 6", "steps: 9"), encoding="utf-8")
    resumed = _shardforge("train", "lm", "--resume", "--config", str(longer), "--lake", str(lake),
                          "--device", "cpu", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    latest = sorted((lake / "models/lm").glob("run-*"))[-1]
    assert f"resuming lm run {latest.name}" in resumed.stderr
    steps = [json.loads(line)["step"] for line in (latest / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 9 and steps == sorted(set(steps))  # one line per logged step, no repeats

    report = _shardforge("report", "--lake", str(lake), cwd=tmp_path)
    assert report.returncode == 0 and "encode" in report.stdout

    # The dedup audit: a document's copies and where its text came from.
    import pyarrow.parquet as pq

    documents = pq.read_table(lake / "warehouse/shardforge.db/documents").to_pylist()
    assert len(documents) == stages["encode"]["rows_out"]
    doc = max(documents, key=lambda d: d["times_seen"])
    explained = _shardforge("dedup", "explain", doc["doc_id"][:10], "--lake", str(lake), cwd=tmp_path)
    assert explained.returncode == 0, explained.stderr[-2000:]
    assert f"document {doc['doc_id']}: first seen {doc['first_seen_dt']}" in explained.stdout

    # Users read these shards with TensorFlow: tf.data + parse_example must see the features.
    tf = pytest.importorskip("tensorflow")
    parsed = next(iter(
        tf.data.TFRecordDataset([str(s) for s in shards if "split=train" in str(s)])
        .batch(64)
        .map(lambda b: tf.io.parse_example(b, {
            "input_ids": tf.io.VarLenFeature(tf.int64),
            "topic": tf.io.FixedLenFeature([1], tf.int64),
            "length": tf.io.FixedLenFeature([1], tf.int64),
        }))
    ))
    lengths = tf.sparse.to_dense(parsed["input_ids"]).shape[1]
    assert parsed["topic"].shape[0] == 64 and 0 < lengths <= 512
    row_lengths = tf.math.bincount(tf.cast(parsed["input_ids"].indices[:, 0], tf.int32), minlength=64)
    assert (row_lengths.numpy() > 0).all() and (parsed["length"].numpy() > 0).all()
    assert set(parsed["topic"].numpy()[:, 0].tolist()) <= set(range(5))
