"""The ``shardforge_daily`` DAG: it parses, its graph and params, and real ``dag.test()`` runs.

Airflow reads its settings when first imported, so nothing here imports it at module level:
the session fixture ``airflow_env`` first points ``AIRFLOW_HOME`` and a SQLite DB at a temp
folder, migrates it with the real ``airflow db migrate``, creates the ``gpu`` pool, and sets
``spark_default`` to ``local[2]``. The end-to-end run (real ``spark-submit``, Beam
DirectRunner, 3 CPU training steps) happens once per module (``daily_run``); the backfill
and gate tests reuse its lake and skip the stages they do not test with ``dag.test``'s
``mark_success_pattern``, so the module makes 4 ``spark-submit`` calls in all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_dags import tasks

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "airflow_dags"
DT0, DT1, DT2 = "2026-11-02", "2026-11-03", "2026-11-04"  # DAG start_date 2026-11-01: none before
BAD_DT = "2026-11-09"
TASKS = {"prepare", "ingest", "explode_clean", "validate_clean_posts", "images",
         "validate_clean_images", "encode_images", "drift_images", "encode", "validate_dataset",
         "drift_dataset", "train_lm", "train_medusa", "report"}
SPARK_ONLY = r"validate_.*|images|encode.*|drift_.*|train_.*|report"  # a Spark-only backfill marks these done


def _tiny_config(lake: Path) -> str:
    """conf/sample.yaml with a tmp lake, the feature specs made absolute and 2-3 training steps."""
    text = (ROOT / "conf" / "sample.yaml").read_text(encoding="utf-8")
    text = text.replace("root: ./lake", f"root: {lake}")
    text = text.replace("feature_spec: features/posts.yaml",
                        f"feature_spec: {ROOT / 'conf' / 'features' / 'posts.yaml'}")
    text = text.replace("spec: features/images.yaml",
                        f"spec: {ROOT / 'conf' / 'features' / 'images.yaml'}")
    text = text.replace("shards: {train: 4, eval: 1}", "shards: {train: 2, eval: 1}")
    text = text.replace("steps: 40", "steps: 3").replace("warmup_steps: 5", "warmup_steps: 1")
    text = text.replace("steps: 20", "steps: 2")  # the Medusa-1 heads on top of lm
    assert "steps: 3" in text and "steps: 2" in text and str(lake) in text  # keys still there
    return text


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-home")
    lake = tmp_path_factory.mktemp("airflow-lake")
    config = home / "shardforge.yaml"
    config.write_text(_tiny_config(lake), encoding="utf-8")
    bin_dir = str(Path(sys.executable).parent)  # spark-submit, torchrun, airflow
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        "SHARDFORGE_CONFIG": str(config),
        "SHARDFORGE_DAG_RETRIES": "0",  # a failing task must fail the test, not wait minutes
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    airflow = str(Path(bin_dir) / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True)
    subprocess.run([airflow, "pools", "set", "gpu", "1", "GPU slots for train_* tasks"],
                   check=True, capture_output=True)
    yield SimpleNamespace(home=home, lake=lake, config=str(config))
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def dag(airflow_env):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.get_dag("shardforge_daily")


def _run(dag, airflow_env, dt: str, **kwargs):
    """One ``dag.test()`` run for ``dt``; returns ``(dag_run, {task_id: state})``."""
    run = dag.test(logical_date=datetime.fromisoformat(dt).replace(tzinfo=UTC),
                   run_conf={"config": airflow_env.config, "device": "cpu"}, **kwargs)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _write_sample(airflow_env, dt: str, seed: int, posts: int = 200) -> None:
    from core.lake import Lake
    from shardforge.sample import write_sample_corpus

    lake = Lake(str(airflow_env.lake))
    write_sample_corpus(lambda corpus: lake.fs_path(lake.raw(corpus, dt)), fs=lake.fs,
                        posts=posts, images=6, seed=seed)


def _partitions(lake: Path, table: str) -> set[str]:
    folder = lake / "warehouse" / "shardforge.db" / table
    return {p.name.removeprefix("dt=") for p in folder.glob("dt=*")}


def test_dagbag_has_only_the_daily_dag_and_no_import_errors(airflow_env):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["shardforge_daily"]  # helpers are in .airflowignore


def test_parsing_imports_no_engine(airflow_env):
    probe = ("import sys, runpy; runpy.run_path(sys.argv[1]); "
             "print(sorted(m for m in ('pyspark', 'apache_beam', 'torch', 'great_expectations')"
             " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe, str(DAGS / "shardforge_daily.py")],
                         check=True, capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_task_graph(dag):
    downstream = {task_id: dag.task_dict[task_id].downstream_task_ids for task_id in TASKS}
    assert downstream == {
        "prepare": {"ingest", "images"},  # the stages that wait for nothing
        "ingest": {"explode_clean"},
        "explode_clean": {"validate_clean_posts"},
        "validate_clean_posts": {"encode"},
        "images": {"validate_clean_images"},
        "validate_clean_images": {"encode_images"},
        "encode_images": {"drift_images"},
        "drift_images": {"report"},  # no vision model in this config: a leaf
        "encode": {"validate_dataset"},
        "validate_dataset": {"drift_dataset"},
        "drift_dataset": {"train_lm", "train_medusa"},
        "train_lm": {"train_medusa"},  # medusa's init_from: lm
        "train_medusa": {"report"},
        "report": set(),
    }
    assert dag.task_dict["report"].trigger_rule == "none_failed"
    # Medusa-1 also runs when train_lm is skipped (params.models): then on lm's latest run.
    assert dag.task_dict["train_medusa"].trigger_rule == "none_failed"
    assert dag.task_dict["train_lm"].trigger_rule == "all_success"


VISION_MODELS = """\
  vq: {kind: vqvae, preset: tiny}
  net: {kind: efficientnet, preset: tiny}
