"""Spark settings sized from the input, and the submit commands and job configs that carry them."""

from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config import load_config
from core.lake import Lake
from shardforge.engine_sizing import (
    DEFAULT_ROW_BYTES,
    InputSize,
    Resources,
    format_mib,
    job_inputs,
    measure,
    parse_mib,
    size_spark,
)
from shardforge.submit import effective_config, submit_command, write_config

MiB, GiB = 1024 * 1024, 1024 * 1024 * 1024


@pytest.mark.parametrize(("text", "mib"), [("512m", 512), ("2g", 2048), ("1G", 1024), ("1t", 1024 ** 2),
                                           ("2048k", 2)])
def test_parse_mib(text, mib):
    assert parse_mib(text) == mib


@pytest.mark.parametrize("bad", ["512", "2gb", "0g", "-1m", "m"])
def test_parse_mib_names_the_bad_size(bad):
    with pytest.raises(ValueError, match=f"JVM memory size like 512m or 2g, got '{bad}'"):
        parse_mib(bad)


@pytest.mark.parametrize(("mib", "text"), [(512, "512m"), (1024, "1g"), (1536, "1536m"), (4096, "4g")])
def test_format_mib(mib, text):
    assert format_mib(mib) == text


def _text(nbytes: int) -> InputSize:
    return InputSize(nbytes, nbytes, None, 10)


FOUR_CORES = Resources(executors=2, executor_cores=2, max_executor_mib=16 * 1024)


@pytest.mark.parametrize(("work", "partitions", "split_mib", "heap"), [
    (100 * 1024, 8, 1, "512m"),  # a tiny input: 2 tasks per core, Spark's floor heap
    (1 * GiB, 8, 128, "1792m"),  # 8 x 128 MiB; 300 + 2 x 128 x 3 / 0.6 = 1580 -> 1792
    (100 * GiB, 800, 128, "1792m"),  # a task's share stays 128 MiB: so does the heap
    (int(1.5 * GiB) + 1, 16, 97, "1280m"),  # 13 partitions round up to 16: 4 waves of 4 cores
])
def test_partitions_split_and_heap_follow_the_input(work, partitions, split_mib, heap):
    sized = size_spark(_text(work), FOUR_CORES)
    assert sized.shuffle_partitions == partitions
    assert sized.split_bytes == split_mib * MiB
    assert format_mib(sized.executor_mib) == heap
    assert sized.conf()["spark.sql.shuffle.partitions"] == str(partitions)
    assert sized.conf()["spark.sql.adaptive.advisoryPartitionSizeInBytes"] == str(split_mib * MiB)


def test_more_input_never_gets_fewer_partitions_or_less_memory():
    sizes = [size_spark(_text(n), FOUR_CORES) for n in (10**3, 10**6, 10**8, 10**9, 10**10, 10**12)]
    for small, big in zip(sizes, sizes[1:], strict=False):
        assert big.shuffle_partitions >= small.shuffle_partitions
        assert big.executor_mib >= small.executor_mib and big.overhead_mib >= small.overhead_mib
    assert sizes[-1].shuffle_partitions == 7452  # 10^12 B / 128 MiB, rounded up to 4 cores


def test_the_heap_never_asks_for_more_than_the_cap():
    one_worker = Resources(executors=1, executor_cores=4, max_executor_mib=512)
    assert size_spark(_text(50 * GiB), one_worker).executor_mib == 512


