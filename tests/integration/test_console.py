"""What a person sees on the console: our own lines, not the engines' logs, and progress
inside long Spark stages."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from shardforge.spark_progress import stage_lines

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SHARDFORGE_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", "shardforge.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_engine_logs_stay_off_the_console_unless_verbose(tmp_path):
    lake = str(tmp_path / "lake")
    assert _cli("sample", "--lake", lake, "--posts", "40", "--images", "6", cwd=tmp_path).returncode == 0
    quiet = _cli("ingest", "--lake", lake, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "ingest:" in quiet.stderr
    noise = [line for line in quiet.stderr.splitlines()
             if " WARN " in line or "log4j" in line or " INFO " in line]
    assert noise == []
    loud = _cli("-v", "ingest", "--lake", lake, cwd=tmp_path)
    assert loud.returncode == 0 and "log4j" in loud.stderr  # Spark's own startup lines are back


def test_stage_lines_name_each_active_stage():
    stages = {3: SimpleNamespace(name="insertInto at NativeMethodAccessorImpl.java:0",
                                 numTasks=40, numCompletedTasks=12, numActiveTasks=2),
              5: None}  # finished between the two calls
    tracker = SimpleNamespace(getActiveStageIds=lambda: [5, 3], getStageInfo=stages.get)
    assert stage_lines(tracker) == ["spark stage 3 (insertInto): 12/40 tasks, 2 running"]


def test_stage_lines_see_a_running_spark_job(spark):
    job = threading.Thread(target=lambda: spark.range(4, numPartitions=4).foreach(
        lambda _: time.sleep(3)))
    job.start()
    tracker, seen = spark.sparkContext.statusTracker(), []
    deadline = time.time() + 30
    while not seen and time.time() < deadline:
        seen = stage_lines(tracker)
        time.sleep(0.2)
    job.join()
    assert seen and seen[0].startswith("spark stage ") and "/4 tasks" in seen[0]