"""


def test_the_dag_is_the_declared_sequence_run_executes(airflow_env, tmp_path):
    # `shardforge run` executes declared_stages(cfg) in order (test_cli's end-to-end run
    # checks its summary's "pipeline" against it); the DAG's tasks are the same, in the same
    # order, with each stage's `after` as upstream: vision models included.
    from airflow_dags.shardforge_daily import build_dag
    from core.config import load_config
    from shardforge.pipeline import declared_stages

    config = tmp_path / "vision.yaml"
    text = Path(airflow_env.config).read_text(encoding="utf-8")
    config.write_text(text.replace("\nmodels:\n", "\nmodels:\n" + VISION_MODELS, 1), encoding="utf-8")
    stages = declared_stages(load_config(config))
    built = build_dag(str(config))
    order = [t for t in built.task_dict if t != "prepare"]
    assert order == [s.name for s in stages]
    assert {"encode_images", "train_vq", "train_net"} <= set(order)
    for stage in stages:
        upstream = built.task_dict[stage.name].upstream_task_ids
        assert upstream == (set(stage.after) or {"prepare"}), stage.name
    assert built.task_dict["train_vq"].upstream_task_ids == {"drift_images"}


def test_operators_call_the_cli_entry_points(dag):
    ingest, encode, train = (dag.task_dict[t] for t in ("ingest", "encode", "train_lm"))
    assert type(ingest).__name__ == "SparkSubmitOperator"
    assert ingest.application == str(ROOT / "shardforge" / "spark_jobs.py")
    assert ingest._conn_id == "spark_default"
    assert ingest.application_args[0] == "ingest" and ingest.application_args[-2:] == [
        "--dt", "{{ ds }}"]
    from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

    assert isinstance(encode, BeamRunPythonPipelineOperator)
    assert encode.py_file == str(ROOT / "pipelines" / "beam" / "encode.py")
    assert encode.runner == "{{ params.beam_runner }}"
    assert set(encode.pipeline_options) == {"config", "lake", "dt"}
    images = dag.task_dict["images"]
    assert isinstance(images, BeamRunPythonPipelineOperator)
    assert images.py_file == str(ROOT / "pipelines" / "beam" / "images.py")
    assert images.runner == "{{ params.beam_runner }}"
    assert type(train).__name__ == "BashOperator" and train.pool == "gpu"
    assert "torchrun --standalone" in train.bash_command
    assert "-m airflow_dags.train_entry lm" in train.bash_command
    for task in dag.tasks:
        assert task.retry_exponential_backoff, task.task_id
    assert "validate_clean_posts" in dag.doc_md


def test_params(dag, airflow_env):
    params = dag.params.dump()
    assert params == {"config": airflow_env.config, "lake": None, "spark_profile": "local",
                      "beam_runner": "DirectRunner", "device": "auto", "nproc_per_node": 1,
                      "models": ["lm", "medusa"]}
    assert all(dag.params.get_param(name).description for name in params)


def test_prepare_ships_what_shardforge_submit_ships(tmp_path):
    conf = tmp_path / "prod.yaml"
    conf.write_text(
        'lake: {root: "hdfs://nn:8020/lake"}\n'
        "spark:\n  master: yarn\n  conf: {spark.sql.shuffle.partitions: \"64\"}\n"
        "  yarn: {queue: etl, env_archive: \"hdfs://nn:8020/envs/env.tar.gz\", driver_memory: 3g,\n"
        "         executor_memory: 8g, executor_cores: 4, num_executors: 10}\n")
    out = tasks.prepare(config=str(conf), lake=None, profile="yarn", run_id="r1",
                        workdir=str(tmp_path / "work"))
    assert out["job_config"] == "prod.yaml" and out["lake"] == "hdfs://nn:8020/lake"
    lines = Path(out["properties"]).read_text().splitlines()
    assert lines == [
        "spark.driver.memory 3g", "spark.executor.cores 4", "spark.executor.instances 10",
        "spark.executor.memory 8g", "spark.executorEnv.PYSPARK_PYTHON ./env/bin/python",
        "spark.sql.shuffle.partitions 64", "spark.yarn.appMasterEnv.PYSPARK_PYTHON ./env/bin/python",
        "spark.yarn.dist.archives hdfs://nn:8020/envs/env.tar.gz#env",
        f"spark.yarn.dist.files {conf}", "spark.yarn.queue etl",
    ]
    assert "shardforge/spark_jobs.py" in __import__("zipfile").ZipFile(out["pyfiles"]).namelist()


def test_unknown_spark_flag_is_a_value_error():
    with pytest.raises(ValueError, match="--supervise has no Spark property"):
        tasks.spark_properties(["spark-submit", "--supervise", "x", "jobs.py"], "jobs.py")


@pytest.fixture(scope="module")
def daily_run(airflow_env, dag):
    _write_sample(airflow_env, DT1, seed=0)
    return _run(dag, airflow_env, DT1)


@pytest.mark.slow
def test_dag_runs_end_to_end(daily_run, airflow_env):
    run, states = daily_run
    assert states == dict.fromkeys(TASKS, "success")
    assert run.state == "success"
    lake = airflow_env.lake
    dataset = lake / "records" / "posts" / "v=1"
    assert (dataset / "_SUCCESS").exists()
    assert len(list(dataset.glob("split=*/part-*.tfrecord"))) == 3
    run_id = tasks.lake_run_id("shardforge_daily", DT1)
    assert (lake / "models" / "lm" / run_id / "ckpt.pt").stat().st_size > 0
    reports = lake / "reports" / run_id
    docs = sorted(p.relative_to(reports).parts[:2] for p in reports.glob("data_docs/*/**/index.html"))
    assert {d[1] for d in docs} == {"clean_posts", "clean_images", "dataset_shards", "dataset_examples"}
    images = lake / "warehouse" / "shardforge.db" / "clean_images" / f"dt={DT1}"
    assert (images / "_SUCCESS").exists()
    assert (lake / "records" / "images" / "v=1" / "_SUCCESS").exists()
    assert "shardforge run" in (reports / "report.html").read_text(encoding="utf-8")
    # The drift gates ran as tasks: the first version of each dataset has no baseline, and
    # its splits are too small here (200 posts, 6 images) to gate: reported, not failed.
    drift = json.loads((reports / "drift-posts.json").read_text(encoding="utf-8"))
    assert drift["passed"] and drift["baseline"] is None and drift["checks"]
    assert not any(c["gated"] for c in drift["checks"])
    assert (reports / "drift-images.json").exists() and (dataset / "statistics.json").exists()
    assert "Drift gates" in (reports / "report.html").read_text(encoding="utf-8")
    summary = json.loads((reports / "summary.json").read_text(encoding="utf-8"))
    stages = {s["stage"]: s for s in summary["stages"]}
    assert stages["train lm"]["details"]["steps"] == 3
    medusa = stages["train medusa"]["details"]  # Medusa-1 on this run's lm checkpoint
    assert medusa["steps"] == 2 and medusa["freeze_backbone"] is True
    assert medusa["init_from"].endswith(f"/models/lm/{run_id}/ckpt.pt")
    assert stages["encode"]["rows_out"] == stages["clean_posts"]["rows_out"] > 0
    assert summary["dt"] == DT1 and all(g["success"] for g in summary["gates"])


@pytest.mark.slow
def test_a_backfilled_date_gets_partitions_of_its_own(daily_run, dag, airflow_env):
    # One more date beside daily_run's is enough to show runs keep to their own dt (each
    # date costs two spark-submit calls: ~75 s of the suite on 2 cores).
    _write_sample(airflow_env, DT2, seed=1, posts=20)
    run, states = _run(dag, airflow_env, DT2, mark_success_pattern=SPARK_ONLY)
    assert run.state == "success" and states["explode_clean"] == "success", states
    assert _partitions(airflow_env.lake, "raw_feeds") == {DT1, DT2}
    assert _partitions(airflow_env.lake, "clean_posts") >= {DT1, DT2}
    assert _partitions(airflow_env.lake, "job_runs") >= {DT1, DT2}  # explode_clean ran


def _documents(lake: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(lake / "warehouse" / "shardforge.db" / "documents")
    return {row["doc_id"]: row for row in table.to_pylist()}


@pytest.mark.slow
def test_an_older_date_backfilled_last_gives_the_documents_of_the_in_order_run(daily_run, dag, airflow_env):
    # DT0 is the day before DT1 and its crawl showed the same page: processed last, it must
    # leave what processing DT0, DT1, DT2 in order leaves: the same documents (same doc_ids:
    # the same texts), now first seen on DT0, and no document twice.
    lake = airflow_env.lake
    before = _documents(lake)
    copy = lake / "raw" / "feeds" / f"dt={DT0}"
    shutil.copytree(lake / "raw" / "feeds" / f"dt={DT1}", copy)
    from_dt1 = {d for d, row in before.items() if row["first_seen_dt"] == DT1}
    run, states = _run(dag, airflow_env, DT0, mark_success_pattern=SPARK_ONLY + "|images")
    assert run.state == "success" and states["explode_clean"] == "success", states
    after = _documents(lake)
    assert set(after) == set(before) and len(from_dt1) > 0
    assert {d for d, row in after.items() if row["first_seen_dt"] == DT0} == from_dt1
    assert all(after[d]["times_seen"] == before[d]["times_seen"] + 1 for d in from_dt1)
    assert all(after[d]["text"] == before[d]["text"] for d in after)


@pytest.mark.slow
def test_bad_topic_stops_the_dag_at_the_clean_posts_gate(daily_run, dag, airflow_env):
    import pyarrow.parquet as pq

    table_dir = airflow_env.lake / "warehouse" / "shardforge.db" / "clean_posts"
    bad = table_dir / f"dt={BAD_DT}"
    shutil.copytree(table_dir / f"dt={DT1}", bad)
    part = sorted(bad.glob("*.parquet"))[0]
    rows = pq.read_table(part)
    topics = rows["topic"].to_pylist()
    topics[0] = "gossip"
    pq.write_table(rows.set_column(rows.schema.get_field_index("topic"), "topic",
                                   __import__("pyarrow").array(topics)), part)

    run, states = _run(dag, airflow_env, BAD_DT, mark_success_pattern="ingest|explode_clean|images|validate_clean_images|encode_images")
    assert run.state == "failed"
    assert states["validate_clean_posts"] == "failed"
    assert {states[t] for t in ("encode", "validate_dataset", "train_lm", "train_medusa",
                                "report")} == {
        "upstream_failed"}
    # The reason the task failed with: the expectation, the column and the bad value.
    with pytest.raises(tasks.GateFailed) as failed:
        tasks.run_gate("clean", config=airflow_env.config, lake=str(airflow_env.lake),
                       dt=BAD_DT, run_id="gate-check")
    message = str(failed.value)
    assert "ExpectColumnValuesToBeInSet" in message or "in_set" in message
    assert "topic" in message and "gossip" in message
