"""Where an encode's time goes: CPU by process, Spark's stages, the plan's floor, the Python steps.

Used by ``benchmarks/encode.py`` (``--profile``); imported as ``benchmarks.encode_profile``.

- :class:`CpuMeter`: CPU seconds of the benchmark's process tree, split into the driver, Spark's
  JVM and the workers (Python workers of Spark, Beam's worker processes).
- :func:`spark_skeleton`: the Spark encode's plan (analyze pass, ``mapInArrow`` to payload
  rows, shuffle by gid, sort, ``mapInArrow`` to the writer) with trivial Python steps: what
  moving the rows that way costs, before any feature work.
- :func:`spark_stages`: task time, JVM CPU and shuffle of the last stages (Spark's REST API).
- :func:`python_steps`: CPU µs per row of each Python step of an encode task, in process.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
import time
import urllib.request

__all__ = ["CpuMeter", "python_steps", "spark_skeleton", "spark_stages"]


def _snapshot() -> dict[tuple[int, int], tuple[str, float]]:
    """``(pid, start time) -> (name, own CPU s)`` of this process and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    seen: dict[int, tuple[int, str, float]] = {}
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
        seen[int(entry)] = (int(fields[19]), name, (int(fields[11]) + int(fields[12])) / tick)
    out, todo = {}, [os.getpid()]
    while todo:
        pid = todo.pop()
        if pid in seen:
            start, name, cpu = seen[pid]
            out[(pid, start)] = (name, cpu)
        todo += children.get(pid, [])
    return out


class CpuMeter:
    """CPU seconds this process tree spends inside ``with``, by part: ``driver`` (this process,
    this sampler included), ``jvm`` (Spark's JVM), ``workers`` (Python workers of Spark and Beam).

    Samples ``/proc`` every ``interval`` seconds and keeps each process's last reading: a
    parent's count of its reaped children would miss Spark's workers, whose daemon ignores
    SIGCHLD (the kernel then drops their usage). A process that lives less than
    ``interval`` is missed, and one that exits loses at most ``interval`` of its time.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.parts = interval, {}

    def __enter__(self) -> CpuMeter:
        self._first = _snapshot()
        self._last = dict(self._first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._last.update(_snapshot())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(_snapshot())
        self.parts = {"driver": 0.0, "jvm": 0.0, "workers": 0.0}
        for key, (name, cpu) in self._last.items():
            spent = cpu - self._first.get(key, (name, 0.0))[1]
            part = "driver" if key[0] == os.getpid() else "jvm" if name == "java" else "workers"
            self.parts[part] += spent


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
        ("route: all, no statistics", lambda b, _: route(b, spec, artifacts, plan)),
        ("write: frame records (compiled)", lambda _, e: frame_batch(*binary_layout(e))),
    ]
    if "statistics" in inspect.signature(route).parameters:  # the dataset statistics (issue 19)
        from features.statistics import SpecStatistics

        counted = SpecStatistics(spec, list(shards))
        steps.insert(6, ("route: all + statistics (as the engines)",
                         lambda b, _: route(b, spec, artifacts, plan, counted)))
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
