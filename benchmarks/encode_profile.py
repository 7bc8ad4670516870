"""Where an encode's time goes: CPU by process, Spark's stages, the plan's floor, the Python steps.

Used by ``benchmarks/encode.py`` (``--profile``); imported as ``benchmarks.encode_profile``.

- :func:`tree_cpu`: CPU seconds of the benchmark's process tree, split into the driver, Spark's
  JVM and the workers (Python workers of Spark, Beam's worker processes).
- :func:`spark_skeleton`: the Spark encode's plan (analyze pass, ``mapInArrow`` to payload
  rows, shuffle by gid, sort, ``mapInArrow`` to the writer) with trivial Python steps: what
  moving the rows that way costs, before any feature work.
- :func:`spark_stages`: task time, JVM CPU and shuffle of the last stages (Spark's REST API).
- :func:`python_steps`: CPU µs per row of each Python step of an encode task, in process.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

__all__ = ["python_steps", "spark_skeleton", "spark_stages", "tree_cpu"]


def tree_cpu() -> dict[str, float]:
    """CPU seconds of this process tree by part: ``driver`` (this process), ``jvm`` (Spark's
    JVM) and ``workers`` (every other process, Python workers of Spark and Beam, and the
    children this process reaped)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, tuple[str, float, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                name, fields = f.read().split(" (", 1)[1].rsplit(")", 1)
        except OSError:
            continue  # exited meanwhile
        fields = fields.split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        own = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        reaped = (int(fields[13]) + int(fields[14])) / tick  # of waited-for children
        times[int(entry)] = (name, own, reaped)
    parts = {"driver": 0.0, "jvm": 0.0, "workers": 0.0}
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        name, own, reaped = times.get(pid, ("", 0.0, 0.0))
        parts["driver" if pid == os.getpid() else "jvm" if name == "java" else "workers"] += own
        parts["workers"] += reaped  # what a JVM or a driver reaps are Python workers
        todo += children.get(pid, [])
    return parts


def _count_rows(batches):
    import pyarrow as pa

    yield pa.RecordBatch.from_pydict({"rows": [sum(b.num_rows for b in batches)]})


def _stand_in_payload(batches):
    """Payload rows shaped like route's, without feature work: the text's bytes stand in for
    the Example (~210 bytes, the size of a post's), a cheap gid for the key's hash."""
    import pyarrow as pa

    for b in batches:
        gid = pa.array(b.column("length").to_numpy() % 11, pa.int32())
        yield pa.RecordBatch.from_arrays([gid, b.column("doc_id"), b.column("text").cast(pa.binary())],
                                         names=["gid", "key", "payload"])


def spark_skeleton(spark, inputs: list[str], spec, partitions: int) -> None:
    """The encode's Spark plan with trivial Python steps: what moving the rows that way costs.

    An analyze-shaped pass (the analysis columns through ``mapInArrow``, one row out per
    partition), then the encode's shape: ``mapInArrow`` to payload rows, ``repartition`` by
    gid, ``sortWithinPartitions(gid, key, payload)``, ``mapInArrow`` to one row per partition.
    """
    from pipelines.encode.shards import analysis_columns, input_columns

    df = spark.read.parquet(*inputs)
    df.select(*analysis_columns(spec)).mapInArrow(_count_rows, "rows bigint").collect()
    payload = df.select(*input_columns(spec)).mapInArrow(
        _stand_in_payload, "gid int, key string, payload binary")
    payload.repartition(partitions, "gid").sortWithinPartitions("gid", "key", "payload") \
        .mapInArrow(_count_rows, "rows bigint").collect()


def spark_stages(spark) -> None:
    """The last stages (the skeleton's, then the encode's): task time, JVM CPU, shuffle (REST API)."""
    url = f"{spark.sparkContext.uiWebUrl}/api/v1/applications/{spark.sparkContext.applicationId}"
    with urllib.request.urlopen(f"{url}/stages?status=complete") as response:
        stages = sorted(json.load(response), key=lambda s: s["stageId"])
    print("  spark stages of the last encode and skeleton (task time sums over tasks; JVM CPU "
          "excludes the Python workers):")
    for s in stages[-8:]:
        print(f"    stage {s['stageId']:>3} {s['name'][:44]:<44} {s['numTasks']:>3} tasks  "
              f"task {s['executorRunTime'] / 1e3:6.1f} s  JVM CPU {s['executorCpuTime'] / 1e9:6.1f} s  "
              f"in {s['inputBytes'] / 1e6:6.1f} MB  shuffle w {s['shuffleWriteBytes'] / 1e6:6.1f} "
              f"r {s['shuffleReadBytes'] / 1e6:6.1f} MB")


def python_steps(batches, spec, *, splits: dict, shards: dict, repeat: int) -> list[tuple]:
    """CPU µs per row of each Python step of an encode task over ``batches``, in process.

    Returns:
        ``(step, median, min, max)`` per step, over ``repeat`` runs.
    """
    import numpy as np

    from features.analyzers import SpecAnalyzer, analyze
    from features.examples import binary_layout
    from features.transform import encode, transform
    from pipelines.encode.shards import ShardPlan, route, train_rows
    from records.shard_batches import frame_batch

    rows = sum(b.num_rows for b in batches)
    artifacts = analyze(spec, batches, splits=splits)
    analyzer, plan = SpecAnalyzer(spec), ShardPlan(dict(splits), dict(shards))
    encoded = [encode(b, spec, artifacts).payloads for b in batches]
    steps = [
        ("analyze: train split (sha256 of keys)", lambda b, _: train_rows(b, spec.key, splits)),
        ("analyze: analyzers", lambda b, _: analyzer.add_batch(analyzer.create(), b)),
        ("route: transform", lambda b, _: transform(b, spec, artifacts)),
        ("route: transform + serialize", lambda b, _: encode(b, spec, artifacts)),
        ("route: gids (sha256 of keys)", lambda b, _: plan.gids(b.column(spec.key))),
        ("route: all (as the engines call it)", lambda b, _: route(b, spec, artifacts, plan)),
        ("write: frame records (compiled)", lambda _, e: frame_batch(*binary_layout(e))),
    ]
    out = []
    for what, fn in steps:
        fn(batches[0], encoded[0])  # warm-up
        runs = []
        for _ in range(repeat):
            cpu = time.thread_time()
            for batch, payloads in zip(batches, encoded, strict=True):
                fn(batch, payloads)
            runs.append((time.thread_time() - cpu) / rows * 1e6)
        out.append((what, float(np.median(runs)), min(runs), max(runs)))
    return out
