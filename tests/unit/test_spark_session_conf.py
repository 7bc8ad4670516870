"""session_conf: the Spark settings shardforge adds, without starting a JVM."""

from __future__ import annotations

import os

import pytest

from core.config import SparkConfig
from core.lake import Lake
from pipelines.spark.session import local_cores, session_conf


@pytest.mark.parametrize(("master", "cores"), [
    ("local", 1), ("local[2]", 2), ("local[16]", 16), ("local[3, 2]", 3),
    ("local[*]", os.cpu_count()), ("yarn", None), ("local-cluster[2,1,1024]", None),
    ("spark://host:7077", None),
])
def test_local_cores_reads_the_thread_count_of_local_masters_only(master, cores):
    assert local_cores(master) == cores


def test_local_sessions_split_files_into_four_tasks_per_core(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    conf = session_conf(SparkConfig(master="local[2]"), lake)
    assert conf["spark.sql.files.minPartitionNum"] == "8"
    assert conf["spark.pyspark.python"]


def test_cluster_sessions_leave_the_split_count_to_spark(tmp_path):
    conf = session_conf(SparkConfig(master="yarn"), Lake(str(tmp_path / "lake")))
    assert "spark.sql.files.minPartitionNum" not in conf
    assert "spark.pyspark.python" not in conf


def test_configured_conf_wins_over_the_defaults(tmp_path):
    cfg = SparkConfig(master="local[2]", conf={"spark.sql.files.minPartitionNum": "3"})
    assert session_conf(cfg, Lake(str(tmp_path / "lake")))["spark.sql.files.minPartitionNum"] == "3"


@pytest.mark.parametrize(("master", "partitions"), [("local[2]", "4"), ("local[3]", "6"), ("yarn", None),
                                                    ("spark://127.0.0.1:7077", None)])
def test_local_sessions_shuffle_into_two_partitions_per_core(tmp_path, master, partitions):
    conf = session_conf(SparkConfig(master=master), Lake(str(tmp_path / "lake")))
    assert conf.get("spark.sql.shuffle.partitions") == partitions  # clusters: sized by submit


def test_a_standalone_driver_runs_here_with_the_quiet_console(tmp_path, monkeypatch):
    monkeypatch.delenv("SHARDFORGE_VERBOSE", raising=False)
    options = session_conf(SparkConfig(master="spark://127.0.0.1:7077"),
                           Lake(str(tmp_path / "lake")))["spark.driver.extraJavaOptions"]
    assert "log4j2-quiet.properties" in options and "-Dderby.system.home=" in options
    yarn = session_conf(SparkConfig(master="yarn"), Lake(str(tmp_path / "lake")))
    assert "log4j2" not in yarn["spark.driver.extraJavaOptions"]  # its driver logs to YARN
