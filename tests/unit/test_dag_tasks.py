"""The DAG's worker-side tasks on a lake that is not a local folder (memory:// stands in for hdfs://)."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_dags import tasks
from core.lake import Lake

DT = "2026-11-02"


def _memory_lake(tmp_path, topic: str) -> tuple[str, str]:
    """A config file and a memory:// lake holding one clean_posts partition."""
    root = f"memory://lake-{uuid.uuid4().hex}"
    lake = Lake(root)
    folder = lake.fs_path(lake.table("shardforge", "clean_posts", DT))
    lake.fs.makedirs(folder, exist_ok=True)
    rows = pa.table({"doc_id": ["a1", "b2"], "text": ["a post long enough", "another post here"],
                     "length": [18, 17], "lang": ["en", "en"], "topic": ["other", topic]})
    with lake.fs.open(f"{folder}/part-00000.parquet", "wb") as handle:
        pq.write_table(rows, handle)
    config = tmp_path / "conf.yaml"
    config.write_text(f"lake: {{root: '{root}'}}\n", encoding="utf-8")
    return str(config), root


def test_a_gate_runs_on_a_non_local_lake(tmp_path):
    config, root = _memory_lake(tmp_path, topic="other")
    results = tasks.run_gate("clean", config=config, lake=root, dt=DT, run_id="r1")
    assert [r["suite"] for r in results] == ["clean_posts"]
    assert results[0]["success"] and results[0]["evaluated"] == 6
    assert results[0]["docs_index"] is None  # GE renders Data Docs to local folders only


def test_a_failed_gate_on_a_non_local_lake_names_the_column(tmp_path):
    config, root = _memory_lake(tmp_path, topic="gossip")
    with pytest.raises(tasks.GateFailed, match="topic"):
        tasks.run_gate("clean", config=config, lake=root, dt=DT, run_id="r1")
