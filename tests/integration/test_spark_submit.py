"""``shardforge submit spark <job>``: the exact spark-submit commands, and a real local[2] run."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core.config import load_config
from shardforge.submit import ENTRY_SCRIPT, build_pyfiles_zip, submit_command

pytestmark = pytest.mark.integration

YARN_YAML = """
lake: {root: "hdfs://nn:8020/lake"}
spark:
  master: yarn
  conf: {spark.sql.shuffle.partitions: "64"}
  yarn: {queue: etl, env_archive: "hdfs://nn:8020/envs/shardforge-env.tar.gz", driver_memory: 3g,
         executor_memory: 8g, executor_cores: 4, num_executors: 10}
"""


def test_yarn_profile_builds_the_exact_command(tmp_path):
    conf = tmp_path / "prod.yaml"
    conf.write_text(YARN_YAML)
    cfg = load_config(conf)
    command = submit_command(cfg, job="explode_clean", config_path=conf, pyfiles="/tmp/sf.zip",
                             profile="yarn", dts=["2026-11-01", "2026-11-02"], spark_submit="spark-submit")
    assert command == [
        "spark-submit", "--master", "yarn", "--deploy-mode", "cluster", "--name", "shardforge-explode_clean",
        "--queue", "etl", "--driver-memory", "3g", "--executor-memory", "8g", "--executor-cores", "4",
        "--num-executors", "10", "--archives", "hdfs://nn:8020/envs/shardforge-env.tar.gz#env",
        "--files", str(conf),
        "--conf", "spark.yarn.appMasterEnv.PYSPARK_PYTHON=./env/bin/python",
        "--conf", "spark.executorEnv.PYSPARK_PYTHON=./env/bin/python",
        "--conf", "spark.sql.shuffle.partitions=64",
        "--py-files", "/tmp/sf.zip", str(ENTRY_SCRIPT), "explode_clean", "--config", "prod.yaml",
        "--lake", "hdfs://nn:8020/lake", "--dt", "2026-11-01", "--dt", "2026-11-02",
    ]


def test_local_profile_uses_config_master_and_this_python(tmp_path):
    cfg = load_config(lake_root=str(tmp_path))
    command = submit_command(cfg, job="ingest", config_path="/c.yaml", pyfiles="/z.zip")
    assert command[1:5] == ["--master", "local[2]", "--name", "shardforge-ingest"]
    assert f"spark.pyspark.python={sys.executable}" in command
    assert command[-8:] == ["--py-files", "/z.zip", str(ENTRY_SCRIPT), "ingest", "--config", "/c.yaml",
                            "--lake", cfg.lake.root]
    assert "--deploy-mode" not in command and Path(command[0]).name == "spark-submit"


@pytest.mark.parametrize(("kwargs", "message"), [({"job": "train"}, "unknown Spark job 'train'"),
                                                  ({"job": "ingest", "profile": "k8s"}, "unknown submit profile")])
def test_bad_job_or_profile_is_a_value_error(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        submit_command(load_config(lake_root=str(tmp_path)), config_path="c", pyfiles="z", **kwargs)


def test_pyfiles_zip_holds_the_packages_and_sql(tmp_path):
    first = build_pyfiles_zip(tmp_path / "a.zip").read_bytes()
    names = zipfile.ZipFile(tmp_path / "a.zip").namelist()
    assert "shardforge/spark_jobs.py" in names and "core/config.py" in names
    assert "pipelines/spark/sql/explode_paragraphs.sql" in names
    assert not any("__pycache__" in n for n in names)
    assert build_pyfiles_zip(tmp_path / "b.zip").read_bytes() == first  # reproducible


@pytest.mark.slow
def test_submit_runs_a_real_spark_submit_locally(tmp_path):
    lake = tmp_path / "lake"
    feeds = lake / "raw" / "feeds" / "dt=2026-10-05"
    articles = lake / "raw" / "articles" / "dt=2026-10-05"
    feeds.mkdir(parents=True)
    articles.mkdir(parents=True)
    (feeds / "feed-a-0000.txt").write_text("banner\n\nheading\nSpark 与 Hive 的 LATERAL VIEW 用法详解\n第二篇文章的摘要\n")
    (articles / "articles-0000.jsonl").write_text(
        json.dumps({"id": "a-1", "title": "t", "tags": ["x"], "sections": []}) + "\n{\"id\": \"a-2\", \"ti\n")
    result = subprocess.run(
        [sys.executable, "-m", "shardforge.cli", "submit", "spark", "ingest", "--lake", str(lake),
         "--dt", "2026-10-05"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[0].endswith("spark-submit") and "--py-files" in lines[0]
    report = json.loads(lines[-1])
    counts = {s["stage"]: (s["rows_in"], s["rows_out"], s["quarantined"]) for s in report["stages"]}
    assert counts == {"ingest": (1, 1, 0), "ingest articles": (2, 1, 1)}
    assert list((lake / "warehouse" / "shardforge.db" / "raw_articles" / "dt=2026-10-05").glob("*.parquet"))
