"""Shared fixtures: one SparkSession (and its lake) for the whole test session.

Spark's JVM and Derby metastore take ~20 s to start on 2 cores, so every Spark test
shares one session rooted in one temporary lake; tests use their own dt partitions
or tables so they stay independent.
"""

from __future__ import annotations

import pytest
import torch

# DataLoader workers start from a forkserver: this process also hosts a Spark JVM gateway,
# Airflow and Great Expectations threads, and fork() of a multi-threaded process can leave a
# child blocked on a lock whose owner thread does not exist in it (seen as a hung suite).
torch.multiprocessing.set_start_method("forkserver", force=True)
torch.multiprocessing.set_forkserver_preload(["torch", "records.reader"])

# core.config (pydantic) is imported inside the fixtures: the GPU host that runs
# `pytest -m cuda tests/models tests/records` has torch and numpy but no pydantic.


@pytest.fixture(scope="session")
def spark_lake(tmp_path_factory):
    from core.lake import Lake

    return Lake(str(tmp_path_factory.mktemp("spark-lake")))


@pytest.fixture(scope="session")
def spark_config(spark_lake):
    from core.config import load_config

    return load_config(lake_root=spark_lake.root)


@pytest.fixture(scope="session")
def spark(spark_lake, spark_config):
    from pipelines.spark.session import build_session

    # Spark's local driver heap defaults to 1g; the suite's one session accumulates plans,
    # metastore state and broadcast tables over ~400 Spark tests, and near the end 1g once
    # ran out ("Not enough memory to build and broadcast the table"): give it room.
    spark_cfg = spark_config.spark.model_copy(
        update={"conf": {"spark.driver.memory": "3g", **spark_config.spark.conf}})
    session = build_session(spark_cfg, spark_lake)
    yield session
    session.stop()


def pytest_collection_modifyitems(config, items):
    """GPU-only tests (marker ``cuda``) run on a CUDA host (``pytest -m cuda``), not on CPUs.

    They are deselected, not skipped, where no GPU exists: the CPU suite has nothing to
    say about them, and the device runs in BENCHMARKS.md record their results.
    """
    if torch.cuda.is_available():
        return
    gpu_only = [item for item in items if item.get_closest_marker("cuda")]
    if gpu_only:
        config.hook.pytest_deselected(items=gpu_only)
        items[:] = [item for item in items if not item.get_closest_marker("cuda")]


@pytest.fixture(scope="session")
def write_raw(spark_lake):
    """``write_raw(corpus, dt, {name: bytes})`` drops files into ``raw/<corpus>/dt=<dt>/``."""
    def write(corpus: str, dt: str, files: dict[str, bytes]) -> None:
        folder = spark_lake.local_path(spark_lake.raw(corpus, dt))
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)

    return write