def test_arrow_batches_hold_fewer_rows_of_wide_rows():
    posts = InputSize(10 * GiB, 10 * GiB, 10 * GiB // 250, 100)  # 250 B rows
    images = InputSize(10 * GiB, 10 * GiB, 10 * GiB // 3100, 100)  # a 32x32x3 image and more
    narrow, wide = size_spark(posts, FOUR_CORES), size_spark(images, FOUR_CORES)
    assert narrow.arrow_bytes == wide.arrow_bytes == 32 * MiB  # 16 MiB target, capped at twice
    assert narrow.arrow_records == 50_000 and wide.arrow_records == 6_000
    text = size_spark(_text(10 * GiB), FOUR_CORES)
    assert text.input.row_bytes == DEFAULT_ROW_BYTES and text.arrow_records == 50_000


@pytest.mark.parametrize(("resources", "message"), [
    (Resources(0, 2, 1024), "at least one core"), (Resources(2, 0, 1024), "at least one core")])
def test_no_cores_is_a_value_error(resources, message):
    with pytest.raises(ValueError, match=message):
        size_spark(_text(1), resources)


def test_measure_reads_parquet_footers_and_skips_hidden_files(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    folder = lake.local_path(lake.table("shardforge", "documents"))
    (folder / "first_seen_dt=2026-11-01").mkdir(parents=True)
    for i in range(3):
        pq.write_table(pa.table({"text": [f"post {i}-{j} " * 10 for j in range(100)]}),
                       folder / "first_seen_dt=2026-11-01" / f"part-{i}.parquet")
    (folder / "_SNAPSHOT.json").write_text("{}")
    (folder / "_staging-dt=2026-11-02-x").mkdir()
    (folder / "_staging-dt=2026-11-02-x" / "part-9.parquet").write_bytes(b"not parquet")
    size = measure(lake, [lake.table("shardforge", "documents")])
    assert size.files == 3 and size.rows == 300
    assert size.uncompressed_bytes > 300 * 100 and size.bytes == sum(
        p.stat().st_size for p in folder.glob("first_seen_dt=*/*.parquet"))


def test_job_inputs_follow_the_data_flow(tmp_path):
    cfg = load_config(lake_root=str(tmp_path / "lake"))
    lake = Lake(cfg.lake.root)
    raw = lake.local_path(lake.raw("feeds", "2026-11-01"))
    raw.mkdir(parents=True)
    (raw / "feed-0.txt").write_text("banner\n\nheading\npost one\n")
    assert job_inputs(cfg, lake, "ingest") == [lake.raw("feeds", "2026-11-01")]
    assert job_inputs(cfg, lake, "explode_clean") == [lake.raw("feeds", "2026-11-01")]  # not ingested
    ingested = lake.local_path(lake.table("shardforge", "raw_feeds", "2026-11-01"))
    ingested.mkdir(parents=True)
    assert job_inputs(cfg, lake, "explode_clean") == [lake.table("shardforge", "raw_feeds", "2026-11-01")]
    assert job_inputs(cfg, lake, "encode") == []  # no documents yet
    assert measure(lake, job_inputs(cfg, lake, "ingest")) == InputSize(25, 25, None, 1)
    with pytest.raises(ValueError, match="no inputs known for Spark job 'train'"):
        job_inputs(cfg, lake, "train")


STANDALONE = """
spark:
  conf: {spark.sql.shuffle.partitions: "64"}
  standalone: {master: "spark://127.0.0.1:7177", worker_memory: 768m, executor_cores: 1}
"""


def test_standalone_command_carries_the_sized_session(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(STANDALONE)
    cfg = load_config(path, lake_root=str(tmp_path / "lake"))
    sized = size_spark(_text(4 * GiB), Resources(2, 1, 768))
    command = submit_command(cfg, job="explode_clean", config_path="/job.yaml", pyfiles="/z.zip",
                             profile="standalone", sizing=sized, spark_submit="spark-submit")
    assert command[:13] == ["spark-submit", "--master", "spark://127.0.0.1:7177", "--deploy-mode", "client",
                            "--name", "shardforge-explode_clean", "--driver-memory", "1g",
                            "--executor-memory", "768m", "--executor-cores", "1"]  # heap capped
    conf = dict(command[i + 1].split("=", 1) for i, flag in enumerate(command) if flag == "--conf")
    assert conf["spark.sql.shuffle.partitions"] == "64"  # explicit wins over the sized 32
    assert conf["spark.sql.adaptive.coalescePartitions.parallelismFirst"] == "false"
    assert conf["spark.sql.execution.arrow.maxRecordsPerBatch"] == str(sized.arrow_records)
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.pyspark.python"] == sys.executable
    assert "-Dderby.system.home=" in conf["spark.driver.extraJavaOptions"]  # JVM options apply
    assert conf["spark.sql.warehouse.dir"] == Lake(str(tmp_path / "lake")).warehouse()
    assert "spark.sql.files.minPartitionNum" in conf and "spark.executor.memoryOverhead" not in conf
    assert command[-8:] == ["--py-files", "/z.zip", command[-6], "explode_clean", "--config", "/job.yaml",
                            "--lake", cfg.lake.root]


def test_yarn_sizes_executor_memory_and_overhead_unless_set(tmp_path):
    cfg = load_config(lake_root=str(tmp_path / "lake"))
    sized = size_spark(_text(100 * GiB), Resources(4, 2, 16 * 1024))
    command = submit_command(cfg, job="encode", config_path="/c.yaml", pyfiles="/z.zip", profile="yarn",
                             sizing=sized, spark_submit="spark-submit")
    assert command[command.index("--executor-memory") + 1] == "1792m"
    assert f"spark.executor.memoryOverhead={sized.overhead_mib}m" in command
    assert "spark.sql.shuffle.partitions=800" in command
    unsized = submit_command(cfg, job="encode", config_path="/c.yaml", pyfiles="/z.zip", profile="yarn")
    assert unsized[unsized.index("--executor-memory") + 1] == "4g"
    assert not any(flag.startswith("spark.sql.adaptive") for flag in unsized)
    explicit = cfg.model_copy(update={"spark": cfg.spark.model_copy(update={
        "yarn": cfg.spark.yarn.model_copy(update={"executor_memory": "8g"})})})
    command = submit_command(explicit, job="encode", config_path="/c.yaml", pyfiles="/z.zip",
                             profile="yarn", sizing=sized)
    assert command[command.index("--executor-memory") + 1] == "8g"


def test_the_job_config_reads_back_as_the_effective_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(STANDALONE)  # no feature_spec: the embedded one, made absolute
    cfg = load_config(path, lake_root=str(tmp_path / "lake"))
    sized = size_spark(_text(GiB), Resources(2, 1, 768))
    effective = effective_config(cfg, "standalone", sized)
    assert effective.spark.master == "spark://127.0.0.1:7177"
    assert effective.spark.standalone.executor_memory == "768m"
    assert effective.spark.conf["spark.sql.shuffle.partitions"] == "64"
    assert effective.spark.conf["spark.sql.adaptive.enabled"] == "true"
    (tmp_path / "job").mkdir()
    loaded = load_config(write_config(effective, tmp_path / "job" / "c.yaml"))
    assert loaded.model_dump() == effective.model_dump()
    assert loaded.feature_spec == cfg.feature_spec and loaded.feature_spec.startswith("/")
    assert effective_config(cfg, "local") is cfg
